"""Prediction through the public API: shapes, agreement with fitted values computed
independently from posterior means, population-only predictions, new levels, errors,
stateful transforms and offsets on new data, and that the user's data frame is never modified.

One sampled fit (the session's ``bounce_slope_fit``) plus fits with
``sample_prior="only"``, which need no sampler and no compilation, for designs
with categorical predictors, transforms, offsets and several grouping factors.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import lmmbayes as lb

N_DRAWS = 2 * 400  # bounce_slope_fit: 2 chains of 400 draws
PRIOR_ONLY = [lb.prior("normal(0, 1)", class_="b"), lb.prior("normal(0, 1)", class_="Intercept"),
              lb.prior("exponential(1)", class_="sd"), lb.prior("exponential(1)", class_="sigma")]


def prior_only_fit(formula: str, data: pd.DataFrame, draws: int = 300, seed: int = 4) -> lb.Fit:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lb.LmmbayesWarning)
        return lb.fit(formula, data, PRIOR_ONLY, sample_prior="only", draws=draws, seed=seed)


@pytest.fixture(scope="module")
def newdata() -> pd.DataFrame:
    # A non-default index: tables must keep it so rows can be joined back.
    return pd.DataFrame({"std_age": [-1.0, 0.0, 1.5], "county": ["kent", "devon", "kent"]},
                        index=["a", "b", "c"])


@pytest.fixture(scope="module")
def mixed() -> tuple[lb.Fit, pd.DataFrame]:
    """A prior-only fit of a design with a categorical predictor, a transform, nesting and ``||``."""
    rng = np.random.default_rng(3)
    n = 150
    data = pd.DataFrame({
        "y": rng.normal(size=n), "x": rng.normal(size=n),
        "cat": rng.choice(["a", "b", "c"], n), "g": rng.choice([1, 2, 30], n),
        "site": rng.choice(["N", "S"], n), "plot": rng.choice(["p_1", "p2"], n),
    })
    return prior_only_fit("y ~ x + cat + scale(x) + (1 + x || g) + (1 | site/plot)", data), data


@pytest.fixture(scope="module")
def transformed() -> tuple[lb.Fit, pd.DataFrame]:
    """A prior-only fit with I(), poly(), bs() and an offset: stateful transforms learnt on training rows."""
    rng = np.random.default_rng(12)
    n = 120
    data = pd.DataFrame({"y": rng.normal(size=n), "x": rng.normal(size=n), "z": rng.normal(2.0, 3.0, size=n),
                         "w": rng.uniform(0, 10, size=n), "o": rng.normal(size=n),
                         "g": rng.choice(["u", "v", "w"], n)})
    fit = prior_only_fit("y ~ x + I(x**2) + poly(z, 2) + bs(w, df=4) + offset(o) + (1 | g)", data)
    return fit, data


def _posterior_mean_prediction(fit: lb.Fit, frame: pd.DataFrame) -> np.ndarray:
    """mu at the posterior means, from the draws and the data alone (no lmmbayes prediction code)."""
    post = fit.posterior
    b = post["b"].mean(("chain", "draw")).values
    r = post["r_county"].mean(("chain", "draw")).values
    levels = [str(v) for v in post["county__level"].values]
    g = frame["county"].map({lev: k for k, lev in enumerate(levels)}).to_numpy()
    x = frame["std_age"].to_numpy()
    return b[0] + b[1] * x + r[g, 0] + r[g, 1] * x


def test_shapes_and_tables(bounce_slope_fit, newdata):
    assert bounce_slope_fit.posterior_epred().shape == (N_DRAWS, 613)
    assert bounce_slope_fit.posterior_predict(newdata, seed=1).shape == (N_DRAWS, 3)
    assert bounce_slope_fit.posterior_epred(newdata, draws=50).shape == (50, 3)
    assert bounce_slope_fit.posterior_epred(newdata, draws=[0, 5, 799]).shape == (3, 3)
    for table in (bounce_slope_fit.predict(newdata, seed=1), bounce_slope_fit.fitted(newdata)):
        assert list(table.columns) == ["Estimate", "Est.Error", "Q2.5", "Q97.5"]
        assert list(table.index) == ["a", "b", "c"]
        assert (table["Q2.5"] < table["Estimate"]).all() and (table["Estimate"] < table["Q97.5"]).all()
    assert len(bounce_slope_fit.fitted()) == 613


def test_epred_mean_equals_fitted_values_at_posterior_means(bounce_slope_fit, bounce):
    """mu is linear in the parameters, so its posterior mean is mu at the posterior means."""
    expected = _posterior_mean_prediction(bounce_slope_fit, bounce)
    np.testing.assert_allclose(bounce_slope_fit.posterior_epred().mean(axis=0), expected, rtol=1e-10)
    np.testing.assert_allclose(bounce_slope_fit.fitted()["Estimate"], expected, rtol=1e-10)


def test_newdata_rows_equal_training_rows(bounce_slope_fit, bounce):
    rows = bounce.iloc[[0, 100, 612]]
    np.testing.assert_allclose(bounce_slope_fit.posterior_epred(rows),
                               bounce_slope_fit.posterior_epred()[:, [0, 100, 612]], rtol=1e-12)
    np.testing.assert_allclose(bounce_slope_fit.posterior_epred(rows).mean(axis=0),
                               _posterior_mean_prediction(bounce_slope_fit, rows), rtol=1e-10)


def test_draw_subsets(bounce_slope_fit, newdata):
    full = bounce_slope_fit.posterior_epred(newdata)
    np.testing.assert_array_equal(bounce_slope_fit.posterior_epred(newdata, draws=[3, 7]), full[[3, 7]])
    np.testing.assert_array_equal(bounce_slope_fit.posterior_epred(newdata, draws=40),
                                  bounce_slope_fit.posterior_epred(newdata, draws=40))
    with pytest.raises(lb.LmmbayesError, match="draws must be between 1 and the 800"):
        bounce_slope_fit.posterior_epred(newdata, draws=0)
    with pytest.raises(lb.LmmbayesError, match="draws must be"):
        bounce_slope_fit.posterior_epred(newdata, draws=[800])


def test_population_only_predictions(bounce_slope_fit, newdata):
    b = bounce_slope_fit.posterior["b"].values.reshape(-1, 2)
    expected = b[:, :1] + b[:, 1:] * newdata["std_age"].to_numpy()[None, :]
    mu = bounce_slope_fit.posterior_epred(newdata, include_groups=False)
    np.testing.assert_allclose(mu, expected, rtol=1e-12)
    # the grouping column is not needed then, and new levels do not matter
    np.testing.assert_allclose(bounce_slope_fit.posterior_epred(newdata[["std_age"]], include_groups=False), mu)
    np.testing.assert_allclose(
        bounce_slope_fit.posterior_epred(newdata.assign(county="nowhere"), include_groups=False), mu)
    np.testing.assert_array_equal(bounce_slope_fit.posterior_epred(newdata, include_groups=["county"]),
                                  bounce_slope_fit.posterior_epred(newdata))


def test_new_levels_need_permission(bounce_slope_fit):
    new = pd.DataFrame({"std_age": [0.0, 0.0], "county": ["rutland", "kent"]})
    with pytest.raises(lb.DataError, match=r"factor 'county': \['rutland'\].*known levels: \[.*'kent'.*"
                                           r"allow_new_levels=True"):
        bounce_slope_fit.posterior_epred(new)
    with pytest.raises(lb.LmmbayesError, match=r"sample_new_levels.*'uncertainty', 'gaussian'"):
        bounce_slope_fit.posterior_epred(new, allow_new_levels=True, sample_new_levels="newest")


@pytest.mark.parametrize("how", ["uncertainty", "gaussian"])
def test_new_levels_are_more_uncertain(bounce_slope_fit, how):
    new = pd.DataFrame({"std_age": [0.0, 0.0, 0.5, 0.0], "county": ["rutland", "kent", "rutland", "york"]})
    mu = bounce_slope_fit.posterior_epred(new, allow_new_levels=True, sample_new_levels=how, seed=2)
    assert np.isfinite(mu).all()
    # a new county is far less certain than a known one
    assert mu[:, 0].std() > 3 * mu[:, 1].std()
    np.testing.assert_array_equal(
        mu, bounce_slope_fit.posterior_epred(new, allow_new_levels=True, sample_new_levels=how, seed=2))
    # rows of one new level share its effects; another new level gets its own
    b = bounce_slope_fit.posterior["b"].values.reshape(-1, 2)
    r0 = mu[:, 0] - b[:, 0]
    assert not np.allclose(r0, mu[:, 3] - b[:, 0])
    assert np.corrcoef(r0, mu[:, 2] - b[:, 0] - 0.5 * b[:, 1])[0, 1] > 0.5


def test_gaussian_new_levels_follow_the_fitted_distribution(bounce_slope_fit):
    """With std_age = 0 a new level's effect is its intercept, N(0, sd_Intercept^2) per draw."""
    new = pd.DataFrame({"std_age": [0.0], "county": ["rutland"]})
    mu = bounce_slope_fit.posterior_epred(new, allow_new_levels=True, sample_new_levels="gaussian", seed=5)
    effect = mu[:, 0] - bounce_slope_fit.posterior_epred(new, include_groups=False)[:, 0]
    sd = bounce_slope_fit.posterior["sd_county"].sel({"county__term": "Intercept"}).values.reshape(-1)
    z = effect / sd  # standard normal if the draws use each draw's sd
    assert abs(z.mean()) < 0.15 and z.std() == pytest.approx(1.0, abs=0.1)


def test_predict_adds_residual_noise(bounce_slope_fit, newdata):
    fitted = bounce_slope_fit.fitted(newdata)
    predicted = bounce_slope_fit.predict(newdata, seed=1)
    sigma = bounce_slope_fit.posterior_summary().loc["sigma", "Estimate"]
    assert (predicted["Est.Error"] > fitted["Est.Error"]).all()
    np.testing.assert_allclose(predicted["Est.Error"], np.hypot(sigma, fitted["Est.Error"]), rtol=0.12)
    np.testing.assert_allclose(predicted["Estimate"], fitted["Estimate"], atol=2.0)


def test_prediction_errors(bounce_slope_fit):
    with pytest.raises(lb.DataError, match=r"lacks the column\(s\) \['std_age'\].*'std_age': population-level"):
        bounce_slope_fit.predict(pd.DataFrame({"county": ["kent"]}))
    with pytest.raises(lb.DataError, match=r"lacks the column\(s\) \['county'\].*'county': grouping factor 'county'"
                                           r".*include_groups=False"):
        bounce_slope_fit.fitted(pd.DataFrame({"std_age": [1.0]}))
    with pytest.raises(lb.DataError, match=r"missing values in \['std_age'\] \('std_age': 1 of 2 rows\)"):
        bounce_slope_fit.fitted(pd.DataFrame({"std_age": [np.nan, 1.0], "county": ["kent", "kent"]}))
    with pytest.raises(lb.DataError, match="must be a pandas or polars DataFrame.*got list"):
        bounce_slope_fit.posterior_epred([[1.0, "kent"]])
    with pytest.raises(lb.DataError, match="no rows"):
        bounce_slope_fit.fitted(pd.DataFrame({"std_age": [], "county": []}))
    with pytest.raises(lb.LmmbayesError, match=r"unknown grouping factor\(s\) \['region'\].*\['county'\]"):
        bounce_slope_fit.fitted(pd.DataFrame({"std_age": [0.0]}), include_groups=["region"])
    with pytest.raises(TypeError, match="unexpected keyword"):
        bounce_slope_fit.fitted(re_formula=None)


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_infinite_predictor_in_newdata_names_the_column(bounce_slope_fit, value):
    new = pd.DataFrame({"std_age": [0.0, value], "county": ["kent", "kent"]})
    with pytest.raises(lb.DataError, match=r"Column 'std_age' of newdata contains infinite values"):
        bounce_slope_fit.posterior_epred(new)
    with pytest.raises(lb.DataError, match="'std_age'"):
        bounce_slope_fit.predict(new, include_groups=False, seed=1)


def test_unseen_categorical_level(mixed):
    fit, data = mixed
    row = pd.DataFrame({"x": [0.3], "cat": ["z"], "g": [2], "site": ["N"], "plot": ["p2"]})
    with pytest.raises(lb.DataError, match=r"column 'cat' has level\(s\) \['z'\].*levels seen in training: "
                                           r"\['a', 'b', 'c'\]"):
        fit.posterior_epred(row)
    assert fit.posterior_epred(row.assign(cat="b")).shape == (300, 1)


def test_mixed_design_matches_its_training_rows(mixed):
    """Transforms (scale) reuse the training mean and SD; nested and || factors map their levels."""
    fit, data = mixed
    rows = data.iloc[[0, 7, 42, 149]]
    np.testing.assert_allclose(fit.posterior_epred(rows), fit.posterior_epred()[:, [0, 7, 42, 149]], rtol=1e-12)
    factors = {f.name for f in fit.design.factors}
    assert factors == {"g", "site", "site:plot"}
    # a new plot inside a known site: only the site:plot level is new
    new = rows.iloc[[0]].assign(plot="p9")
    with pytest.raises(lb.DataError, match=r"factor 'site:plot': \['(N|S)_p9'\]"):
        fit.posterior_epred(new)
    assert np.isfinite(fit.posterior_epred(new, allow_new_levels=True, seed=1)).all()
    np.testing.assert_allclose(fit.posterior_epred(new, include_groups=["g", "site"]),
                               fit.posterior_epred(rows.iloc[[0]], include_groups=["g", "site"]))


def test_float_grouping_values_find_integer_training_levels(mixed):
    """g was fitted as integers (1, 2, 30): new data holding 2.0 and 30.0 are those levels, not new ones."""
    fit, data = mixed
    rows = data.iloc[[0, 7, 42]]
    assert rows["g"].dtype.kind == "i"
    as_float = rows.assign(g=rows["g"].astype(float))
    as_int = fit.posterior_predict(rows, seed=9)
    # no new-level error without allow_new_levels ...
    np.testing.assert_array_equal(fit.posterior_predict(as_float, seed=9), as_int)
    # ... and no new-level simulation with it: equal draw for draw with the same seed
    np.testing.assert_array_equal(fit.posterior_predict(as_float, allow_new_levels=True, seed=9), as_int)
    np.testing.assert_array_equal(fit.posterior_epred(as_float), fit.posterior_epred()[:, [0, 7, 42]])
    # a float that is no training level is a new level
    with pytest.raises(lb.DataError, match=r"factor 'g': \['2.5'\]"):
        fit.posterior_epred(rows.assign(g=2.5))


def test_colliding_interaction_labels_are_refused():
    """('N', 'p_1') and ('N_p', '1') would both be brms's level 'N_p_1' of site:plot."""
    data = pd.DataFrame({"y": [0.1, 0.5, -0.3, 0.9, 0.2, -0.4], "x": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
                         "site": ["N", "N_p", "N", "N_p", "S", "S"], "plot": ["p_1", "1", "p_1", "1", "q", "q"]})
    for formula in ("y ~ x + (1 | site:plot)", "y ~ x + (1 | site/plot)"):
        with pytest.raises(lb.DataError, match=r"Grouping factor 'site:plot'.*'N_p_1'"):
            prior_only_fit(formula, data, draws=10)
        with pytest.raises(lb.DataError, match=r"Grouping factor 'site:plot'"):
            lb.get_prior(formula, data)


def test_new_interaction_levels_with_colliding_labels_are_refused(mixed):
    """New combinations whose brms labels collide (with each other or with a training level) are not
    silently one level: the labels are how brms and the new-level simulation tell levels apart."""
    fit, data = mixed
    row = data.iloc[[0]]
    # two different new combinations that would both be labelled 'X_p_1'
    new = pd.concat([row.assign(site="X", plot="p_1"), row.assign(site="X_p", plot="1")])
    with pytest.raises(lb.DataError, match=r"'site:plot'.*'X_p_1'"):
        fit.posterior_epred(new, allow_new_levels=True, seed=1)
    # a new combination labelled like a training level ('N_p_1' is the training level ('N', 'p_1'))
    assert "N_p_1" in fit.design.encoder.factor("site:plot").levels
    clash = row.assign(site="N_p", plot="1")
    with pytest.raises(lb.DataError, match=r"'site:plot'.*'N_p_1'"):
        fit.posterior_epred(clash, allow_new_levels=True, seed=1)


def test_transforms_on_new_data_equal_the_training_rows(transformed):
    """I(), poly() and bs() reuse the training state: new rows predict as the training rows with the same values."""
    fit, data = transformed
    pick = [0, 5, 77, 119]
    rows = data.iloc[pick]
    np.testing.assert_allclose(fit.posterior_linpred(rows), fit.posterior_linpred()[:, pick], rtol=1e-12, atol=1e-12)
    # one row alone: a transform relearnt on new data would be constant or fail here
    np.testing.assert_allclose(fit.posterior_epred(rows.iloc[[2]]), fit.posterior_epred()[:, [77]], rtol=1e-12,
                               atol=1e-12)
    # the same rows in another order, with another index
    shuffled = rows.iloc[::-1].set_axis(["d", "c", "b", "a"])
    np.testing.assert_allclose(fit.posterior_linpred(shuffled), fit.posterior_linpred()[:, pick[::-1]],
                               rtol=1e-12, atol=1e-12)


def test_transform_columns_and_names_are_brms_s(transformed):
    fit, data = transformed
    names = fit.design.b_names
    assert names[:2] == ("Intercept", "x")
    assert [n for n in names if n.startswith("poly")] == ["polyz21", "polyz22"]
    assert [n for n in names if n.startswith("bs")] == ["bswdfEQ41", "bswdfEQ42", "bswdfEQ43", "bswdfEQ44"]
    X = fit.design.rows.X
    col = {n: k for k, n in enumerate(fit.design.coef_names)}
    x = data["x"].to_numpy()
    np.testing.assert_allclose(X[:, col["x"]], x)
    (power,) = [n for n in col if n.startswith("Ix")]  # I(x**2), whatever it is called (see below)
    np.testing.assert_allclose(X[:, col[power]], x**2)
    # R's poly(): orthonormal columns, orthogonal to the constant, spanning z and z^2
    P = X[:, [col["polyz21"], col["polyz22"]]]
    np.testing.assert_allclose(P.T @ P, np.eye(2), atol=1e-12)
    np.testing.assert_allclose(P.sum(axis=0), 0.0, atol=1e-12)
    z = data["z"].to_numpy()
    coef, *_ = np.linalg.lstsq(np.column_stack([np.ones_like(z), P]), z**2, rcond=None)
    np.testing.assert_allclose(np.column_stack([np.ones_like(z), P]) @ coef, z**2, rtol=1e-9)
    # bs(w, df = 4): cubic B-splines without the first basis function, each in [0, 1], summing to at most 1
    B = X[:, [col[f"bswdfEQ4{k}"] for k in range(1, 5)]]
    assert (B >= -1e-12).all() and (B.sum(axis=1) <= 1 + 1e-12).all()


def test_power_term_has_brms_name(transformed):
    fit, _ = transformed
    assert "IxE2" in fit.design.b_names


def test_offset_adds_on_the_link_scale(transformed):
    fit, data = transformed
    rows = data.iloc[[1, 2, 3]]
    change = np.array([0.5, -2.0, 10.0])
    base = fit.posterior_linpred(rows)
    moved = fit.posterior_linpred(rows.assign(o=rows["o"] + change))
    np.testing.assert_allclose(moved - base, np.broadcast_to(change, base.shape), rtol=1e-12, atol=1e-12)
    # the training rows' predictions include their own offsets
    np.testing.assert_allclose(base, fit.posterior_linpred()[:, [1, 2, 3]], rtol=1e-12, atol=1e-12)
    # and new data must supply the offset's column
    with pytest.raises(lb.DataError, match=r"lacks the column\(s\) \['o'\].*'o': offset"):
        fit.posterior_linpred(rows.drop(columns="o"))


def test_users_frame_is_unchanged(bounce_slope_fit, newdata, mixed):
    before = newdata.copy(deep=True)
    bounce_slope_fit.predict(newdata, seed=1)
    bounce_slope_fit.fitted(newdata, include_groups=False)
    bounce_slope_fit.posterior_epred(newdata.assign(county=["x", "y", "z"]), allow_new_levels=True, seed=1)
    pd.testing.assert_frame_equal(newdata, before)
    fit, data = mixed
    frame = data.iloc[:5].copy()
    frame["cat"] = frame["cat"].astype("category")
    snapshot = frame.copy(deep=True)
    fit.predict(frame, seed=1)
    pd.testing.assert_frame_equal(frame, snapshot)
