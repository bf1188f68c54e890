"""The vectorised PSIS-LOO equals arviz-stats's per-observation PSIS (the witness)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from arviz_stats.base import array_stats

from lmmbayes.workflow.psis import gpd_fit, loo_pointwise, tail_length


def witness(ll: np.ndarray, n_chain: int, r_eff: float) -> tuple[np.ndarray, ...]:
    """arviz-stats on (observations, chain, draw), the draws split into chains in order."""
    by_chain = ll.T.reshape(ll.shape[1], n_chain, -1)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return tuple(np.asarray(a) for a in array_stats.loo(by_chain, chain_axis=-2, draw_axis=-1, r_eff=r_eff))


def log_lik(n_draws: int, n_obs: int, seed: int, heavy: bool = False) -> np.ndarray:
    """A normal model's pointwise log-likelihood, with outlying observations if ``heavy``."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(0, 0.3, size=(n_draws, 1)) + rng.normal(0, 0.1, size=(n_draws, n_obs))
    sigma = np.exp(rng.normal(0, 0.1, size=(n_draws, 1)))
    y = rng.normal(size=n_obs)
    if heavy:
        y[: n_obs // 3] *= 8  # outliers: long-tailed importance ratios, Pareto k well above 0.7
    return -0.5 * ((y - mu) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)


@pytest.mark.parametrize("n_draws, n_chain, r_eff, heavy", [
    (4000, 4, 0.83, False),   # the usual case: tail of 3 sqrt(S / r_eff) draws
    (4000, 4, 0.9, True),     # Pareto k above 0.7 for the outliers
    (1000, 2, 1.0, True),
    (100, 1, 1.0, False),     # few effective draws: tail of S / 5
    (200, 2, 0.4, True),
])
def test_equals_arviz_stats_for_every_observation(n_draws, n_chain, r_eff, heavy):
    ll = log_lik(n_draws, 600, seed=n_draws + int(heavy), heavy=heavy)  # 600 > one block of 256
    elpd, k, p = loo_pointwise(ll, r_eff)
    want_elpd, want_k, want_p = witness(ll, n_chain, r_eff)
    np.testing.assert_allclose(elpd, want_elpd, rtol=1e-10)
    np.testing.assert_allclose(k, want_k, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(p, want_p, rtol=1e-7, atol=1e-10)
    if heavy:
        assert (k > 0.7).any() and (k < 0.5).any()


def test_tail_length_follows_the_two_rules():
    assert tail_length(4000, 1.0) == int(3 * np.sqrt(4000))
    assert tail_length(4000, 0.25) == int(3 * np.sqrt(16000))
    assert tail_length(200, 1.0) == 40


def test_gpd_fit_recovers_the_shape_of_pareto_draws():
    """An independent check of the fit: exceedances drawn from a generalised Pareto with k = 0.3."""
    rng = np.random.default_rng(2)
    k_true, sigma_true, m = 0.3, 2.0, 5000
    x = np.sort(sigma_true * ((1 - rng.uniform(size=(3, m))) ** -k_true - 1) / k_true, axis=1)
    k, sigma = gpd_fit(x)
    shrunk = (m * k_true + 5) / (m + 10)
    np.testing.assert_allclose(k, shrunk, atol=0.04)
    np.testing.assert_allclose(sigma, sigma_true, rtol=0.08)


def test_a_tail_far_from_pareto_is_not_smoothed():
    """First quartile equal to the minimum: k is NaN and the raw weights stand (as arviz-stats)."""
    x = np.zeros((2, 40))
    x[0, -3:] = [1.0, 2.0, 3.0]
    x[1] = np.linspace(0.1, 4, 40)
    k, sigma = gpd_fit(x)
    assert np.isnan(k[0]) and np.isnan(sigma[0]) and np.isfinite(k[1])


def test_too_few_draws_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 25 draws"):
        loo_pointwise(np.zeros((20, 3)))
