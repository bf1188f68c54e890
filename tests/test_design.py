"""Design matrices from formula + data: coding, names, levels, missing values, data safety."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import lmmbayes as lb
from lmmbayes.design import build_design
from lmmbayes.formula import parse_formula


def design(formula, data):
    return build_design(parse_formula(formula), data)


@pytest.fixture()
def small():
    rng = np.random.default_rng(0)
    n = 60
    return pd.DataFrame({
        "y": rng.normal(size=n),
        "x": rng.normal(size=n),
        "z": rng.normal(size=n),
        "cat": rng.choice(["a", "b", "c"], size=n),
        "g": np.repeat(["g1", "g2", "g3", "g4"], n // 4),
        "h": np.tile(["h1", "h2", "h3"], n // 3),
    })


def test_treatment_coding_and_brms_names(small):
    d = design("y ~ x * cat", small)
    assert d.b_names == ("Intercept", "x", "catb", "catc", "x:catb", "x:catc")
    assert d.X.shape == (60, 5)  # centred intercept is not a column of X
    np.testing.assert_allclose(d.X[:, 1], (small["cat"] == "b").astype(float))


def test_no_intercept_gives_full_dummy_coding(small):
    d = design("y ~ 0 + cat", small)
    assert d.b_names == ("cata", "catb", "catc")
    assert not d.centred_intercept


def test_explicit_intercept_is_an_uncentred_column(small):
    d = design("y ~ 0 + Intercept + x", small)
    assert d.b_names == ("Intercept", "x")
    np.testing.assert_allclose(d.X[:, 0], 1.0)
    np.testing.assert_allclose(d.x_means, 0.0)


def test_centring_means(small):
    d = design("y ~ x + z", small)
    np.testing.assert_allclose(d.x_means, small[["x", "z"]].mean().to_numpy())


def test_random_slope_factor(small):
    d = design("y ~ x + (1 + x | g)", small)
    (f,) = d.factors
    assert f.terms == ("Intercept", "x")
    assert f.levels == ("g1", "g2", "g3", "g4")
    assert f.blocks == ((0, 1),)
    assert f.cor_pairs == ((0, 1),)
    np.testing.assert_allclose(f.Z[:, 1], small["x"])
    assert f.index.tolist() == [0] * 15 + [1] * 15 + [2] * 15 + [3] * 15


def test_uncorrelated_terms_are_separate_blocks(small):
    (f,) = design("y ~ x + (1 + x || g)", small).factors
    assert f.blocks == ((0,), (1,))
    assert f.cor_pairs == ()


def test_slope_only_term_gets_implicit_intercept(small):
    (f,) = design("y ~ x + (x | g)", small).factors
    assert f.terms == ("Intercept", "x")


def test_nested_levels_join_with_underscore(small):
    d = design("y ~ 1 + (1 | g/h)", small)
    assert [f.name for f in d.factors] == ["g", "g:h"]
    inner = d.factor("g:h")
    assert inner.levels[0] == "g1_h1"
    assert inner.n_levels == 12


def test_crossed_factors(small):
    d = design("y ~ 1 + (1 | g) + (1 | h)", small)
    assert [f.n_levels for f in d.factors] == [4, 3]


def test_same_factor_in_two_terms_is_merged(small):
    (f,) = design("y ~ x + (1 | g) + (0 + x | g)", small).factors
    assert f.terms == ("Intercept", "x")
    assert f.blocks == ((0,), (1,))


def test_no_dense_random_effects_matrix(small):
    (f,) = design("y ~ x + (1 + x | g)", small).factors
    assert f.Z.shape == (60, 2)  # N x q, not N x (levels * q)


def test_categorical_group_order_follows_categories(small):
    data = small.assign(g=pd.Categorical(small["g"], categories=["g4", "g3", "g2", "g1"]))
    (f,) = design("y ~ 1 + (1 | g)", data).factors
    assert f.levels == ("g4", "g3", "g2", "g1")


def test_missing_rows_dropped_with_warning_and_recorded(small):
    data = small.copy()
    data.loc[[3, 7], "x"] = np.nan
    data.loc[10, "unused"] = 1.0  # NaNs in a column the formula does not use do not matter
    with pytest.warns(lb.DataWarning, match="Dropped 2 of 60 rows"):
        d = design("y ~ x + (1 | g)", data)
    assert d.n_obs == 58
    assert d.dropped_index == (3, 7)


def test_user_frame_is_not_modified(small):
    data = small.copy()
    data.loc[5, "x"] = np.nan
    data["g"] = data["g"].astype("category")
    before = data.copy(deep=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        design("y ~ x * cat + (1 + x | g)", data)
        lb.get_prior("y ~ x * cat + (1 + x | g)", data)
    pd.testing.assert_frame_equal(data, before)
    assert list(data.columns) == list(before.columns)


def test_functions_in_formula(small):
    data = small.assign(pos=np.exp(small["x"]))
    d = design("y ~ log(pos) + scale(z)", data)
    assert d.b_names == ("Intercept", "logpos", "scalez")
    np.testing.assert_allclose(d.X[:, 0], small["x"], atol=1e-12)


@pytest.mark.parametrize(
    ("formula", "make", "error", "needle"),
    [
        ("y ~ nope", lambda d: d, lb.FormulaError, "'nope'"),
        ("y ~ x + (1 | nope)", lambda d: d, lb.FormulaError, "'nope'"),
        ("y ~ foo(x)", lambda d: d, lb.FormulaError, "Unknown function or name 'foo'"),
        ("cat ~ x", lambda d: d, lb.DataError, "must be numeric"),
        ("y ~ x + (1 | one)", lambda d: d.assign(one="a"), lb.DataError, "single level"),
        ("y ~ x", lambda d: d.iloc[:0], lb.DataError, "no rows"),
        ("y ~ x", lambda d: d.assign(x=np.nan), lb.DataError, "Every row has a missing value"),
        ("y ~ x", lambda d: d.assign(x=np.inf), lb.DataError, "infinite"),
        ("y ~ x", lambda d: pd.concat([d, d[["x"]]], axis=1), lb.DataError, "duplicate column"),
        ("y ~ x", lambda d: d.to_dict(), lb.DataError, "pandas or polars DataFrame"),
        ("y ~ x", lambda d: d.to_numpy(), lb.DataError, "pandas or polars DataFrame"),
    ],
)
def test_bad_data_errors(small, formula, make, error, needle):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lb.DataWarning)
        with pytest.raises(error) as info:
            design(formula, make(small))
    assert needle in str(info.value)


def test_unused_categories_warned_and_dropped(small):
    data = small.assign(g=pd.Categorical(small["g"], categories=["g1", "g2", "g3", "g4", "g9"]))
    with pytest.warns(lb.DataWarning, match="unused categories"):
        (f,) = design("y ~ 1 + (1 | g)", data).factors
    assert "g9" not in f.levels


def test_polars_frames_are_accepted(small):
    pl = pytest.importorskip("polars")
    pytest.importorskip("pyarrow")
    d = design("y ~ x + (1 | g)", pl.from_pandas(small))
    assert d.n_obs == 60
