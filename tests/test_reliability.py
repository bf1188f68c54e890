"""Numerically hard data, interruption, and nothing-changed guarantees."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from conftest import quiet_fit

import lmmbayes as lb


def grouped(rng, sizes, sd_group, sigma, intercept=0.0, slope=0.0, scale=1.0):
    g = np.repeat(np.arange(len(sizes)), sizes)
    x = rng.normal(size=g.size)
    r = rng.normal(0, sd_group, len(sizes)) if sd_group > 0 else np.zeros(len(sizes))
    y = intercept + slope * x + r[g] + rng.normal(0, sigma, g.size)
    return pd.DataFrame({"y": y * scale, "x": x, "g": [f"g{k:04d}" for k in g]})


def test_group_variance_at_the_boundary():
    """Dyestuff2 shape: 6 batches x 5, true between-batch variance 0 (lme4 estimates 0)."""
    data = grouped(np.random.default_rng(1), [5] * 6, sd_group=0.0, sigma=3.7, intercept=5.6)
    fit = quiet_fit("y ~ 1 + (1 | g)", data, chains=2, draws=500, tune=500, seed=1, target_accept=0.95)
    est = fit.posterior_summary()
    # the posterior piles up near 0 and sits well below the residual sd
    assert est.loc["sd_g__Intercept", "Estimate"] < 0.5 * est.loc["sigma", "Estimate"]
    assert est.loc["sigma", "Q2.5"] < 3.7 < est.loc["sigma", "Q97.5"]
    assert np.isfinite(est["Estimate"]).all()
    assert fit.sampler_report.divergences / 1000 < 0.05


def test_groups_of_one_or_two_rows():
    rng = np.random.default_rng(2)
    data = grouped(rng, rng.integers(1, 3, size=60), sd_group=1.0, sigma=0.5, slope=1.0)
    fit = quiet_fit("y ~ x + (1 | g)", data, chains=2, draws=300, tune=300, seed=2)
    table = fit.posterior_summary()
    assert table.loc["b_x", "Q2.5"] < 1.0 < table.loc["b_x", "Q97.5"]
    assert fit.ranef()["g"].shape[0] == 60 and np.isfinite(fit.draws().to_numpy()).all()


@pytest.mark.parametrize("scale", [1e6, 1e-6])
def test_extreme_response_scales(scale):
    """brms's data-scaled defaults make the same model work at any unit."""
    data = grouped(np.random.default_rng(3), [20] * 8, sd_group=1.0, sigma=0.5, intercept=3.0,
                   slope=2.0, scale=scale)
    fit = quiet_fit("y ~ x + (1 | g)", data, chains=2, draws=300, tune=300, seed=3)
    table = fit.posterior_summary()
    lo, hi = table.loc["b_x", ["Q2.5", "Q97.5"]] / scale
    assert lo < 2.0 < hi
    assert table.loc["sigma", "Estimate"] / scale == pytest.approx(0.5, rel=0.2)
    # converged as well as on the unit scale (2 x 300 draws of a non-centred model)
    assert (fit.summary().to_frame()["Rhat"] < 1.1).all()


def test_strongly_collinear_predictors_fit_with_warning():
    data = grouped(np.random.default_rng(4), [15] * 8, sd_group=0.5, sigma=1.0, slope=1.0)
    data["x_copy"] = data["x"] + np.random.default_rng(5).normal(0, 1e-5, len(data))
    with pytest.warns(lb.DataWarning, match=r"\['x', 'x_copy'\] are strongly collinear"):
        fit = quiet_fit("y ~ x + x_copy + (1 | g)", data, [lb.prior("normal(0, 5)", class_="b")],
                        chains=2, draws=300, tune=300, seed=4)
    # the sum is identified even though the parts are not
    total = fit.draws()[["b_x", "b_x_copy"]].sum(axis=1)
    assert total.mean() == pytest.approx(1.0, abs=0.3)


@pytest.mark.parametrize("sizes", [[25] * 8, [400] + [2] * 7], ids=["balanced", "unbalanced"])
def test_balanced_and_unbalanced_designs(sizes):
    data = grouped(np.random.default_rng(6), sizes, sd_group=1.0, sigma=0.7, intercept=1.0, slope=-1.0)
    fit = quiet_fit("y ~ x + (1 | g)", data, chains=2, draws=300, tune=300, seed=6)
    table = fit.posterior_summary()
    assert table.loc["b_x", "Q2.5"] < -1.0 < table.loc["b_x", "Q97.5"]
    assert table.loc["sigma", "Q2.5"] < 0.7 < table.loc["sigma", "Q97.5"]


@pytest.mark.slow
def test_many_levels_with_few_rows_each():
    """G = 5000 groups of 3 rows: runs in `make validate` (about a minute)."""
    data = grouped(np.random.default_rng(7), [3] * 5000, sd_group=1.0, sigma=0.5, slope=1.0)
    fit = quiet_fit("y ~ x + (1 | g)", data, chains=2, draws=300, tune=300, seed=7)
    table = fit.posterior_summary()
    assert table.loc["sd_g__Intercept", "Q2.5"] < 1.0 < table.loc["sd_g__Intercept", "Q97.5"]
    assert fit.ranef()["g"].shape[0] == 5000


def as_from_a_shell() -> None:
    """Start a child as an interactive shell starts a command: SIGINT neither ignored nor blocked.

    A long test session can leave its worker with SIGINT ignored or blocked at the C level (a native
    library's signal handling, invisible to signal.getsignal), and children inherit both across exec;
    such a child would never see the Ctrl-C these tests send.
    """
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


INTERRUPTED = """
import warnings, lmmbayes as lb
warnings.simplefilter("ignore")
data = lb.datasets.load_bounce_times()
print("ready", flush=True)
lb.fit("bounce_time ~ std_age + (1 | county)", data, chains=2, draws=5_000_000, tune=500, seed=1,
       progress=False)
print("finished", flush=True)
"""


def test_interrupt_leaves_no_processes_or_temporary_files(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    proc = subprocess.Popen([sys.executable, "-c", INTERRUPTED], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
                            preexec_fn=as_from_a_shell)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(12)  # compiling (cold or warm) and sampling
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert "finished" not in out
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    alive = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True).stdout
    assert alive.strip() == ""
    assert list(tmp.iterdir()) == []


def test_fit_never_returns_fewer_draws_than_promised(bounce):
    fit = quiet_fit("bounce_time ~ std_age", bounce, chains=2, draws=37, tune=20, seed=1)
    assert fit.idata["posterior"]["b"].shape[:2] == (2, 37)


SWALLOWED_CTRL_C = """
import gc, os, signal, sys, time, weakref
import lmmbayes.api
from lmmbayes.app.cli import entry

class Lock:
    pass

def long_fit(*args, **kwargs):
    # The Ctrl-C lands while a weakref callback runs (as when the import system drops a module lock):
    # CPython reports the KeyboardInterrupt as "Exception ignored" and goes on.
    lock = Lock()
    ref = weakref.ref(lock, lambda r: (os.kill(os.getpid(), signal.SIGINT), sum(range(1000))))
    del lock
    gc.collect()
    end = time.monotonic() + 60
    while time.monotonic() < end:  # sampling
        sum(range(1000))
    print("finished", flush=True)

lmmbayes.api.fit = long_fit
sys.argv = ["lmmbayes", "fit", "y ~ x", sys.argv[1]]
entry()
"""


def test_a_ctrl_c_python_would_swallow_still_stops_the_cli(tmp_path):
    csv = tmp_path / "d.csv"
    pd.DataFrame({"y": [1.0, 2.0, 3.0], "x": [0.0, 1.0, 2.0]}).to_csv(csv, index=False)
    proc = subprocess.run([sys.executable, "-c", SWALLOWED_CTRL_C, str(csv)], capture_output=True, text=True,
                          timeout=120, preexec_fn=as_from_a_shell)
    assert "finished" not in proc.stdout
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip() == "interrupted"


INTERRUPTED_PYMC = """
import warnings, lmmbayes as lb
warnings.simplefilter("ignore")
data = lb.datasets.load_bounce_times()
print("ready", flush=True)
fit = lb.fit("bounce_time ~ std_age", data, chains=2, draws=5_000_000, tune=50, seed=1, progress=False, sampler="pymc")
print("finished", fit.posterior["b"].shape, flush=True)
"""


def test_interrupted_pymc_sampler_returns_no_partial_fit(tmp_path):
    """PyMC's NUTS catches Ctrl-C and returns the draws so far; lmmbayes must not wrap them as a full fit."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-c", INTERRUPTED_PYMC], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True, preexec_fn=as_from_a_shell)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(15)  # compiling and sampling the first chain
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert "finished" not in out
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("delay", [0.3, 1.5, 12.0])
def test_ctrl_c_in_the_cli_exits_130_with_one_line(tmp_path, delay):
    """At any moment: while importing, while building, while sampling."""
    csv = tmp_path / "bounce.csv"
    lb.datasets.load_bounce_times().to_csv(csv, index=False)
    proc = subprocess.Popen([sys.executable, "-m", "lmmbayes", "fit", "bounce_time ~ std_age + (1 | county)", str(csv),
                             "--draws", "2000000", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, preexec_fn=as_from_a_shell)
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip() == "interrupted"
