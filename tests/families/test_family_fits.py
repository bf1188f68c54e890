"""Every family fitted through the public API on data simulated from it (the truth is kept).

One small random-intercept fit per family, shared by the tests of this file.
Sizes: 12 groups x 15 rows, 2 chains x 250 draws. The fixed seed makes each
check deterministic; the tolerances are those of one simulated data set: the
truth must lie inside the 99% interval (about 30 checks over the families, so
95% intervals would miss one by chance; a wrong link, mean or dispersion moves
the estimate by many posterior SDs at this size, as the beta bug this file was
written for did: slope 0.06 for a truth of 0.8).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

import lmmbayes as lb

G, PER = 12, 15
B0, B1, SD_G = 0.3, 0.8, 0.5
DPARS = {"negbinomial": {"shape": 3.0}, "student": {"sigma": 0.7, "nu": 4.0}, "lognormal": {"sigma": 0.5},
         "gamma": {"shape": 4.0}, "beta": {"phi": 8.0}}


def simulate(family: str, seed: int = 11) -> tuple[pd.DataFrame, np.ndarray]:
    """Data from ``family`` with its default link, and the true random intercepts."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(G), PER)
    x = rng.normal(1.0, 1.0, g.size)  # mean 1: the centred intercept must be shifted back
    r = rng.normal(0.0, SD_G, G)
    eta = B0 + B1 * x + r[g]
    p = special.expit(eta)
    y = {
        "bernoulli": lambda: (rng.random(g.size) < p).astype(int),
        "binomial": lambda: rng.binomial(10, p),
        "poisson": lambda: rng.poisson(np.exp(eta)),
        "negbinomial": lambda: rng.negative_binomial(3.0, 3.0 / (3.0 + np.exp(eta))),
        "student": lambda: eta + 0.7 * rng.standard_t(4.0, g.size),
        "lognormal": lambda: np.exp(eta + 0.5 * rng.normal(size=g.size)),
        "gamma": lambda: rng.gamma(4.0, np.exp(eta) / 4.0),
        "beta": lambda: rng.beta(p * 8.0, (1 - p) * 8.0),
    }[family]()
    frame = pd.DataFrame({"y": y, "x": x, "g": [f"g{k:02d}" for k in g], "n": 10})
    return frame, r


FAMILIES = ["bernoulli", "binomial", "poisson", "negbinomial", "student", "lognormal", "gamma", "beta"]
LINKS = {"bernoulli": "logit", "binomial": "logit", "poisson": "log", "negbinomial": "log", "student": "identity",
         "lognormal": "identity", "gamma": "log", "beta": "logit"}


def formula(family: str) -> str:
    return ("y | trials(n)" if family == "binomial" else "y") + " ~ x + (1 | g)"


@pytest.fixture(scope="module", params=FAMILIES)
def case(request):
    family = request.param
    data, r = simulate(family)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lb.ConvergenceWarning)
        fit = lb.fit(formula(family), data, family=family, chains=2, draws=250, tune=300, seed=3, progress=False)
    return family, data, r, fit


def test_fixed_effects_and_parameters_cover_the_truth(case):
    family, _, r, fit = case
    table = fit.posterior_summary(probs=(0.005, 0.995))
    # nu is left out: at 180 rows brms's gamma(2, 0.1) prior (mean 20) outweighs the data on it, so its
    # interval need not cover the truth (the tails are what the t likelihood is for, and they are few)
    truth = {"b_Intercept": B0, "b_x": B1, **{k: v for k, v in DPARS.get(family, {}).items() if k != "nu"}}
    for name, value in truth.items():
        lo, hi = table.loc[name, "Q0.5"], table.loc[name, "Q99.5"]
        assert lo < value < hi, f"{family}: {name} = {value} outside [{lo:.3f}, {hi:.3f}]"
    # The group effects follow the simulated ones. 15 binary outcomes per group say little about an
    # effect of SD 0.5 (the correlation is about 0.3 at best), so bernoulli is held to less.
    est = fit.ranef()["g"]["Estimate"].to_numpy().ravel()
    assert np.corrcoef(est, r)[0, 1] > (0.2 if family == "bernoulli" else 0.6)


def test_summary_header_and_names_are_brms(case):
    family, _, _, fit = case
    text = str(fit.summary())
    assert f"Family: {family}" in text
    assert f"Links: mu = {LINKS[family]}" in text
    links = "; ".join([f"mu = {LINKS[family]}", *(f"{d} = identity" for d in DPARS.get(family, {}))])
    assert f"Links: {links}\n" in text
    for dpar in DPARS.get(family, {}):
        assert dpar in fit.posterior_summary().index
    if DPARS.get(family):
        assert "Further Distributional Parameters" in text
    assert list(fit.fixef().index) == ["Intercept", "x"]


def test_predictions_are_on_the_response_scale(case):
    family, data, _, fit = case
    new = data.iloc[:5]
    epred = fit.posterior_epred(new)
    eta = fit.posterior_linpred(new)
    inv = {"logit": special.expit, "log": np.exp, "identity": lambda v: v}[LINKS[family]]
    mean = inv(eta)
    if family == "binomial":
        mean = mean * 10
    if family == "lognormal":
        mean = np.exp(eta + 0.5 * fit.draws()["sigma"].to_numpy()[:, None] ** 2)
    np.testing.assert_allclose(epred, mean, rtol=1e-9)
    np.testing.assert_allclose(fit.posterior_linpred(new, transform=True), inv(eta), rtol=1e-12)
    draws = fit.posterior_predict(new, seed=1)
    if family in ("bernoulli", "binomial", "poisson", "negbinomial"):
        assert np.issubdtype(draws.dtype, np.integer)
    assert draws.shape == epred.shape


def test_log_lik_is_the_family_density(case):
    family, data, _, fit = case
    ll = fit.log_lik()
    d = fit.draws()
    eta = fit.posterior_linpred()
    y = data["y"].to_numpy()
    dens = {
        "bernoulli": lambda: stats.bernoulli.logpmf(y, special.expit(eta)),
        "binomial": lambda: stats.binom.logpmf(y, 10, special.expit(eta)),
        "poisson": lambda: stats.poisson.logpmf(y, np.exp(eta)),
        "negbinomial": lambda: stats.nbinom.logpmf(y, d["shape"].to_numpy()[:, None],
                                                   d["shape"].to_numpy()[:, None]
                                                   / (d["shape"].to_numpy()[:, None] + np.exp(eta))),
        "student": lambda: stats.t.logpdf(y, d["nu"].to_numpy()[:, None], eta, d["sigma"].to_numpy()[:, None]),
        "lognormal": lambda: stats.lognorm.logpdf(y, d["sigma"].to_numpy()[:, None], scale=np.exp(eta)),
        "gamma": lambda: stats.gamma.logpdf(y, d["shape"].to_numpy()[:, None],
                                            scale=np.exp(eta) / d["shape"].to_numpy()[:, None]),
        "beta": lambda: stats.beta.logpdf(y, special.expit(eta) * d["phi"].to_numpy()[:, None],
                                          (1 - special.expit(eta)) * d["phi"].to_numpy()[:, None]),
    }[family]()
    np.testing.assert_allclose(ll.reshape(dens.shape), dens, rtol=1e-7, atol=1e-9)
    assert np.isfinite(fit.loo().elpd)


def test_pp_check_defaults_per_family(case):
    family, _, _, fit = case
    import matplotlib.pyplot as plt

    fig = fit.pp_check(ndraws=5)
    plt.close(fig)
    assert fit.design.family.default_check == {"bernoulli": "bars", "binomial": "bars", "poisson": "rootogram",
                                               "negbinomial": "rootogram"}.get(family, "dens_overlay")


def test_save_and_load_keep_the_family(case, tmp_path):
    family, data, _, fit = case
    back = lb.load(fit.save(tmp_path / "fit.lmmb"))
    assert back.design.family == fit.design.family
    np.testing.assert_array_equal(back.posterior_epred(data.iloc[:4]), fit.posterior_epred(data.iloc[:4]))
    assert str(back.summary()) == str(fit.summary())


def test_bayes_r2_is_brms_residual_formula(case):
    """brms's bayes_R2: var(epred) / (var(epred) + var(y − epred)) per draw, for every family."""
    _, data, _, fit = case
    mu = fit.posterior_epred()
    res = data["y"].to_numpy()[None, :] - mu
    r2 = mu.var(axis=1, ddof=1) / (mu.var(axis=1, ddof=1) + res.var(axis=1, ddof=1))
    table = fit.bayes_r2(method="residual")
    assert table.loc["R2", "Estimate"] == pytest.approx(r2.mean(), rel=1e-12)
    assert 0 < fit.bayes_r2().loc["R2", "Estimate"] < 1
