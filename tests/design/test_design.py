"""Design from formula + family + data: coding, names, levels, missing values, data safety."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import lmmbayes as lb
from lmmbayes.design import build_design
from lmmbayes.families import family
from lmmbayes.spec import parse_formula


def design(formula, data, fam="gaussian"):
    return build_design(parse_formula(formula), family(fam), data)


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
    assert d.rows.X.shape == (60, 5)  # centred intercept is not a column of X
    np.testing.assert_allclose(d.rows.X[:, 1], (small["cat"] == "b").astype(float))
    np.testing.assert_allclose(d.rows.X[:, 3], small["x"] * (small["cat"] == "b"))


def test_no_intercept_gives_full_dummy_coding(small):
    d = design("y ~ 0 + cat", small)
    assert d.b_names == ("cata", "catb", "catc")
    assert not d.centred_intercept


def test_explicit_intercept_is_an_uncentred_column(small):
    d = design("y ~ 0 + Intercept + x", small)
    assert d.b_names == ("Intercept", "x")
    np.testing.assert_allclose(d.rows.X[:, 0], 1.0)


def test_column_statistics(small):
    d = design("y ~ x + z", small)
    np.testing.assert_allclose(d.stats.x_mean, small[["x", "z"]].mean().to_numpy())
    np.testing.assert_allclose(d.stats.x_sd, small[["x", "z"]].std(ddof=0).to_numpy())
    assert d.stats.y_mean == pytest.approx(small["y"].mean())


def test_random_slope_factor(small):
    d = design("y ~ x + (1 + x | g)", small)
    (f,) = d.factors
    (fr,) = d.rows.factors
    assert f.terms == ("Intercept", "x")
    assert f.levels == ("g1", "g2", "g3", "g4")
    assert f.blocks == ((0, 1),)
    assert f.cor_pairs == ((0, 1),)
    np.testing.assert_allclose(fr.Z[:, 1], small["x"])
    assert fr.index.tolist() == [0] * 15 + [1] * 15 + [2] * 15 + [3] * 15


def test_uncorrelated_terms_are_separate_blocks(small):
    (f,) = design("y ~ x + (1 + x || g)", small).factors
    assert f.blocks == ((0,), (1,))
    assert f.cor_pairs == ()


def test_slope_only_term_gets_implicit_intercept(small):
    (f,) = design("y ~ x + (x | g)", small).factors
    assert f.terms == ("Intercept", "x")


def test_categorical_group_terms_follow_lme4(small):
    (f,) = design("y ~ 1 + (cat | g)", small).factors
    assert f.terms == ("Intercept", "catb", "catc")
    (f,) = design("y ~ 1 + (0 + cat | g)", small).factors
    assert f.terms == ("cata", "catb", "catc")


def test_nested_levels_join_with_underscore(small):
    d = design("y ~ 1 + (1 | g/h)", small)
    assert [f.name for f in d.factors] == ["g", "g:h"]
    inner = d.encoder.factor("g:h")
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
    (fr,) = design("y ~ x + (1 + x | g)", small).rows.factors
    assert fr.Z.shape == (60, 2)  # N x q, not N x (levels * q)


def test_categorical_group_order_follows_categories(small):
    data = small.assign(g=pd.Categorical(small["g"], categories=["g4", "g3", "g2", "g1"]))
    (f,) = design("y ~ 1 + (1 | g)", data).factors
    assert f.levels == ("g4", "g3", "g2", "g1")


def test_missing_rows_dropped_once_with_count_and_recorded(small):
    data = small.copy()
    data.loc[[3, 7], "x"] = np.nan
    data.loc[10, "unused"] = 1.0  # NaNs in a column the formula does not use do not matter
    with pytest.warns(lb.DataWarning) as record:
        d = design("y ~ x + (1 | g)", data)
    messages = [str(w.message) for w in record if issubclass(w.category, lb.DataWarning)]
    assert messages == ["Dropped 2 of 60 rows with missing values in the columns the formula uses; their index "
                        "labels are in fit.dropped_rows."]
    assert d.n_obs == 58
    assert d.dropped_index == (3, 7)


def test_get_prior_says_what_a_fit_would_drop(small):
    data = small.copy()
    data.loc[[3], "x"] = np.nan
    with pytest.warns(lb.DataWarning) as record:
        lb.get_prior("y ~ x", data)
    (message,) = [str(w.message) for w in record]
    assert "Dropped 1 of 60 rows" in message and "a fit would drop them" in message
    assert "fit.dropped_rows" not in message


def test_user_frame_is_not_modified(small):
    data = small.copy()
    data.loc[5, "x"] = np.nan
    data["g"] = data["g"].astype("category")
    data["n"] = pd.array(np.arange(60), dtype="Int64")
    before = data.copy(deep=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        design("y ~ x * cat + log1p(n) + poly(z, 2) + (1 + x | g)", data)
        lb.get_prior("y ~ x * cat + scale(n) + (1 + x | g)", data)
    pd.testing.assert_frame_equal(data, before)
    assert list(data.columns) == list(before.columns)


def test_functions_in_formula(small):
    data = small.assign(pos=np.exp(small["x"]))
    d = design("y ~ log(pos) + scale(z) + I(x**2) + C(h)", data)
    assert d.b_names == ("Intercept", "logpos", "scalez", "IxE2", "Chh2", "Chh3")
    np.testing.assert_allclose(d.rows.X[:, 0], small["x"], atol=1e-12)
    np.testing.assert_allclose(d.rows.X[:, 1], (small["z"] - small["z"].mean()) / small["z"].std(ddof=1))
    np.testing.assert_allclose(d.rows.X[:, 2], small["x"] ** 2)


def test_offset_is_data_not_a_coefficient(small):
    d = design("y ~ x + offset(z)", small)
    assert d.b_names == ("Intercept", "x")
    np.testing.assert_allclose(d.rows.offset, small["z"])
    assert d.stats.offset_mean == pytest.approx(small["z"].mean())
    d2 = design("y ~ x + offset(z) + offset(I(2 * x))", small)
    np.testing.assert_allclose(d2.rows.offset, small["z"] + 2 * small["x"])


@pytest.mark.parametrize(
    ("formula", "make", "error", "needle"),
    [
        ("y ~ nope", lambda d: d, lb.FormulaError, "'nope'"),
        ("y ~ x + (1 | nope)", lambda d: d, lb.FormulaError, "'nope'"),
        ("y ~ foo(x)", lambda d: d, lb.FormulaError, "The function 'foo' is not allowed"),
        ("cat ~ x", lambda d: d, lb.DataError, "must be numeric"),
        ("y ~ x + (1 | one)", lambda d: d.assign(one="a"), lb.DataError, "single level"),
        ("y ~ x + c1", lambda d: d.assign(c1="a"), lb.DataError, "single level"),
        ("y ~ x", lambda d: d.iloc[:0], lb.DataError, "no rows"),
        ("y ~ x", lambda d: d.iloc[:1], lb.DataError, "at least 2 observations"),
        ("y ~ x", lambda d: d.assign(y=3.0), lb.DataError, "is constant"),
        ("y ~ x", lambda d: d.assign(x=np.nan), lb.DataError, "Every row has a missing value"),
        ("y ~ x", lambda d: d.assign(x=np.inf), lb.DataError, "infinite"),
        ("y ~ log(x)", lambda d: d, lb.DataError, "log() needs x > 0"),
        ("y ~ x + (sqrt(x) | g)", lambda d: d, lb.DataError, "sqrt() needs x >= 0"),
        ("y ~ exp(x)", lambda d: d.assign(x=d["x"] * 1000), lb.DataError, "exp() needs x < 709"),
        ("y ~ x", lambda d: pd.concat([d, d[["x"]]], axis=1), lb.DataError, "duplicate column"),
        ("y ~ x", lambda d: d.to_dict(), lb.DataError, "pandas or polars DataFrame"),
        ("y ~ x", lambda d: d.to_numpy(), lb.DataError, "pandas or polars DataFrame"),
        ("y ~ x", lambda d: d["x"], lb.DataError, "Series"),
        ("y ~ d", lambda d: d.assign(d=pd.date_range("2020-01-01", periods=len(d))), lb.DataError, "'d' has dtype datetime64"),
        ("y ~ d", lambda d: d.assign(d=pd.to_timedelta(np.arange(len(d)), unit="D")), lb.DataError, "timedelta"),
        ("y ~ m", lambda d: d.assign(m=[1, "a"] * (len(d) // 2)), lb.DataError, "mixed Python objects"),
        ("y ~ poly(x, 200)", lambda d: d, lb.DataError, "degree (200) must be less"),
        ("y ~ scale(k)", lambda d: d.assign(k=2.0), lb.DataError, "constant"),
        ("y | weights(w) ~ x", lambda d: d.assign(w=-1.0), lb.DataError, "weights(w) must be non-negative"),
        ("y | se(s) ~ x", lambda d: d.assign(s=0.0), lb.DataError, "se(s) must be positive"),
        ("y | trials(n) ~ x", lambda d: d, lb.FitError, "does not take the addition term trials()"),
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


def test_nullable_and_pyarrow_dtypes_just_work(small):
    pytest.importorskip("pyarrow")
    plain = design("y ~ x + n + cat + b + (1 | g)", small.assign(n=np.arange(60), b=np.arange(60) % 2 == 0))
    for kind in ("numpy_nullable", "pyarrow"):
        data = small.assign(n=np.arange(60), b=np.arange(60) % 2 == 0).convert_dtypes(dtype_backend=kind)
        d = design("y ~ x + n + cat + b + (1 | g)", data)
        assert d.b_names == plain.b_names
        np.testing.assert_allclose(d.rows.X, plain.rows.X)
        assert d.factors[0].levels == plain.factors[0].levels


def test_backticked_and_non_ascii_group_columns(small):
    data = small.rename(columns={"g": "my group", "h": "größe"})
    d = design("y ~ x + (1 | `my group`) + (1 | größe)", data)
    assert [f.name for f in d.factors] == ["my group", "größe"]


def test_interaction_level_labels_must_be_unique():
    data = pd.DataFrame({"y": np.arange(6.0), "a": ["N", "N_p", "N", "N_p", "M", "M"],
                         "b": ["p_1", "1", "p_1", "1", "q", "q"]})
    with pytest.raises(lb.DataError, match="'a:b'.*would both be labelled 'N_p_1'"):
        design("y ~ 1 + (1 | a:b)", data)


def test_polars_frames_are_accepted(small):
    pl = pytest.importorskip("polars")
    pytest.importorskip("pyarrow")
    d = design("y ~ x + (1 | g)", pl.from_pandas(small))
    assert d.n_obs == 60
