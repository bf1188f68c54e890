"""External witnesses: recovery of known parameters and lme4's published estimates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import quiet_fit

import lmmbayes as lb


def test_95_intervals_cover_simulated_truth(simulated, simulated_fit):
    _, truth = simulated
    table = simulated_fit.posterior_summary()
    for name, value in truth.items():
        if name == "r":
            continue
        lo, hi = table.loc[name, ["Q2.5", "Q97.5"]]
        assert lo <= value <= hi, f"{name}: truth {value} outside [{lo:.3f}, {hi:.3f}]"


def test_random_effects_recover_the_simulated_effects(simulated, simulated_fit):
    """The true effects of 30 groups (kept by the simulation): posterior means track them and 95%
    intervals cover them. A scrambled level order or a wrong scale fails both."""
    _, truth = simulated
    ranef = simulated_fit.ranef()["g"]
    for term in ("Intercept", "x"):
        est = ranef.xs(term, level="term")
        true = truth["r"].loc[est.index, term]
        assert np.corrcoef(est["Estimate"], true)[0, 1] > (0.9 if term == "Intercept" else 0.75), term
        covered = ((est["Q2.5"] <= true) & (true <= est["Q97.5"])).mean()
        assert covered >= 0.8, f"{term}: 95% intervals cover {covered:.0%} of the true effects"


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


def _scaled(seed, scale):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(12), 15)
    x = rng.normal(size=g.size)
    y = 3.0 + 2.0 * x + rng.normal(0, 1.0, 12)[g] + rng.normal(0, 0.5, g.size)
    return pd.DataFrame({"y": y, "x": x * scale, "g": [f"g{k}" for k in g]})


# Each joint case compiles a model: `make test` runs the joint engine at the largest scale (the plan's
# standardisation, which both engines share, is covered at every scale by the collapsed cases); the other
# joint cases are in `make validate`.
@pytest.mark.parametrize(("method", "scale"), [
    ("collapsed", 1e9), ("collapsed", 1e-9), ("collapsed", 1e12), ("joint", 1e12),
    *(pytest.param("joint", s, marks=pytest.mark.slow) for s in (1e9, 1e-9))])
def test_predictors_on_extreme_scales(method, scale):
    """A predictor in units of 1e9 or 1e-9: the slope is 2 / scale, found without divergences on either engine."""
    data = _scaled(8, scale)
    fit = quiet_fit("y ~ x + (1 | g)", data, chains=2, draws=300, tune=300, seed=8, method=method)
    table = fit.posterior_summary()
    lo, hi = table.loc["b_x", ["Q2.5", "Q97.5"]] * scale
    assert lo < 2.0 < hi and hi - lo < 0.5
    assert table.loc["sigma", "Estimate"] == pytest.approx(0.5, rel=0.2)
    assert fit.sampler_report.divergences <= 2


def test_a_positive_prior_on_the_intercept_changes_nothing_else():
    """gamma on the Intercept of a response around 5e6 (once: standardisation switched off, slope halved)."""
    rng = np.random.default_rng(9)
    x = rng.normal(size=300)
    data = pd.DataFrame({"y": 5e6 + 2e4 * x + rng.normal(0, 1e4, 300), "x": x})
    fits = [quiet_fit("y ~ x", data, priors, chains=2, draws=400, tune=400, seed=9) for priors in
            ([lb.prior("gamma(2, 1e-6)", class_="Intercept")], [lb.prior("normal(5e6, 1e7)", class_="Intercept")])]
    for fit in fits:
        table = fit.posterior_summary()
        for name, truth in (("b_x", 2e4), ("sigma", 1e4), ("b_Intercept", 5e6)):
            lo, hi = table.loc[name, ["Q2.5", "Q97.5"]]
            assert lo < truth < hi, f"{name}: {truth} outside [{lo:.4g}, {hi:.4g}]"


def test_beta_and_custom_priors_keep_the_model(simulated):
    """A custom prior equal to a built-in one gives the built-in's posterior; a beta prior on sd still covers truth."""
    import pymc as pm

    data, truth = simulated
    data = data.assign(y=data["y"] / 3)  # sd's within (0, 1), where beta(2, 2) lives
    lb.register_distribution("same_normal", lambda name, mu, s, **kw: pm.Normal(name, mu, s, **kw), n_args=2)
    kw = dict(chains=2, draws=500, tune=500, seed=2)
    custom = quiet_fit("y ~ x + cat + (1 + x | g)", data, [lb.prior("same_normal(0, 10)", class_="b"),
                                                     lb.prior("beta(2, 2)", class_="sd", ub=1)], **kw)
    builtin = quiet_fit("y ~ x + cat + (1 + x | g)", data, [lb.prior("normal(0, 10)", class_="b"),
                                                      lb.prior("beta(2, 2)", class_="sd", ub=1)], **kw)
    a, b = custom.posterior_summary(), builtin.posterior_summary()
    for name in ("b_x", "sigma", "sd_g__Intercept", "sd_g__x"):
        assert a.loc[name, "Estimate"] == pytest.approx(b.loc[name, "Estimate"], abs=0.5 * b.loc[name, "Est.Error"])
    for name in ("b_x", "sd_g__Intercept", "sd_g__x", "sigma"):
        lo, hi = a.loc[name, ["Q2.5", "Q97.5"]] * 3
        assert lo < truth[name] < hi, name


@pytest.mark.parametrize("method", ["collapsed", "joint"])
def test_an_offset_is_fixed_at_one(method, simulated):
    """y ~ x + offset(o) is y - o ~ x: the same posterior, and no coefficient for o (once: b_offseto)."""
    data, _ = simulated
    o = np.linspace(-2, 5, len(data))
    with_offset = quiet_fit("y ~ x + offset(o) + (1 | g)", data.assign(y=data["y"] + o, o=o), chains=2, draws=500,
                            tune=500, seed=3, method=method)
    without = quiet_fit("y ~ x + (1 | g)", data, chains=2, draws=500, tune=500, seed=3, method=method)
    assert list(with_offset.fixef().index) == ["Intercept", "x"]
    a, b = with_offset.posterior_summary(), without.posterior_summary()
    for name in ("b_Intercept", "b_x", "sigma", "sd_g__Intercept"):
        assert a.loc[name, "Estimate"] == pytest.approx(b.loc[name, "Estimate"], abs=3 * b.loc[name, "Est.Error"] / 4)
