"""Prediction through the public API: shapes, agreement with fitted values, new levels, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import lmmbayes as lb


@pytest.fixture(scope="module")
def newdata():
    return pd.DataFrame({"std_age": [-1.0, 0.0, 1.5], "county": ["kent", "devon", "kent"]})


def test_shapes(bounce_slope_fit, newdata):
    n_draws = 2 * 400
    assert bounce_slope_fit.posterior_epred().shape == (n_draws, 613)
    assert bounce_slope_fit.posterior_predict(newdata, seed=1).shape == (n_draws, 3)
    assert bounce_slope_fit.posterior_predict(newdata, draws=50, seed=1).shape == (50, 3)
    table = bounce_slope_fit.predict(newdata, seed=1)
    assert list(table.columns) == ["Estimate", "Est.Error", "Q2.5", "Q97.5"] and len(table) == 3


def test_epred_mean_equals_fitted_values_from_posterior_means(bounce_slope_fit, bounce):
    """The model is linear, so the mean of epred is the fitted value at the posterior means."""
    post = bounce_slope_fit.posterior
    b = post["b"].mean(("chain", "draw")).values
    r = post["r_county"].mean(("chain", "draw")).values
    levels = list(post["county__level"].values)
    g = bounce["county"].map({lev: k for k, lev in enumerate(levels)}).to_numpy()
    x = bounce["std_age"].to_numpy()
    expected = b[0] + b[1] * x + r[g, 0] + r[g, 1] * x
    np.testing.assert_allclose(bounce_slope_fit.posterior_epred().mean(axis=0), expected, rtol=1e-10)
    np.testing.assert_allclose(bounce_slope_fit.fitted()["Estimate"], expected, rtol=1e-10)


def test_newdata_equals_training_rows(bounce_slope_fit, bounce):
    first = bounce.iloc[:5]
    np.testing.assert_allclose(bounce_slope_fit.posterior_epred(first),
                               bounce_slope_fit.posterior_epred()[:, :5], rtol=1e-12)


def test_population_only_predictions(bounce_slope_fit, newdata):
    eta = bounce_slope_fit.posterior_epred(newdata, include_groups=False)
    b = bounce_slope_fit.posterior["b"].values.reshape(-1, 2)
    np.testing.assert_allclose(eta, b[:, :1] + b[:, 1:] * newdata["std_age"].to_numpy()[None], rtol=1e-12)
    # without the county column at all
    eta2 = bounce_slope_fit.posterior_epred(newdata[["std_age"]], include_groups=False)
    np.testing.assert_allclose(eta, eta2)


def test_new_levels(bounce_slope_fit):
    new = pd.DataFrame({"std_age": [0.0, 0.0], "county": ["rutland", "kent"]})
    with pytest.raises(lb.DataError, match=r"not seen in training: \['rutland'\].*allow_new_levels=True"):
        bounce_slope_fit.posterior_epred(new)
    for how in ("uncertainty", "gaussian"):
        eta = bounce_slope_fit.posterior_epred(new, allow_new_levels=True, sample_new_levels=how, seed=2)
        assert np.isfinite(eta).all()
        # a new county is far less certain than a known one
        assert eta[:, 0].std() > 3 * eta[:, 1].std()
    with pytest.raises(lb.LmmbayesError, match="sample_new_levels"):
        bounce_slope_fit.posterior_epred(new, allow_new_levels=True, sample_new_levels="old")


def test_prediction_errors(bounce_slope_fit, simulated_fit):
    with pytest.raises(lb.DataError, match=r"lacks the column\(s\) \['std_age'\]"):
        bounce_slope_fit.predict(pd.DataFrame({"county": ["kent"]}))
    with pytest.raises(lb.DataError, match=r"missing values in \['std_age'\]"):
        bounce_slope_fit.predict(pd.DataFrame({"std_age": [np.nan], "county": ["kent"]}))
    with pytest.raises(lb.DataError, match="pandas or polars"):
        bounce_slope_fit.predict([[1.0, "kent"]])
    with pytest.raises(lb.DataError, match=r"levels \(d\) in 'cat'"):
        simulated_fit.predict(pd.DataFrame({"x": [0.0], "cat": ["d"], "g": ["g01"]}))
    with pytest.raises(lb.LmmbayesError, match="unknown grouping factors"):
        bounce_slope_fit.predict(pd.DataFrame({"std_age": [0.0]}), include_groups=["region"])
    with pytest.raises(lb.LmmbayesError, match="draws must be an integer"):
        bounce_slope_fit.predict(draws=0)


def test_prediction_leaves_newdata_unchanged(bounce_slope_fit, newdata):
    before = newdata.copy(deep=True)
    bounce_slope_fit.predict(newdata, seed=1)
    bounce_slope_fit.posterior_epred(newdata.assign(county=["a", "b", "c"]), allow_new_levels=True, seed=1)
    pd.testing.assert_frame_equal(newdata, before)


def test_predict_adds_residual_noise(bounce_slope_fit, newdata):
    fitted, predicted = bounce_slope_fit.fitted(newdata), bounce_slope_fit.predict(newdata, seed=1)
    sigma = bounce_slope_fit.posterior_summary().loc["sigma", "Estimate"]
    assert (predicted["Est.Error"] > fitted["Est.Error"]).all()
    assert predicted["Est.Error"].iloc[0] == pytest.approx(np.hypot(sigma, fitted["Est.Error"].iloc[0]), rel=0.15)
