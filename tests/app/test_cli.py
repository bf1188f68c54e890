"""The command line: usage errors, model errors, warnings, interrupts, and the commands end to end."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import lmmbayes as lb
from lmmbayes.app import cli
from lmmbayes.app.cli import main


@pytest.fixture(scope="module")
def csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "bounce.csv"
    lb.datasets.load_bounce_times().to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def csv_with_gaps(tmp_path_factory):
    data = lb.datasets.load_bounce_times()
    data.loc[[2, 40, 300], "std_age"] = np.nan
    path = tmp_path_factory.mktemp("cli") / "gaps.csv"
    data.to_csv(path, index=False)
    return path


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmmbayes", *args], capture_output=True, text=True, cwd=cwd)


QUICK = ["--chains", "1", "--draws", "100", "--tune", "100", "--seed", "1", "--quiet"]
PRIORS = ["--prior", "normal(200, 1)", "--class", "Intercept", "--prior", "normal(0, 5)", "--coef", "std_age",
          "--prior", "normal(0, 10)", "--class", "sd", "--group", "county"]


def test_get_prior_prints_the_table(csv, capsys):
    assert main(["get-prior", "bounce_time ~ std_age + (1 | county)", str(csv)]) == 0
    out = capsys.readouterr().out
    assert "student_t(3, 202.6, 14.3)" in out and "Intercept" in out and "county" in out


def test_fit_prints_summary_and_saves(csv, tmp_path, capsys):
    out_file = tmp_path / "fit.lmmb"
    code = main(["fit", "bounce_time ~ std_age", str(csv), "--prior", "normal(200, 1)", "--class", "Intercept",
                 "--prior", "normal(0, 5)", "--coef", "std_age", "--chains", "1", "--draws", "100",
                 "--tune", "100", "--seed", "1", "--method", "joint", "--out", str(out_file), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert "Regression Coefficients:" in out and "Formula: bounce_time ~ std_age" in out
    assert out_file.is_file()
    assert main(["summary", str(out_file)]) == 0
    again = capsys.readouterr().out
    assert again.strip() == out.split("\n\nSaved")[0].strip()
    # what was fitted is what was asked for
    fit = lb.load(out_file)
    assert fit.engine == "joint" and fit.config.draws == 100 and fit.config.seed == 1
    assert fit.priors.get("b", "std_age").dist == "normal(0, 5)"


def test_fit_with_family_option(csv, capsys):
    args = ["fit", "bounce_time ~ std_age + (1 | county)", str(csv), *PRIORS, *QUICK]
    assert main([*args, "--family", "gaussian"]) == 0
    out = capsys.readouterr().out
    assert "Family: gaussian" in out and "Links: mu = identity; sigma = identity" in out
    assert "~county (Number of levels: 8)" in out
    assert main([*args, "--family", "gaussian", "--link", "identity"]) == 0
    assert capsys.readouterr().out == out  # the same seed, the same fit
    assert main([*args, "--family", "nosuchfamily"]) == 1
    assert "error: 'nosuchfamily' is an unknown family" in capsys.readouterr().err


def test_families_and_links_on_the_command_line(tmp_path, capsys):
    """--family and --link reach get-prior and fit (a poisson count model, probit bernoulli defaults)."""
    rng = np.random.default_rng(3)
    data = pd.DataFrame({"y": np.tile([0, 1, 2, 4, 4, 4, 5, 9], 10), "x": rng.normal(size=80),
                         "g": np.repeat([f"g{i}" for i in range(10)], 8)})
    path = tmp_path / "counts.csv"
    data.to_csv(path, index=False)
    assert main(["get-prior", "y ~ x + (1 | g)", str(path), "--family", "poisson"]) == 0
    assert "student_t(3, 1.4, 2.5)" in capsys.readouterr().out  # brms's: log of the median count
    out_file = tmp_path / "fit.lmmb"
    assert main(["fit", "y ~ x + (1 | g)", str(path), "--family", "poisson", "--chains", "1", "--draws", "50",
                 "--tune", "50", "--seed", "2", "--quiet", "--out", str(out_file)]) == 0
    assert "Family: poisson" in capsys.readouterr().out and lb.load(out_file).design.family.name == "poisson"
    assert main(["get-prior", "y ~ x", str(path), "--family", "poisson", "--link", "logit"]) == 1
    assert "'logit'" in capsys.readouterr().err
    # an ordinal model of the same counts shifted to categories 1..10: one threshold per cut
    data.assign(y=data["y"] + 1).to_csv(path, index=False)
    assert main(["get-prior", "y ~ x + (1 | g)", str(path), "--family", "cumulative", "--link", "probit"]) == 0
    out = capsys.readouterr().out
    assert "Intercept          9" in out and "thresholds" in out


def test_console_script_and_module_run_the_same_main(csv):
    """``lmmbayes`` (pyproject's console script) and ``python -m lmmbayes`` are both lmmbayes.app.cli.entry."""
    import importlib
    import tomllib

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    module, _, attr = pyproject["project"]["scripts"]["lmmbayes"].partition(":")
    assert getattr(importlib.import_module(module), attr) is cli.entry
    script = Path(sys.executable).parent / "lmmbayes"
    if not script.is_file():
        pytest.skip("the lmmbayes console script is not installed in this environment")
    if f"from {module} import {attr}" not in script.read_text():
        pytest.skip(f"the installed console script predates pyproject's entry point {module}:{attr} "
                    "(reinstall: pip install -e .)")
    args = ["get-prior", "bounce_time ~ std_age + (1 | county)", str(csv)]
    by_script = subprocess.run([str(script), *args], capture_output=True, text=True)
    by_module = run(*args)
    assert by_script.returncode == by_module.returncode == 0
    assert by_script.stdout == by_module.stdout and "student_t(3, 202.6, 14.3)" in by_script.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([], "COMMAND"),
        (["frobnicate"], "invalid choice"),
        (["fit", "y ~ x"], "required: data"),
        (["fit", "y ~ x", "d.csv", "--chains", "many"], "invalid int value"),
        (["fit", "y ~ x", "d.csv", "--class", "b"], "must follow the --prior"),
    ],
)
def test_usage_errors_exit_2_without_traceback(args, needle):
    result = run(*args)
    assert result.returncode == 2
    assert "usage:" in result.stderr and needle in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["get-prior", "y ~ x", "missing.csv"], "does not exist"),
        (["get-prior", "bounce_time ~ nope", "{csv}"], "'nope'"),
        (["fit", "bounce_time ~ std_age", "{csv}", "--prior", "normal(0, -1)"], "must be > 0"),
        (["fit", "bounce_time ~ std_age", "{csv}", "--chains", "0"], "chains must be a positive integer"),
        (["fit", "bounce_time ~ std_age", "{csv}", "--family", "gaussian", "--link", "cubic"], "cubic"),
        (["summary", "{csv}"], "error:"),
    ],
)
def test_model_errors_exit_1_with_one_line(csv, args, needle):
    result = run(*[a.format(csv=csv) for a in args])
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error:") and needle in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


INJECTIONS = [
    "bounce_time ~ std_age + os.system('touch SENTINEL')",
    "bounce_time ~ I(std_age + 0*os.system('touch SENTINEL'))",
    "bounce_time ~ std_age + eval('SENTINEL')",
]


@pytest.mark.parametrize("formula", INJECTIONS)
def test_a_formula_cannot_run_code(csv, tmp_path, monkeypatch, capsys, formula):
    monkeypatch.chdir(tmp_path)
    for command in (["fit", formula, str(csv), *QUICK], ["get-prior", formula, str(csv)]):
        assert main(command) == 1
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), captured.err
        assert "not allowed" in lines[0] or "dotted name" in lines[0]
        assert captured.out == ""
        assert not (tmp_path / "SENTINEL").exists()


def test_a_formula_cannot_run_code_in_a_process(csv, tmp_path):
    result = run("fit", INJECTIONS[0], str(csv), *QUICK, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("error: The dotted name 'os.system'") and len(result.stderr.splitlines()) == 1
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_dropped_rows_are_one_warning_line(csv_with_gaps):
    result = run("fit", "bounce_time ~ std_age + (1 | county)", str(csv_with_gaps), *PRIORS, *QUICK)
    assert result.returncode == 0, result.stderr
    warning_lines = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning_lines) == 1, result.stderr
    assert "Dropped 3 of 613 rows with missing values" in warning_lines[0]
    assert "DataWarning" not in result.stderr and "warnings.warn" not in result.stderr
    assert "Number of observations: 610" in result.stdout
    result = run("get-prior", "bounce_time ~ std_age + (1 | county)", str(csv_with_gaps))
    assert result.returncode == 0
    assert [line for line in result.stderr.splitlines() if line.strip()] == \
        [line for line in result.stderr.splitlines() if line.startswith("warning: Dropped 3 of 613 rows")]


def test_ctrl_c_exits_130_with_one_line(csv, monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "fit", interrupted)
    before = signal.getsignal(signal.SIGINT)
    assert main(["fit", "bounce_time ~ std_age", str(csv)]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "interrupted"
    # main() leaves signal handling alone: an ignored SIGINT would be inherited by every child process
    assert signal.getsignal(signal.SIGINT) == before


def test_ctrl_c_caught_in_execd_code_still_exits_130(tmp_path):
    """CPython flags a KeyboardInterrupt raised in exec'd source (libraries exec strings while they are
    imported) and, under ``python -m``, kills itself with SIGINT at exit even when it was caught (status -2,
    seen in CI at a 1.5 s Ctrl-C). The entry point must still exit 130 with one line."""
    (tmp_path / "interrupted_cli.py").write_text(
        "from lmmbayes.app import cli\n"
        "cli.COMMANDS['fit'] = lambda args: exec('raise KeyboardInterrupt')\n"
        "cli.entry()\n")
    proc = subprocess.run([sys.executable, "-m", "interrupted_cli", "fit", "y ~ x", "d.csv"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130, (proc.returncode, proc.stderr)
    assert proc.stderr.strip() == "interrupted"


def test_make_demo_runs_the_demo_module():
    """``make demo`` runs ``python -m lmmbayes.app.demo``: the module exists and takes the sampler options."""
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    assert "-m lmmbayes.app.demo" in makefile
    result = subprocess.run([sys.executable, "-m", "lmmbayes.app.demo", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--chains" in result.stdout and "--seed" in result.stdout


@pytest.mark.slow
def test_demo_fits_the_three_tutorial_models(tmp_path):
    result = run("demo", "--chains", "1", "--draws", "100", "--tune", "100", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    titles = [line for line in result.stdout.splitlines() if line.startswith("===")]
    assert titles == ["=== Linear regression ===", "=== Random intercept ===", "=== Random intercept and slope ==="]
    assert result.stdout.count("Regression Coefficients:") == 3
    assert "Traceback" not in result.stderr


def test_every_warning_is_one_line(capsys):
    cli._one_line_warning(UserWarning("first line\n  second line\n"), UserWarning, "x.py", 1)
    assert capsys.readouterr().err == "warning: first line second line\n"
