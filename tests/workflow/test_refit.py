"""brms's update(): the formula shorthand, and refits that keep what did not change.

Witness for "keeps everything": updating nothing reproduces the fit's draws exactly (same data, priors,
engine and seed; the collapsed engine's C kernel, so nothing compiles).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import quiet_fit

import lmmbayes as lb
from lmmbayes.spec.parse import update_formula

PRIORS = [lb.prior("normal(200, 5)", class_="Intercept"), lb.prior("normal(0, 5)", class_="b")]


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("y ~ x + (1 | g)", ". ~ . + z", "y ~ x + (1 | g) + z"),
    ("y ~ x + z + (1 | g)", ". ~ . - z", "y ~ x + (1 | g)"),
    ("y ~ x + (1 | g)", ". ~ . - (1 | g)", "y ~ x"),
    ("y ~ x + (1 | g)", "log(y) ~ .", "log(y) ~ x + (1 | g)"),
    ("y | weights(w) ~ x", ". ~ . + z", "y | weights(w) ~ x + z"),
    ("y ~ x + (1 | g)", ". ~ . - 1", "y ~ x + (1 | g) - 1"),
    ("y ~ x + (1 | g)", "y ~ w", "y ~ w"),
    ("y ~ x", ". ~ . + x", "y ~ x"),
])
def test_formula_shorthand(old, new, expected):
    assert update_formula(old, new) == expected


@pytest.mark.parametrize(("new", "needle"), [(". ~ . - q", "does not have"), (". ~ . ~ x", "exactly one '~'"),
                                              (". ~ . - x", "leaves no terms"), (3, "must be a string")])
def test_formula_shorthand_errors(new, needle):
    with pytest.raises(lb.FormulaError, match=needle):
        update_formula("y ~ x", new)


@pytest.fixture(scope="module")
def bounce_fit():
    data = lb.datasets.load_bounce_times()
    return data, quiet_fit("bounce_time ~ std_age + (1 | county)", data, PRIORS, chains=2, draws=300, seed=1)


def test_updating_nothing_reproduces_the_fit(bounce_fit):
    _, fit = bounce_fit
    again = fit.update()
    assert again.engine == fit.engine and again.formula == fit.formula
    np.testing.assert_array_equal(again.draws().to_numpy(), fit.draws().to_numpy())
    assert again.prior_summary().equals(fit.prior_summary())


def test_update_formula_data_priors_and_sampling(bounce_fit):
    data, fit = bounce_fit
    with pytest.warns(lb.DataWarning, match=r"no parameter for prior\('normal\(0, 5\)', class='b'\); dropped"):
        smaller = fit.update(formula=". ~ . - std_age")
    assert smaller.formula == "bounce_time ~ (1 | county)" and list(smaller.fixef().index) == ["Intercept"]
    assert "user" in set(smaller.prior_summary()["source"])  # the Intercept prior was kept
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lb.ConvergenceWarning)
        fewer = fit.update(draws=100, seed=9)
    assert fewer.ndraws == 200 and fewer.config.seed == 9
    half = fit.update(newdata=data.iloc[: len(data) // 2])
    assert half.nobs == len(data) // 2
    wide = fit.update(priors=[lb.prior("normal(180, 1)", class_="Intercept")])
    table = wide.prior_summary()
    assert table.loc[table["class"] == "Intercept", "prior"].item() == "normal(180, 1)"
    assert table.loc[table["class"] == "b", "prior"].iloc[0] == "flat"  # replaced, not merged


def test_update_names_the_data_it_was_given(bounce_fit):
    data, fit = bounce_fit
    # fitting neither changed the user's frame nor its name (witness: a fresh load)
    fresh = lb.datasets.load_bounce_times()
    assert data.equals(fresh) and data.attrs == fresh.attrs
    assert "Data: bounce_times (" in str(fit.summary())
    assert "Data: bounce_times (" in str(fit.update(seed=2).summary())  # the same data keep their name
    renamed = data.iloc[:300].copy()
    renamed.attrs["name"] = "first_300"
    assert "Data: first_300 (" in str(fit.update(newdata=renamed).summary())
    unnamed = data.iloc[:300].copy()
    unnamed.attrs.clear()
    assert "Data: data (" in str(fit.update(newdata=unnamed).summary())  # not the old name
    assert data.attrs == fresh.attrs


def test_update_errors(bounce_fit):
    _, fit = bounce_fit
    with pytest.raises(lb.FitError, match="unknown option"):
        fit.update(chain=2)
    with pytest.raises(lb.FitError, match=r"reads \['age'\].*newdata="):
        fit.update(formula=". ~ . + age")
    with pytest.raises(lb.FormulaError, match="parse"):  # the result is checked like any formula
        fit.update(formula=". ~ . + __import__('os')")
