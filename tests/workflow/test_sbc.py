"""Simulation-based calibration, reduced for CI (the full run is `make validate`)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import lmmbayes as lb

PRIORS = [lb.prior("normal(0, 1)", class_="b"), lb.prior("normal(0, 1)", class_="Intercept"),
          lb.prior("normal(0, 1)", class_="sd"), lb.prior("normal(0, 1)", class_="sigma")]


@pytest.fixture(scope="module")
def sbc_result():
    rng = np.random.default_rng(1)
    data = pd.DataFrame({"x": rng.normal(size=80), "g": np.repeat([f"g{i}" for i in range(8)], 10),
                         "y": 0.0})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lb.simulation_based_calibration("y ~ x + (1 | g)", data, PRIORS, n_sims=CI_SIMS,
                                               draws=200, tune=200, thin=2, seed=3)


#: The CI configuration: 80 simulations, 100 draws each; a parameter fails at spread p < 0.05 / 4 or
#: chi-square p < 0.001. Its power, shown by `make validate` (docs/validation.md): a posterior 0.7x too
#: narrow is caught about 88% of the time, with under 5% false alarms over the 4 parameters.
CI_SIMS, CI_LEVEL = 80, 0.05 / 4


def test_ranks_are_uniform(sbc_result):
    table = sbc_result.uniformity(bins=5)
    assert list(table.index) == ["b_Intercept", "b_x", "sd_g__Intercept", "sigma"]
    assert (table["p_value"] > 0.001).all(), table
    assert (table["spread_p"] > CI_LEVEL).all(), table


def test_ranks_and_coverage_shapes(sbc_result):
    assert sbc_result.ranks.shape == (CI_SIMS, 4)
    assert sbc_result.ranks.min() >= 0 and sbc_result.ranks.max() <= sbc_result.n_draws
    # pooled over parameters, 90% intervals cover about 90% of the 160 truths
    assert 0.80 <= sbc_result.covered.mean() <= 0.97


@pytest.fixture(scope="module")
def crossed_sbc():
    """Crossed intercepts on the collapsed engine (every effect integrated out by the C kernel's dense
    Cholesky, then drawn exactly), through the whole of lb.fit per data set: no compile, about 0.3 s each."""
    rng = np.random.default_rng(2)
    data = pd.DataFrame({"x": rng.normal(size=96), "g": np.repeat([f"g{i}" for i in range(12)], 8),
                         "h": rng.choice([f"h{i}" for i in range(6)], size=96), "y": 0.0})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lb.simulation_based_calibration("y ~ x + (1 | g) + (1 | h)", data, PRIORS, n_sims=CI_SIMS,
                                               draws=200, tune=200, thin=2, seed=4, method="collapsed")


@pytest.fixture(scope="module")
def partial_sbc():
    """Crossed intercepts with more effects than the dense route takes (120 levels of g integrated out, 6 of h
    sampled): the C kernel's sampler coordinates (β decoupled, h's effects rotated, centred or not as each
    simulated data set's moment estimates decide), through the whole of lb.fit per data set."""
    rng = np.random.default_rng(3)
    data = pd.DataFrame({"x": rng.normal(size=360), "g": np.repeat([f"g{i}" for i in range(120)], 3),
                         "h": np.tile([f"h{i}" for i in range(6)], 60), "y": 0.0})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lb.simulation_based_calibration("y ~ x + (1 | g) + (1 | h)", data, PRIORS, n_sims=CI_SIMS,
                                               draws=200, tune=200, thin=2, seed=6, method="collapsed")


@pytest.mark.parametrize("route", ["crossed_sbc", "partial_sbc"])
def test_crossed_collapsed_ranks_are_uniform(route, request):
    """Both crossed routes of the collapsed engine: every effect integrated out, and the partly collapsed one."""
    result = request.getfixturevalue(route)
    table = result.uniformity(bins=5)
    assert list(table.index) == ["b_Intercept", "b_x", "sd_g__Intercept", "sd_h__Intercept", "sigma"]
    assert (table["p_value"] > 0.001).all(), table
    assert (table["spread_p"] > 0.05 / 5).all(), table
    assert 0.80 <= result.covered.mean() <= 0.97


def test_miscalibration_is_detected():
    """The test has power: ranks from a posterior that is too narrow are U-shaped."""
    rng = np.random.default_rng(0)
    truths = rng.normal(size=200)
    draws = rng.normal(scale=0.3, size=(200, 100))  # overconfident: ignores the truth's spread
    ranks = (draws < truths[:, None]).sum(axis=1)
    from lmmbayes.workflow.sbc import SBCResult

    fake = SBCResult(("p",), ranks[:, None], 100, np.zeros((200, 1), bool), 0.9, np.zeros(200))
    assert fake.uniformity().loc["p", "p_value"] < 1e-6
    assert fake.uniformity().loc["p", "spread_z"] > 5  # U-shaped: too narrow


def test_spread_test_is_calibrated_and_sees_both_directions():
    """Exact uniform ranks give spread p-values that are uniform; too wide gives z < 0."""
    from lmmbayes.workflow.sbc import SBCResult

    rng = np.random.default_rng(5)
    n, L = CI_SIMS, 100
    ps = []
    for _ in range(400):
        z = rng.normal(size=n)
        ranks = (rng.normal(size=(n, L)) < z[:, None]).sum(axis=1)
        fake = SBCResult(("p",), ranks[:, None], L, np.zeros((n, 1), bool), 0.9, np.zeros(n))
        ps.append(fake.uniformity(bins=5).loc["p", "spread_p"])
    assert 0.02 < np.mean(np.array(ps) < 0.05) < 0.09
    z = rng.normal(size=n)
    wide = (rng.normal(scale=1.6, size=(n, L)) < z[:, None]).sum(axis=1)
    fake = SBCResult(("p",), wide[:, None], L, np.zeros((n, 1), bool), 0.9, np.zeros(n))
    assert fake.uniformity(bins=5).loc["p", "spread_z"] < -3


def test_flat_priors_are_refused():
    data = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0], "y": 0.0})
    with pytest.raises(lb.PriorError, match="proper priors"):
        lb.simulation_based_calibration("y ~ x", data, n_sims=2)


def test_collapsed_engine_is_calibrated_on_a_random_slope_model():
    """The collapsed engine through lb.fit: uniform ranks (chi-square over 5 bins) on a small
    correlated random-slope model; `make validate` runs 200 simulations of it."""
    rng = np.random.default_rng(2)
    data = pd.DataFrame({"x": rng.normal(size=60), "g": np.repeat([f"g{i}" for i in range(6)], 10),
                         "y": 0.0})
    priors = PRIORS + [lb.prior("lkj(2)", class_="cor")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = lb.simulation_based_calibration("y ~ x + (1 + x | g)", data, priors, n_sims=40, draws=200,
                                                 tune=200, thin=2, seed=5, method="collapsed")
    table = result.uniformity(bins=5)
    assert list(table.index) == ["b_Intercept", "b_x", "sd_g__Intercept", "sd_g__x", "cor_g__Intercept__x",
                                 "sigma"]
    assert (table["p_value"] > 0.001).all(), table
    assert 0.80 <= result.covered.mean() <= 0.97


def test_the_collapsed_glmm_engine_is_calibrated_with_precomputed_nodes():
    """SBC of the precomputed nodes (bernoulli, correlated slope, 24 groups of 40 rows, group SDs near 1, where
    the pilot takes them for most simulated data sets): uniform ranks and coverage, through the whole lb.fit.
    `make validate` runs 200 simulations of the same shape."""
    rng = np.random.default_rng(6)
    data = pd.DataFrame({"x": rng.normal(size=960), "g": np.repeat([f"g{i}" for i in range(24)], 40), "y": 0})
    priors = [lb.prior("normal(0, 1)", class_="b"), lb.prior("normal(0, 1)", class_="Intercept"),
              lb.prior("normal(1, 0.25)", class_="sd"), lb.prior("lkj(2)", class_="cor")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = lb.simulation_based_calibration("y ~ x + (1 + x | g)", data, priors, n_sims=40, draws=200,
                                                 tune=200, thin=2, seed=5, family="bernoulli", method="collapsed")
    assert np.mean(["precomputed" in r for r in result.rules]) >= 0.5, result.rules
    table = result.uniformity(bins=5)
    assert list(table.index) == ["b_Intercept", "b_x", "sd_g__Intercept", "sd_g__x", "cor_g__Intercept__x"]
    assert (table["p_value"] > 0.001).all() and (table["spread_p"] > CI_LEVEL).all(), table
    assert 0.80 <= result.covered.mean() <= 0.97


def test_unknown_sbc_method_is_an_error():
    data = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0], "g": ["a", "a", "b", "b"], "y": 0.0})
    with pytest.raises(lb.FitError, match=r"Unknown SBC method 'fast'.*\['joint', 'collapsed'\]"):
        lb.simulation_based_calibration("y ~ x + (1 | g)", data, PRIORS, n_sims=2, method="fast")


def test_a_count_family_is_calibrated():
    """SBC through a non-Gaussian family (poisson, joint engine): the family's random draws, its log
    density and the engine agree. Reduced (40 simulations; every family with 200 in `make validate`)."""
    rng = np.random.default_rng(4)
    data = pd.DataFrame({"x": rng.normal(size=60), "g": np.repeat([f"g{i}" for i in range(6)], 10), "y": 0})
    priors = [lb.prior("normal(0, 0.5)", class_="b"), lb.prior("normal(1, 0.5)", class_="Intercept"),
              lb.prior("normal(0, 0.5)", class_="sd")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = lb.simulation_based_calibration("y ~ x + (1 | g)", data, priors, n_sims=40, draws=200, tune=200,
                                                 thin=2, seed=5, family="poisson")
    table = result.uniformity(bins=5)
    assert list(table.index) == ["b_Intercept", "b_x", "sd_g__Intercept"]
    assert (table["p_value"] > 0.001).all() and (table["spread_p"] > CI_LEVEL).all(), table


@pytest.mark.parametrize("family", ["bernoulli", "gamma"])
def test_the_collapsed_glmm_engine_is_calibrated(family):
    """SBC of the collapsed engine's quadrature (bernoulli, the family where approximations break first; gamma,
    whose shape is sampled with the rest) through the whole lb.fit: uniform ranks and coverage. Reduced (40
    simulations); `make validate` runs 200 for bernoulli, binomial, poisson, negbinomial and gamma, with random
    intercepts and correlated slopes."""
    rng = np.random.default_rng(6)
    data = pd.DataFrame({"x": rng.normal(size=60), "g": np.repeat([f"g{i}" for i in range(12)], 5),
                         "y": 1.0 if family == "gamma" else 0})
    priors = [lb.prior("normal(0, 1)", class_="b"), lb.prior("normal(0, 1)", class_="Intercept"),
              lb.prior("normal(0, 1.5)", class_="sd")]
    if family == "gamma":  # proper, moderate (brms's gamma(0.01, 0.01) would simulate shapes of 1e-30)
        priors.append(lb.prior("gamma(4, 1)", class_="shape"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = lb.simulation_based_calibration("y ~ x + (1 | g)", data, priors, n_sims=40, draws=200, tune=200,
                                                 thin=2, seed=5, family=family, method="collapsed")
    table = result.uniformity(bins=5)
    assert list(table.index) == ["b_Intercept", "b_x", "sd_g__Intercept", *(["shape"] if family == "gamma" else [])]
    assert (table["p_value"] > 0.001).all() and (table["spread_p"] > CI_LEVEL).all(), table
    assert 0.80 <= result.covered.mean() <= 0.97


def test_coverage_counts_the_ranks_a_calibrated_interval_holds():
    """A correct posterior's rank is uniform on 0..L: the central 90% interval of 100 draws holds 91 of the 101
    ranks, 0.90; interpolated quantiles (np.quantile's 5% and 95%) held 0.88, which read as under-coverage."""
    from lmmbayes.workflow.sbc import covers

    ranks = np.arange(101)
    assert covers(ranks, 100, 0.9).mean() == pytest.approx(91 / 101)
    assert covers(np.arange(1001), 1000, 0.5).mean() == pytest.approx(501 / 1001)
    rng = np.random.default_rng(0)
    draws = rng.normal(size=(20_000, 100))
    truth = rng.normal(size=20_000)  # exchangeable with the draws: a correct posterior
    lo, hi = np.quantile(draws, [0.05, 0.95], axis=1)
    assert ((lo <= truth) & (truth <= hi)).mean() == pytest.approx(0.882, abs=0.006)
    assert covers((draws < truth[:, None]).sum(1), 100, 0.9).mean() == pytest.approx(0.901, abs=0.006)


def test_the_nested_glmm_quadrature_is_calibrated():
    """SBC of the nested quadrature (bernoulli, two nested factors of one term) through the whole lb.fit: uniform
    ranks and coverage. Reduced (40 simulations); `make validate` runs 200 for bernoulli and poisson."""
    rng = np.random.default_rng(8)
    data = pd.DataFrame({"x": rng.normal(size=96), "school": np.repeat([f"s{i}" for i in range(8)], 12),
                         "class": np.tile(np.repeat([f"c{i}" for i in range(3)], 4), 8), "y": 0})
    priors = [lb.prior("normal(0, 1)", class_="b"), lb.prior("normal(0, 1)", class_="Intercept"),
              lb.prior("normal(0, 1)", class_="sd")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = lb.simulation_based_calibration("y ~ x + (1 | school/class)", data, priors, n_sims=40, draws=200,
                                                 tune=200, thin=2, seed=5, family="bernoulli", method="collapsed")
    assert all("within each" in rule for rule in result.rules)  # the nested rule ran every time
    table = result.uniformity(bins=5)
    assert list(table.index) == ["b_Intercept", "b_x", "sd_school__Intercept", "sd_school:class__Intercept"]
    assert (table["p_value"] > 0.001).all() and (table["spread_p"] > CI_LEVEL).all(), table
    assert 0.80 <= result.covered.mean() <= 0.97
