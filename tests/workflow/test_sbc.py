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
        return lb.simulation_based_calibration("y ~ x + (1 | g)", data, PRIORS, n_sims=40,
                                               draws=200, tune=200, thin=2, seed=3)


def test_ranks_are_uniform(sbc_result):
    table = sbc_result.uniformity(bins=5)
    assert list(table.index) == ["b_Intercept", "b_x", "sd_g__Intercept", "sigma"]
    # 4 tests at once: a p-value below 0.001 would be a real miscalibration.
    assert (table["p_value"] > 0.001).all(), table


def test_ranks_and_coverage_shapes(sbc_result):
    assert sbc_result.ranks.shape == (40, 4)
    assert sbc_result.ranks.min() >= 0 and sbc_result.ranks.max() <= sbc_result.n_draws
    # pooled over parameters, 90% intervals cover about 90% of the 160 truths
    assert 0.80 <= sbc_result.covered.mean() <= 0.97


def test_miscalibration_is_detected():
    """The test has power: ranks from a posterior that is too narrow are U-shaped."""
    rng = np.random.default_rng(0)
    truths = rng.normal(size=200)
    draws = rng.normal(scale=0.3, size=(200, 100))  # overconfident: ignores the truth's spread
    ranks = (draws < truths[:, None]).sum(axis=1)
    from lmmbayes.workflow.sbc import SBCResult

    fake = SBCResult(("p",), ranks[:, None], 100, np.zeros((200, 1), bool), 0.9, np.zeros(200))
    assert fake.uniformity().loc["p", "p_value"] < 1e-6


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


def test_unknown_sbc_method_is_an_error():
    data = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0], "g": ["a", "a", "b", "b"], "y": 0.0})
    with pytest.raises(lb.FitError, match=r"Unknown SBC method 'fast'.*\['joint', 'collapsed'\]"):
        lb.simulation_based_calibration("y ~ x + (1 | g)", data, PRIORS, n_sims=2, method="fast")
