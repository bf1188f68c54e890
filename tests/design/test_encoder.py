"""The one row encoder: the same columns as formulae (coding) and R (transforms), for any rows.

Witnesses: formulae's own design matrices for the coding of categorical
terms (full dummies or contrasts, column order), and R's ``model.matrix`` for
``poly``, ``splines::bs`` and ``scale``, including new data beyond the
boundary knots (``fixtures/poly_bs_scale.R`` wrote the fixtures with R 4.2.2).
"""

from __future__ import annotations

from pathlib import Path

import formulae as fm
import numpy as np
import pandas as pd
import pytest
from formulae.environment import Environment

import lmmbayes as lb
from lmmbayes.design import build_design, complete_rows
from lmmbayes.families import family
from lmmbayes.spec import parse_formula

FIXTURES = Path(__file__).parent / "fixtures"


def design(formula, data):
    return build_design(parse_formula(formula), family("gaussian"), data)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    n = 90
    return pd.DataFrame({"y": rng.normal(size=n), "x": rng.normal(size=n) + 3, "z": rng.uniform(1, 2, size=n),
                         "cat": rng.choice(list("abc"), n), "d": rng.choice(["u", "v"], n),
                         "e": rng.choice(["p", "q", "r"], n)})


@pytest.mark.parametrize("rhs", ["x*cat", "cat:d", "x:cat", "0 + cat", "x*cat*d", "cat*d*e", "0 + cat:d",
                                 "x + x:cat", "cat + x:cat:d", "log(z) + cat", "I(x**2) + x:d"])
def test_categorical_coding_matches_formulae(data, rhs):
    d = design(f"y ~ {rhs}", data)
    ref = fm.design_matrices(f"y ~ {rhs}", data, env=Environment([{"log": np.log}])).common
    M = np.asarray(ref)
    if d.centred_intercept:
        M = M[:, 1:]
    np.testing.assert_allclose(d.rows.X, M, atol=1e-12)
    labels = [c.replace("[", "").replace("]", "") for c in ref.as_dataframe().columns]
    expected = [lb_name for lb_name in labels if lb_name != "Intercept"] if d.centred_intercept else labels
    assert list(d.coef_names) == [e.replace(" ", "").replace("**", "E").replace("(", "").replace(")", "")
                                  for e in expected]


def _read(name):
    return pd.read_csv(FIXTURES / name, comment="#").to_numpy()[:, 1:]


def test_poly_bs_scale_match_r():
    x = [3.1, 2.5, 4.7, 1.2, 5.5, 2.2, 3.3, 4.4, 0.5, 6.1, 2.9, 3.7]
    frame = pd.DataFrame({"x": x, "y": np.arange(1, 13.0)})
    d = design("y ~ poly(x, 2) + bs(x, df=4) + scale(x)", frame)
    assert d.coef_names == ("polyx21", "polyx22", "bsxdfEQ41", "bsxdfEQ42", "bsxdfEQ43", "bsxdfEQ44", "scalex")
    np.testing.assert_allclose(d.rows.X, _read("poly_bs_scale.csv"), atol=1e-12)
    new = complete_rows(pd.DataFrame({"x": [0.1, 3.0, 7.0]}), ("x",), drop=False)[0]
    rows = d.encoder.encode(new, response=False)
    np.testing.assert_allclose(rows.X[:, :6], _read("poly_bs_newdata.csv"), atol=1e-12)


def test_new_rows_reuse_the_training_state(data):
    d = design("y ~ scale(x) + poly(z, 2) + cat", data)
    train = d.rows.X
    new = complete_rows(data.iloc[[5, 1, 40]], ("x", "z", "cat"), drop=False)[0]
    rows = d.encoder.encode(new, response=False)
    np.testing.assert_allclose(rows.X, train[[5, 1, 40]], atol=1e-12)


def test_levels_are_matched_by_value_not_label():
    train = pd.DataFrame({"y": np.arange(8.0), "g": [1, 2, 3, 4] * 2})
    d = design("y ~ 1 + (1 | g)", train)
    new = complete_rows(pd.DataFrame({"g": [1.0, 4.0, 5.0]}), ("g",), drop=False)[0]
    (fr,) = d.encoder.encode(new, response=False).factors
    assert fr.index.tolist() == [0, 3, -1]
    assert list(fr.labels) == ["1", "4", "5"]


def test_unseen_categorical_level_in_new_rows_is_an_error(data):
    d = design("y ~ cat", data)
    new = complete_rows(pd.DataFrame({"cat": ["a", "zz"]}), ("cat",), drop=False)[0]
    with pytest.raises(lb.DataError, match=r"'cat' has level\(s\) \['zz'\]"):
        d.encoder.encode(new, response=False, what="newdata")


def test_boolean_and_comparison_predictors_are_categorical(data):
    d = design("y ~ I(x > 3) + b", data.assign(b=data["x"] > 2))
    assert d.coef_names == ("Ix>3True", "bTrue")
    np.testing.assert_allclose(d.rows.X[:, 0], (data["x"] > 3).astype(float))
