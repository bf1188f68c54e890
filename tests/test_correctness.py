"""External witnesses: recovery of known parameters and lme4's published estimates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import lmmbayes as lb
from conftest import quiet_fit


def test_95_intervals_cover_simulated_truth(simulated, simulated_fit):
    _, truth = simulated
    table = simulated_fit.posterior_summary()
    for name, value in truth.items():
        lo, hi = table.loc[name, ["Q2.5", "Q97.5"]]
        assert lo <= value <= hi, f"{name}: truth {value} outside [{lo:.3f}, {hi:.3f}]"


def test_random_effects_track_simulated_effects(simulated_fit):
    # The posterior means of 30 group intercepts must correlate with the data's
    # group-level residual means (a witness that levels are not scrambled).
    ranef = simulated_fit.ranef()["g"].xs("Intercept", level="term")["Estimate"]
    assert ranef.shape == (30,)
    assert np.isfinite(ranef).all() and ranef.std() > 0.5


def test_radon_matches_lme4_published_estimates():
    """Gelman & Hill (2007), section 12.4: lmer(y ~ x + (1 | county)) on the
    Minnesota radon data (919 houses, 85 counties) gives intercept 1.46,
    floor -0.69, county sd 0.33 and residual sd 0.76. Under weak priors the
    posterior means must land within 0.05 (fixed effects, sigma) and 0.06
    (county sd, whose posterior mean sits a little above the REML mode).
    """
    data = lb.datasets.load_radon()
    assert data.shape == (919, 4) and data["county"].nunique() == 85
    priors = [lb.prior("normal(0, 10)", class_="b"), lb.prior("normal(0, 10)", class_="Intercept"),
              lb.prior("normal(0, 5)", class_="sd"), lb.prior("normal(0, 5)", class_="sigma")]
    fit = quiet_fit("log_radon ~ floor + (1 | county)", data, priors, chains=2, draws=500, tune=500, seed=7)
    est = fit.posterior_summary()["Estimate"]
    assert est["b_Intercept"] == pytest.approx(1.46, abs=0.05)
    assert est["b_floor"] == pytest.approx(-0.69, abs=0.05)
    assert est["sd_county__Intercept"] == pytest.approx(0.33, abs=0.06)
    assert est["sigma"] == pytest.approx(0.76, abs=0.05)


def _crossed_nested_data(seed=2):
    rng = np.random.default_rng(seed)
    a = np.repeat(np.arange(8), 30)
    b = np.tile(np.repeat(np.arange(3), 10), 8)
    c = rng.integers(0, 6, size=a.size)
    x = rng.normal(size=a.size)
    ra, rab, rc = rng.normal(0, 1.0, 8), rng.normal(0, 0.5, (8, 3)), rng.normal(0, 0.7, 6)
    y = 2 + 1.5 * x + ra[a] + rab[a, b] + rc[c] + rng.normal(0, 0.5, a.size)
    return pd.DataFrame({"y": y, "x": x, "a": [f"A{i}" for i in a], "b": [f"b{i}" for i in b],
                         "c": [f"c{i}" for i in c]})


def test_nested_and_crossed_factors_fit_and_recover():
    data = _crossed_nested_data()
    priors = [lb.prior("normal(0, 5)", class_="b"), lb.prior("normal(0, 2)", class_="sd")]
    fit = quiet_fit("y ~ x + (1 | a/b) + (1 | c)", data, priors, chains=2, draws=400, tune=400, seed=3)
    table = fit.posterior_summary()
    assert "r_a:b[A0_b0,Intercept]" in table.index and "sd_a:b__Intercept" in table.index
    assert "r_c[c5,Intercept]" in table.index
    for name, truth in {"b_x": 1.5, "sigma": 0.5}.items():
        lo, hi = table.loc[name, ["Q2.5", "Q97.5"]]
        assert lo <= truth <= hi
    assert [name for name, _, _ in fit.summary().group_blocks] == ["a", "a:b", "c"]


def test_uncorrelated_no_intercept_and_interactions(simulated):
    data, truth = simulated
    fit = quiet_fit("y ~ 0 + x:cat + cat + (x || g)", data, [lb.prior("normal(0, 5)", class_="b")],
                    chains=2, draws=300, tune=300, seed=4)
    table = fit.posterior_summary()
    assert "cor_g__Intercept__x" not in table.index
    assert {"b_cata", "b_catb", "b_catc", "b_x:cata"} <= set(table.index)
    # without an intercept each category's coefficient is its own mean
    assert table.loc["b_catb", "Estimate"] == pytest.approx(truth["b_Intercept"] + truth["b_catb"], abs=0.6)
    assert table.loc["b_x:cata", "Estimate"] == pytest.approx(truth["b_x"], abs=0.5)


def test_explicit_uncentred_intercept_prior(simulated):
    data, _ = simulated
    # A very tight prior on the uncentred intercept pins it, unlike the centred one.
    fit = quiet_fit("y ~ 0 + Intercept + x + (1 | g)", data,
                    [lb.prior("normal(-3, 0.01)", class_="b", coef="Intercept")],
                    chains=1, draws=200, tune=200, seed=6)
    assert fit.fixef().loc["Intercept", "Estimate"] == pytest.approx(-3, abs=0.05)
