"""LOO, WAIC, loo_compare, Bayes R2 and pp_check through the public API."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import lmmbayes as lb  # noqa: E402
from conftest import TUTORIAL_PRIORS, quiet_fit  # noqa: E402

NO_SD = [p for p in TUTORIAL_PRIORS if p.class_ != "sd"]


@pytest.fixture(scope="module")
def candidates(bounce, bounce_slope_fit):
    kw = dict(chains=2, draws=400, tune=400, seed=11)
    linear = quiet_fit("bounce_time ~ std_age", bounce, NO_SD, **kw)
    intercept = quiet_fit("bounce_time ~ std_age + (1 | county)", bounce, TUTORIAL_PRIORS, **kw)
    return {"linear regression": linear, "random intercept": intercept, "random slope": bounce_slope_fit}


def test_log_lik_matches_normal_density(candidates):
    from scipy.stats import norm

    fit = candidates["linear regression"]
    ll = fit.log_lik()
    eta = fit.posterior_epred()
    sigma = fit.posterior["sigma"].values.reshape(-1, 1)
    np.testing.assert_allclose(ll.reshape(-1, ll.shape[-1]), norm.logpdf(fit.design.y, eta, sigma), rtol=1e-10)
    np.testing.assert_allclose(fit.log_lik(chunk_size=7), ll)


def test_loo_and_waic_agree(candidates):
    fit = candidates["random intercept"]
    loo, waic = fit.loo(), fit.waic()
    assert np.isfinite([loo.elpd, loo.se, loo.p]).all()
    assert abs(loo.elpd - waic.elpd) < 2
    assert 3 < loo.p < 15  # ~ 2 fixed effects, sigma, sd and 8 partially pooled intercepts
    assert "elpd_loo" in str(loo) and loo.pareto_k.shape == (613,)


def test_random_intercepts_clearly_beat_linear_regression(candidates):
    table = lb.loo_compare(*candidates.values(), names=list(candidates))
    assert list(table.columns) == ["elpd_diff", "se_diff", "elpd_loo", "se_elpd_loo", "p_loo", "n_high_k"]
    assert table["elpd_diff"].iloc[0] == 0
    assert table.index[-1] == "linear regression"
    worst = table.loc["linear regression"]
    assert worst["elpd_diff"] < -4 * worst["se_diff"]


def test_loo_compare_errors(candidates, simulated_fit):
    with pytest.raises(lb.LmmbayesError, match="at least two"):
        lb.loo_compare(candidates["random intercept"])
    with pytest.raises(lb.LmmbayesError, match="different data"):
        lb.loo_compare(candidates["random intercept"], simulated_fit)
    with pytest.raises(lb.LmmbayesError, match="one distinct name"):
        lb.loo_compare(*candidates.values(), names=["a", "a", "b"])


def test_bayes_r2(candidates):
    r2 = {k: f.bayes_r2().loc["R2", "Estimate"] for k, f in candidates.items()}
    assert all(0 < v < 1 for v in r2.values())
    assert r2["random intercept"] > r2["linear regression"] + 0.3


@pytest.mark.parametrize(("kind", "axes", "lines"), [("dens_overlay", 1, 20 + 2), ("hist", 9, None), ("stat", 1, 1)])
def test_pp_check(candidates, kind, axes, lines):
    fig = candidates["random intercept"].pp_check(kind, ndraws=20, seed=1)
    assert len(fig.axes) == axes
    if lines is not None:
        assert len(fig.axes[0].lines) == lines
    plt.close(fig)


def test_pp_check_errors(candidates):
    with pytest.raises(lb.LmmbayesError, match="dens_overlay"):
        candidates["random intercept"].pp_check("violin")
    with pytest.raises(lb.LmmbayesError, match="ndraws"):
        candidates["random intercept"].pp_check(ndraws=0)
