"""Log-likelihood, LOO, WAIC, loo_compare and Bayes R2 through the public API.

On the bounce data the two random-effects models of the tutorial must clearly
beat the linear regression in PSIS-LOO: the counties differ in their mean
bounce time, which a single regression line cannot express.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import TUTORIAL_PRIORS, quiet_fit
from scipy.special import logsumexp
from scipy.stats import norm

import lmmbayes as lb
from lmmbayes import ParetoKWarning, WAICWarning

NO_SD = [p for p in TUTORIAL_PRIORS if p.class_ != "sd"]
KW = dict(chains=2, draws=300, tune=300, seed=11)


@pytest.fixture(scope="module")
def candidates(bounce, bounce_slope_fit) -> dict[str, lb.Fit]:
    return {
        "linear regression": quiet_fit("bounce_time ~ std_age", bounce, NO_SD, **KW),
        "random intercept": quiet_fit("bounce_time ~ std_age + (1 | county)", bounce, TUTORIAL_PRIORS, **KW),
        "random intercept and slope": bounce_slope_fit,
    }


@pytest.fixture(scope="module")
def comparison(candidates) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("error", ParetoKWarning)  # these models have no influential points
        return lb.loo_compare(*candidates.values(), names=list(candidates))


def test_log_lik_is_the_normal_density_given_the_random_effects(candidates):
    fit = candidates["random intercept"]
    ll = fit.log_lik()
    assert ll.shape == (2, 300, 613)
    mu = fit.posterior_epred()  # includes each draw's county intercepts
    sigma = fit.posterior["sigma"].values.reshape(-1, 1)
    np.testing.assert_allclose(ll.reshape(-1, 613), norm.logpdf(fit.design.y, mu, sigma), rtol=1e-10)
    np.testing.assert_allclose(fit.log_lik(chunk_size=7), ll, rtol=1e-13)
    assert "log_likelihood" not in fit.idata.children  # computed on demand, never stored
    with pytest.raises(lb.LmmbayesError, match="chunk_size"):
        fit.log_lik(chunk_size=0)


@pytest.mark.parametrize("name", ["random intercept", "random intercept and slope"])
def test_log_lik_by_hand_from_the_draws_and_the_data(candidates, bounce, name):
    """An independent witness: b, r and sigma picked by name from the posterior, the data from the frame."""
    fit = candidates[name]
    post = fit.posterior
    pick = [0, 1, 250, 612]
    rows = bounce.iloc[pick]
    ll = fit.log_lik()[:, :, pick]
    for chain, draw in [(0, 0), (0, 123), (1, 299)]:
        at = {"chain": chain, "draw": draw}
        b0 = float(post["b"].sel(coef="Intercept", **at))
        b1 = float(post["b"].sel(coef="std_age", **at))
        sigma = float(post["sigma"].sel(**at))
        r = post["r_county"].isel(**at)
        for k, (_, row) in enumerate(rows.iterrows()):
            effect = r.sel(county__level=row["county"])
            mu = b0 + float(effect.sel(county__term="Intercept")) + b1 * row["std_age"]
            if "std_age" in list(r["county__term"].values):
                mu += float(effect.sel(county__term="std_age")) * row["std_age"]
            assert ll[chain, draw, k] == pytest.approx(norm.logpdf(row["bounce_time"], mu, sigma), rel=1e-10)


def test_loo_and_waic_are_finite_and_agree(candidates):
    fit = candidates["random intercept"]
    with warnings.catch_warnings():
        # The loo package's p_waic > 0.4 rule may flag an outlying observation or two.
        warnings.simplefilter("ignore", WAICWarning)
        loo, waic = fit.loo(), fit.waic()
    assert np.isfinite([loo.elpd, loo.se, loo.p, waic.elpd, waic.se, waic.p]).all()
    assert abs(loo.elpd - waic.elpd) < 1.0 and abs(loo.p - waic.p) < 1.0
    assert 5 < loo.p < 15  # 2 coefficients, sigma, sd and 8 partially pooled intercepts
    assert np.asarray(loo.pareto_k).shape == (613,)
    assert "elpd_loo" in str(loo) and "elpd_waic" in str(waic)
    assert list(waic.estimates().index) == ["elpd_waic", "p_waic", "waic"]
    assert waic.waic == pytest.approx(-2 * waic.elpd_waic)


def test_large_fits_go_in_row_chunks_with_the_same_numbers(candidates, monkeypatch):
    """Above the whole-matrix limit loo() goes in row chunks through the vectorised PSIS; the
    witness is arviz-stats's loo on the whole matrix of the same fit (below the limit)."""
    from lmmbayes.workflow import compare, loglik

    fit = candidates["random intercept and slope"]
    whole = fit.loo()
    assert whole.log_weights is not None  # arviz-stats's own result
    calls = []
    draws = whole.n_samples
    monkeypatch.setattr(compare, "WHOLE_MATRIX", draws * 613 - 1)  # just too large to build whole
    monkeypatch.setattr(loglik, "CHUNK_ELEMENTS", draws * 100)  # 100 rows a chunk: 7 chunks
    real = compare.loo_pointwise
    monkeypatch.setattr(compare, "loo_pointwise", lambda ll, reff: calls.append(ll.shape) or real(ll, reff))
    chunked = fit.loo()
    assert len(calls) == 7 and chunked.log_weights is None
    assert [c[1] for c in calls] == [100] * 6 + [13]
    np.testing.assert_allclose(chunked.elpd_i.values, whole.elpd_i.values, rtol=1e-10)
    np.testing.assert_allclose(chunked.pareto_k.values, whole.pareto_k.values, rtol=1e-8, atol=1e-10)
    for name in ("elpd", "se", "p", "n_samples", "n_data_points"):
        assert getattr(chunked, name) == pytest.approx(getattr(whole, name), rel=1e-10), name
    assert "elpd_loo" in str(chunked)


def test_loo_needs_25_draws(bounce):
    tiny = quiet_fit("bounce_time ~ std_age", bounce, NO_SD, sample_prior="only", draws=20, seed=1)
    with pytest.raises(lb.LmmbayesError, match="at least 25 posterior draws.*has 20"):
        tiny.loo()


def test_waic_by_hand(candidates):
    fit = candidates["linear regression"]
    ll = fit.log_lik().reshape(-1, 613)
    lppd = logsumexp(ll, axis=0) - np.log(ll.shape[0])
    p = ll.var(axis=0, ddof=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", WAICWarning)
        waic = fit.waic()
    assert waic.elpd_waic == pytest.approx((lppd - p).sum(), rel=1e-12)
    assert waic.se_elpd_waic == pytest.approx(np.sqrt(613) * (lppd - p).std(ddof=1), rel=1e-12)


def test_random_effects_clearly_beat_the_regression(comparison):
    table = comparison
    print("\n" + table.round(2).to_string())
    assert list(table.columns) == ["elpd_diff", "se_diff", "elpd_loo", "se_elpd_loo", "p_loo", "looic",
                                   "se_looic", "n_high_k"]
    assert table["elpd_diff"].iloc[0] == 0 and table["se_diff"].iloc[0] == 0
    assert (np.diff(table["elpd_loo"].to_numpy()) <= 0).all()  # best first
    assert table.index[-1] == "linear regression"
    worst = table.loc["linear regression"]
    assert worst["elpd_diff"] < -4 * worst["se_diff"]
    for name in ("random intercept", "random intercept and slope"):
        assert table.loc[name, "elpd_loo"] - worst["elpd_loo"] > 4 * worst["se_diff"]
    np.testing.assert_allclose(table["looic"], -2 * table["elpd_loo"])


def test_se_diff_is_the_paired_pointwise_se(candidates, comparison):
    best = comparison.index[0]
    a = np.asarray(candidates[best].loo().elpd_i)
    b = np.asarray(candidates["linear regression"].loo().elpd_i)
    diff = b - a
    row = comparison.loc["linear regression"]
    assert row["elpd_diff"] == pytest.approx(diff.sum(), rel=1e-10)
    assert row["se_diff"] == pytest.approx(np.sqrt(613) * diff.std(ddof=1), rel=1e-10)


def test_loo_compare_takes_a_dict_and_prints_whole(candidates, comparison):
    a, b = candidates["random intercept"], candidates["linear regression"]
    table = lb.loo_compare({"ri": a, "lm": b})
    assert list(table.index) == ["ri", "lm"]
    pd.testing.assert_series_equal(table.loc["lm"], comparison.loc["linear regression"], check_names=False)
    with pytest.raises(lb.LmmbayesError, match="either as the keys of a dict or with names="):
        lb.loo_compare({"ri": a, "lm": b}, names=["x", "y"])
    with pytest.raises(lb.LmmbayesError, match="at least two"):
        lb.loo_compare({"ri": a})
    # every column printed, however narrow pandas's display is set
    with pd.option_context("display.width", 30, "display.max_columns", 3):
        text = repr(table)
    for column in table.columns:
        assert column in text
    assert "se_diff" in text and "..." not in text
    assert "se_diff" in repr(comparison)


def test_loo_compare_defaults_and_errors(candidates, bounce):
    a, b = candidates["random intercept"], candidates["linear regression"]
    assert list(lb.loo_compare(a, b).index) == [a.formula, b.formula]
    assert list(lb.loo_compare([a, b]).index) == [a.formula, b.formula]
    assert list(lb.loo_compare(a, a).index) == [f"{a.formula} [1]", f"{a.formula} [2]"]
    with pytest.raises(lb.LmmbayesError, match="at least two"):
        lb.loo_compare(a)
    with pytest.raises(lb.LmmbayesError, match="one distinct string per fit"):
        lb.loo_compare(a, b, names=["x", "x"])
    with pytest.raises(lb.LmmbayesError, match="Fit objects"):
        lb.loo_compare(a, "b")
    other = quiet_fit("bounce_time ~ std_age", bounce.iloc[:500], NO_SD, sample_prior="only", draws=50, seed=1)
    with pytest.raises(lb.DataError, match=r"fitted to different data \(500 vs 613 observations"):
        lb.loo_compare(a, other)
    shifted = quiet_fit("bounce_time ~ std_age", bounce.assign(bounce_time=bounce["bounce_time"] + 1), NO_SD,
                        sample_prior="only", draws=50, seed=1)
    with pytest.raises(lb.DataError, match="different responses"):
        lb.loo_compare(a, shifted)
    # the same values in another row order are different data for pointwise comparison
    swapped = bounce.iloc[np.r_[1, 0, 2:613]]
    reordered = quiet_fit("bounce_time ~ std_age", swapped, NO_SD, sample_prior="only", draws=50, seed=1)
    with pytest.raises(lb.DataError, match="different responses"):
        lb.loo_compare(a, reordered)


def test_pareto_k_warning_names_the_model(bounce):
    # Draws from the prior explain the data badly: some observations dominate their weights.
    prior_only = quiet_fit("bounce_time ~ std_age", bounce, NO_SD, sample_prior="only", draws=100, seed=1)
    with pytest.warns(ParetoKWarning, match=r"Model 'bounce_time ~ std_age': \d+ of 613 observations have "
                                            r"Pareto k > 0.7"):
        prior_only.loo()
    assert issubclass(ParetoKWarning, lb.LmmbayesWarning)
    assert lb.ParetoKWarning is ParetoKWarning and issubclass(WAICWarning, lb.LmmbayesWarning)


def test_bayes_r2(candidates):
    r2 = {name: fit.bayes_r2() for name, fit in candidates.items()}
    for table in r2.values():
        assert list(table.index) == ["R2"] and list(table.columns) == ["Estimate", "Est.Error", "Q2.5", "Q97.5"]
        assert 0 < table.loc["R2", "Q2.5"] <= table.loc["R2", "Q97.5"] < 1
    assert r2["random intercept"].loc["R2", "Estimate"] > r2["linear regression"].loc["R2", "Estimate"] + 0.3
    fit = candidates["random intercept"]
    residual = fit.bayes_r2(method="residual").loc["R2", "Estimate"]
    assert residual == pytest.approx(r2["random intercept"].loc["R2", "Estimate"], abs=0.05)
    # without the county intercepts the model explains little (the marginal R2)
    assert fit.bayes_r2(include_groups=False).loc["R2", "Estimate"] < 0.5 * r2["random intercept"].loc["R2", "Estimate"]
    with pytest.raises(lb.LmmbayesError, match="'model' or 'residual'"):
        fit.bayes_r2(method="loo")
