"""Formulas, prior strings and fit files are data: a catalogue of injection attempts through every entry point.

Each case would run a shell command (``touch`` a sentinel file) or write the
data somewhere if any part of lmmbayes evaluated the text as code. The test
asserts that a clear lmmbayes error came back and that the sentinel was never
created. The catalogue is data: payloads x positions x entry points.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import lmmbayes as lb

DATA = pd.DataFrame({"y": np.random.default_rng(0).normal(size=40), "x": np.arange(40.0) % 7,
                     "g": np.repeat(["a", "b", "c", "d"], 10), "s": np.full(40, 1.0), "n": np.full(40, 3)})

#: Code a formula might try to run; {s} is the sentinel's path.
PAYLOADS = [
    "os.system('touch {s}')",
    "I(x + 0*os.system('touch {s}'))",
    "x.to_csv('{s}')",
    "frame.to_csv('{s}')",
    "__import__('os').system('touch {s}')",
    "eval(\"__import__('os').system('touch {s}')\")",
    "exec(\"open('{s}', 'w')\")",
    "open('{s}', 'w')",
    "getattr(os, 'system')('touch {s}')",
    "log(os.system('touch {s}'))",
    "poly(x, os.system('touch {s}'))",
    "C(os.system('touch {s}'))",
    "I(x).to_csv('{s}')",
    "subprocess.run(['touch', '{s}'])",
    "pd.DataFrame.to_csv(x, '{s}')",
]

#: Where in a formula the payload goes.
POSITIONS = {
    "population-level": "y ~ x + {p}",
    "response": "{p} ~ x",
    "group-level lhs": "y ~ x + (1 + {p} | g)",
    "offset": "y ~ x + offset({p})",
    "weights": "y | weights({p}) ~ x",
    "trials": "y | trials({p}) ~ x",
    "se": "y | se({p}) ~ x",
    "nested call": "y ~ log(abs({p}) + 1)",
}


def _fit(formula):
    return lb.fit(formula, DATA, chains=1, draws=5, tune=5, progress=False)


ENTRY_POINTS = {
    "fit": _fit,
    "get_prior": lambda f: lb.get_prior(f, DATA),
    "default_prior": lambda f: lb.default_prior(f, DATA),
    "prior_predictive": lambda f: lb.prior_predictive(f, DATA, [lb.prior("normal(0, 1)", class_="b")], draws=5),
    "simulation_based_calibration": lambda f: lb.simulation_based_calibration(
        f, DATA, [lb.prior("normal(0, 1)", class_="b"), lb.prior("normal(0, 1)", class_="Intercept")], n_sims=1),
    "cli fit": lambda f: _cli(["fit", f, "{csv}"]),
    "cli get-prior": lambda f: _cli(["get-prior", f, "{csv}"]),
}

CASES = [(entry, position, payload) for entry in ENTRY_POINTS for position in POSITIONS for payload in PAYLOADS
         if entry in ("fit", "get_prior") or position in ("population-level", "response")]


class _CliFailed(lb.LmmbayesError):
    pass


_CSV: dict[str, str] = {}


def _cli(args):
    from lmmbayes.app.cli import main

    args = [a.replace("{csv}", _CSV["path"]) for a in args]
    code = main(args)
    if code != 1:
        raise AssertionError(f"the CLI exited with {code}, expected 1 (one error line)")
    raise _CliFailed("the CLI refused it")


@pytest.fixture(scope="module", autouse=True)
def csv_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "data.csv"
    DATA.to_csv(path, index=False)
    _CSV["path"] = str(path)


@pytest.mark.parametrize(("entry", "position", "payload"), CASES,
                         ids=[f"{e}|{p}|{k}" for e, p, k in ((e, p, PAYLOADS.index(k)) for e, p, k in CASES)])
def test_formula_injection_never_runs(entry, position, payload, tmp_path, capsys):
    sentinel = tmp_path / "SENTINEL"
    formula = POSITIONS[position].format(p=payload.format(s=sentinel))
    cwd = os.getcwd()
    os.chdir(tmp_path)  # a relative path written by to_csv('...') would land here
    try:
        with pytest.raises(lb.LmmbayesError):
            ENTRY_POINTS[entry](formula)
    finally:
        os.chdir(cwd)
    assert not sentinel.exists(), f"{entry}: {formula!r} ran code"
    assert list(tmp_path.iterdir()) == [], f"{entry}: {formula!r} wrote files"
    if entry.startswith("cli"):
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ")


def test_prior_strings_are_data(tmp_path):
    sentinel = tmp_path / "S"
    for text in (f"normal(0, __import__('os').system('touch {sentinel}'))", f"os.system('touch {sentinel}')",
                 f"normal(0, 1); os.system('touch {sentinel}')", "normal(0, 1e999)"):
        with pytest.raises(lb.PriorError):
            lb.prior(text)
    assert not sentinel.exists()


def test_hypothesis_strings_are_data(tmp_path):
    """fit.hypothesis() parses its strings with a closed grammar: every payload is a FormulaError."""
    from lmmbayes.workflow.hypothesis import hypothesis

    sentinel = tmp_path / "S"
    draws = pd.DataFrame({"b_x": [0.1, 0.2, 0.3], "b_Intercept": [1.0, 1.1, 0.9]})
    for payload in PAYLOADS:
        text = payload.format(s=sentinel)
        for hyp in (f"{text} > 0", f"x > {text}", f"x + {text} = 0", f"(x) * {text} < 1"):
            with pytest.raises(lb.FormulaError):
                hypothesis(draws, hyp)
    assert not sentinel.exists()


def test_prediction_arguments_are_data(tmp_path):
    fit = lb.fit("y ~ x + (1 | g)", DATA, chains=1, draws=30, tune=30, progress=False, seed=1)
    sentinel = tmp_path / "S"
    evil = f"os.system('touch {sentinel}')"
    new = pd.DataFrame({"x": [1.0], "g": [evil], evil: [1.0]})
    with pytest.raises(lb.DataError, match="allow_new_levels"):
        fit.predict(new)  # the level is only a value to look up
    with pytest.raises(lb.LmmbayesError, match="unknown grouping factor"):
        fit.predict(new, include_groups=[evil])
    fit.predict(new, allow_new_levels=True)
    assert not sentinel.exists()


def test_effect_and_margin_names_are_data(tmp_path):
    """Effect names, variables, by, specs and at keys are looked up among the model's variables, never run."""
    fit = lb.fit("y ~ x + (1 | g)", DATA, chains=1, draws=30, tune=30, progress=False, seed=1)
    sentinel = tmp_path / "S"
    for payload in PAYLOADS:
        text = payload.format(s=sentinel)
        for call in (lambda: fit.conditional_effects(text), lambda: fit.conditional_effects(f"x:{text}"),
                     lambda: fit.conditional_effects("x", conditions=pd.DataFrame({text: [1.0]})),
                     lambda: fit.avg_comparisons(text), lambda: fit.avg_slopes([text]),
                     lambda: fit.avg_predictions(by=text), lambda: fit.emmeans(text),
                     lambda: fit.emmeans("x", at={text: 1.0})):
            with pytest.raises(lb.DataError):
                call()
    assert not sentinel.exists()


def _tamper(path: Path, out: Path, edit) -> Path:
    """A copy of a fit file with its manifest (JSON) edited by ``edit``."""
    work = out.with_suffix(".d")
    shutil.rmtree(work, ignore_errors=True)
    with zipfile.ZipFile(path) as zf:
        zf.extractall(work)
        names = zf.namelist()
    manifest = json.loads((work / "lmmbayes.json").read_text())
    edit(manifest)
    (work / "lmmbayes.json").write_text(json.dumps(manifest))
    with zipfile.ZipFile(out, "w") as zf:
        for name in names:
            zf.write(work / name, name)
    return out


def test_fit_files_never_run_code(tmp_path):
    fit = lb.fit("y ~ x + (1 | g)", DATA, chains=1, draws=30, tune=30, progress=False, seed=1)
    path = fit.save(tmp_path / "fit.lmmb")
    sentinel = tmp_path / "S"
    evil = f"os.system('touch {sentinel}')"

    def set_formula(m):
        m["formula"] = f"y ~ x + I(x + 0*{evil}) + (1 | g)"

    def set_component(m):
        m["encoder"]["components"][0]["expr"] = {"call": "system", "args": [{"lit": f"touch {sentinel}"}],
                                                 "kwargs": []}

    def set_prior(m):
        m["priors"][0]["dist"] = f"normal(0, {evil})"

    def set_family(m):
        m["family"]["name"] = evil

    def set_engine(m):
        m["engine"] = evil

    for k, edit in enumerate((set_formula, set_component, set_prior, set_family, set_engine)):
        bad = _tamper(path, tmp_path / f"bad{k}.lmmb", edit)
        with pytest.raises(lb.FitFileError):
            lb.load(bad)
    assert not sentinel.exists()
    for bad in (None, 123, ["a"], b"x"):
        with pytest.raises(lb.FitFileError, match="needs the path"):
            lb.load(bad)
