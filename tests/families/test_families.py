"""Each family's densities, draws and moments against scipy, and its response checks and brms defaults.

Witnesses: scipy.stats (log densities and masses), the law of large numbers
(the mean and variance of 200,000 draws against ``mean()`` and
``variance()``), and brms 2.18's ``brmsfamily()`` defaults (links) and
``get_prior`` rules (``R/priors.R``: ``def_scale_prior``, ``def_dpar_prior``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

import lmmbayes as lb
from lmmbayes.families import Extra


def scipy_logpdf(name, link, y, eta, dp, n=None):
    inv = {"identity": lambda e: e, "log": np.exp, "logit": special.expit, "probit": special.ndtr,
           "cloglog": lambda e: -np.expm1(-np.exp(e)), "inverse": lambda e: 1 / e, "sqrt": lambda e: e**2}[link]
    mu = inv(eta)
    if name == "gaussian":
        return stats.norm.logpdf(y, mu, dp["sigma"])
    if name == "bernoulli":
        return stats.bernoulli.logpmf(y, mu)
    if name == "binomial":
        return stats.binom.logpmf(y, n, mu)
    if name == "poisson":
        return stats.poisson.logpmf(y, mu)
    if name == "negbinomial":
        phi = dp["shape"]
        return stats.nbinom.logpmf(y, phi, phi / (phi + mu))
    if name == "student":
        return stats.t.logpdf(y, dp["nu"], mu, dp["sigma"])
    if name == "lognormal":
        return stats.lognorm.logpdf(y, dp["sigma"], scale=np.exp(eta))
    if name == "gamma":
        a = dp["shape"]
        return stats.gamma.logpdf(y, a, scale=mu / a)
    if name == "beta":
        phi = dp["phi"]
        return stats.beta.logpdf(y, mu * phi, (1 - mu) * phi)
    raise AssertionError(name)


CASES = [
    ("gaussian", "identity", [-1.0, 0.3, 2.5], [0.0, 0.5, 1.0], {"sigma": 1.3}),
    ("bernoulli", "logit", [0, 1, 1], [-2.0, 0.3, 35.0], {}),
    ("bernoulli", "probit", [0, 1, 0], [-1.0, -9.0, 2.0], {}),
    ("bernoulli", "cloglog", [1, 0, 1], [-3.0, 0.2, 1.5], {}),
    ("binomial", "logit", [0, 4, 10], [-1.0, 0.0, 3.0], {}),
    ("binomial", "probit", [2, 4, 9], [-1.0, 0.0, 1.0], {}),
    ("poisson", "log", [0, 3, 17], [-0.5, 1.0, 2.9], {}),
    ("poisson", "identity", [0, 3, 17], [0.5, 2.0, 15.0], {}),
    ("poisson", "sqrt", [0, 3, 17], [0.5, 2.0, 4.0], {}),
    ("negbinomial", "log", [0, 3, 40], [0.1, 1.0, 2.5], {"shape": 2.5}),
    ("student", "identity", [-4.0, 0.1, 9.0], [0.0, 0.0, 1.0], {"sigma": 2.0, "nu": 3.5}),
    ("student", "log", [0.5, 2.0, 9.0], [0.0, 0.5, 1.0], {"sigma": 1.5, "nu": 6.0}),
    ("lognormal", "identity", [0.2, 1.0, 30.0], [0.0, 0.5, 2.0], {"sigma": 0.8}),
    ("gamma", "log", [0.2, 1.0, 30.0], [0.0, 0.5, 2.0], {"shape": 3.0}),
    ("gamma", "inverse", [0.2, 1.0, 3.0], [1.0, 0.5, 2.0], {"shape": 1.5}),
    ("gamma", "identity", [0.2, 1.0, 3.0], [1.0, 0.5, 2.0], {"shape": 1.5}),
    ("beta", "logit", [0.05, 0.5, 0.97], [-1.0, 0.0, 2.0], {"phi": 6.0}),
    ("beta", "cloglog", [0.05, 0.5, 0.97], [-1.0, 0.0, 1.0], {"phi": 3.0}),
]


@pytest.mark.parametrize(("name", "link", "y", "eta", "dp"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_log_density_matches_scipy_in_numpy_and_pytensor(name, link, y, eta, dp):
    import pytensor.tensor as pt

    fam = lb.family(name, link)
    y, eta = np.array(y, dtype=float), np.array(eta)
    extra = Extra(trials=np.full(3, 10.0)) if name == "binomial" else Extra()
    want = scipy_logpdf(name, link, y, eta, dp, n=10)
    np.testing.assert_allclose(fam.logpdf(y, eta, dp, extra), want, rtol=1e-9, atol=1e-9)
    e = pt.dvector("eta")
    got = fam.logp_pt(pt.as_tensor(y), e, {k: pt.as_tensor(v) for k, v in dp.items()}, extra).eval({e: eta})
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)  # PyTensor's gammaln rounds at about 1e-8


@pytest.mark.parametrize(("name", "link", "y", "eta", "dp"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_draws_have_the_stated_mean_and_variance(name, link, y, eta, dp):
    fam = lb.family(name, link)
    rng = np.random.default_rng(0)
    eta_one = np.full(200_000, eta[1])
    extra = Extra(trials=np.full(eta_one.size, 10.0)) if name == "binomial" else Extra()
    dps = {k: np.full(eta_one.size, v) for k, v in dp.items()}
    draws = fam.random(rng, eta_one, dps, extra)
    mean, var = fam.mean(eta_one, dps, extra)[0], fam.variance(eta_one, dps, extra)[0]
    se = math.sqrt(var / draws.size)
    assert abs(draws.mean() - mean) < 5 * se
    assert draws.var() == pytest.approx(var, rel=0.05)
    if fam.discrete:
        assert np.issubdtype(draws.dtype, np.integer)


def test_brms_default_links_and_names():
    links = {"gaussian": "identity", "bernoulli": "logit", "binomial": "logit", "poisson": "log",
             "negbinomial": "log", "student": "identity", "lognormal": "identity", "gamma": "log", "Gamma": "log",
             "beta": "logit", "Beta": "logit"}
    for name, link in links.items():
        fam = lb.family(name)
        assert fam.link == link, name
    assert lb.family("Gamma").name == "gamma" and lb.family("Beta").name == "beta"
    assert lb.family("gamma", link="inverse").link == "inverse"
    with pytest.raises(lb.FitError, match=r"no link 'logit'.*\['log', 'identity', 'sqrt'\]"):
        lb.family("poisson", link="logit")
    with pytest.raises(lb.FitError, match="'multinomial' is a brms family that lmmbayes does not fit yet"):
        lb.family("multinomial")


def test_links_line_of_the_summary():
    assert lb.family("negbinomial").links_text() == "mu = log; shape = identity"
    assert lb.family("student").links_text() == "mu = identity; sigma = identity; nu = identity"
    assert lb.family("gaussian").links_text(("se",)) == "mu = identity"
    assert lb.family("gaussian").links_text(("se",), True) == "mu = identity; sigma = identity"


def _table(formula, data, family):
    table = lb.get_prior(formula, data, family=family)
    return {r["class"]: r["prior"] for _, r in table.iterrows() if not r["coef"] and not r["group"]}


def test_brms_default_priors_by_family():
    """brms 2.18's rules: log of the median count to one decimal, 2.5 floors, logit families at 0 and 2.5."""
    rng = np.random.default_rng(2)
    g = np.repeat(np.arange(10), 8)
    counts = pd.DataFrame({"y": np.tile([0, 1, 2, 4, 4, 4, 5, 9], 10), "x": rng.normal(size=80), "g": g})
    assert _table("y ~ x + (1 | g)", counts, "poisson") == {
        "b": "flat", "Intercept": "student_t(3, 1.4, 2.5)", "sd": "student_t(3, 0, 2.5)"}
    nb = _table("y ~ x + (1 | g)", counts, "negbinomial")
    assert nb["Intercept"] == "student_t(3, 1.4, 2.5)" and nb["shape"] == "gamma(0.01, 0.01)"
    binary = counts.assign(y=(counts["y"] > 2).astype(int))
    assert _table("y ~ x + (1 | g)", binary, "bernoulli")["Intercept"] == "student_t(3, 0, 2.5)"
    positive = counts.assign(y=np.tile([100.0, 200.0, 288.7, 288.7, 300.0, 400.0, 500.0, 900.0], 10))
    gam = _table("y ~ x", positive, "gamma")
    assert gam["Intercept"] == f"student_t(3, {round(math.log(288.7), 1):g}, 2.5)" and gam["shape"] == "gamma(0.01, 0.01)"
    ln = _table("y ~ x", positive, "lognormal")
    assert ln["Intercept"] == "student_t(3, 5.7, 2.5)" and ln["sigma"] == "student_t(3, 0, 2.5)"
    st = _table("y ~ x", positive, "student")
    assert st["nu"] == "gamma(2, 0.1)" and st["sigma"].startswith("student_t(3, 0, ")
    table = lb.get_prior("y ~ x", positive, family="student")
    assert table.loc[table["class"] == "nu"].shape[0] == 1
    beta = _table("y ~ x", counts.assign(y=np.linspace(0.05, 0.95, 80)), "beta")
    assert beta["Intercept"] == "student_t(3, 0, 2.5)" and beta["phi"] == "gamma(0.01, 0.01)"


BRMS_PRIORS = Path(__file__).parent / "fixtures" / "brms_default_priors.csv"


def test_brms_default_priors_match_brms():
    """Every family's defaults equal brms 2.18's get_prior on the same data (fixture made by hand with
    fixtures/brms_default_priors.R; R is not needed here)."""
    expected = pd.read_csv(BRMS_PRIORS)
    x = np.linspace(-1, 1, 80)
    g = np.repeat(np.arange(10), 8)
    counts = np.tile([0, 1, 2, 4, 4, 4, 5, 9], 10)
    positive = np.tile([100, 200, 288.7, 288.7, 300, 400, 500, 900], 10)
    sets = {
        "poisson": (pd.DataFrame({"y": counts, "x": x, "g": g}), "y ~ x + (1 | g)"),
        "negbinomial": (pd.DataFrame({"y": counts, "x": x, "g": g}), "y ~ x + (1 | g)"),
        "bernoulli": (pd.DataFrame({"y": (counts > 2).astype(int), "x": x, "g": g}), "y ~ x + (1 | g)"),
        "binomial": (pd.DataFrame({"y": counts, "n": 10, "x": x, "g": g}), "y | trials(n) ~ x + (1 | g)"),
        "gamma": (pd.DataFrame({"y": positive, "x": x}), "y ~ x"),
        "lognormal": (pd.DataFrame({"y": positive, "x": x}), "y ~ x"),
        "student": (pd.DataFrame({"y": positive, "x": x}), "y ~ x"),
        "beta": (pd.DataFrame({"y": np.linspace(0.05, 0.95, 80), "x": x}), "y ~ x"),
        "gaussian": (pd.DataFrame({"y": positive, "x": x, "g": g}), "y ~ x + (1 | g)"),
        "cumulative": (pd.DataFrame({"y": np.tile([1, 2, 2, 3, 3, 3, 4, 4], 10), "x": x, "g": g}), "y ~ x + (1 | g)"),
    }
    for family, (data, formula) in sets.items():
        brms = dict(expected.loc[expected["family"] == family, ["class", "prior"]].itertuples(index=False))
        assert _table(formula, data, family) == brms, family


@pytest.mark.parametrize(("family", "y", "needle"), [
    ("bernoulli", [0, 1, 2] * 10, "must be 0 or 1"),
    ("bernoulli", ["a", "b", "c"] * 10, "exactly two values"),
    ("bernoulli", ["a"] * 30, "exactly two values"),
    ("poisson", [0, 1.5, 2] * 10, "non-negative integers"),
    ("poisson", [0, -1, 2] * 10, "non-negative integers"),
    ("negbinomial", [0.5, 1, 2] * 10, "non-negative integers"),
    ("beta", [0.0, 0.5, 0.7] * 10, "strictly between 0 and 1"),
    ("beta", [1.0, 0.5, 0.7] * 10, "zero-one-inflated"),
    ("gamma", [0.0, 1.0, 2.0] * 10, "must be positive"),
    ("lognormal", [-1.0, 1.0, 2.0] * 10, "must be positive"),
    ("poisson", ["a", "b", "c"] * 10, "must be counts"),
])
def test_responses_a_family_cannot_take_are_refused(family, y, needle):
    data = pd.DataFrame({"y": y, "x": np.arange(30.0)})
    with pytest.raises(lb.DataError, match="'y'") as info:
        lb.get_prior("y ~ x", data, family=family)
    assert needle in str(info.value)


@pytest.mark.parametrize(("formula", "family", "needle"), [
    ("y ~ x", "binomial", "needs the number of trials"),
    ("y | trials(n) ~ x", "poisson", "does not take the addition term trials()"),
    ("y | se(s) ~ x", "poisson", "does not take the addition term se()"),
])
def test_addition_terms_a_family_does_not_take(formula, family, needle):
    data = pd.DataFrame({"y": np.arange(20) % 5, "x": np.arange(20.0), "n": 10, "s": 1.0})
    with pytest.raises(lb.FitError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        lb.get_prior(formula, data, family=family)


def test_binomial_responses_above_trials_are_refused():
    data = pd.DataFrame({"y": [1, 5, 12], "x": [0.0, 1.0, 2.0], "n": [10, 10, 10]})
    with pytest.raises(lb.DataError, match="cannot exceed its trials"):
        lb.get_prior("y | trials(n) ~ x", data, family="binomial")
    with pytest.raises(lb.DataError, match=r"trials\(n\) must be positive integers"):
        lb.get_prior("y | trials(n) ~ x", data.assign(n=[10, 10.5, 12]), family="binomial")


@pytest.mark.parametrize(("values", "expected_success"), [([True, False] * 10, "True"), (["N", "Y"] * 10, "Y"),
                                                         (pd.Categorical(["no", "yes"] * 10), "yes")])
def test_bernoulli_takes_any_two_valued_column(values, expected_success):
    data = pd.DataFrame({"y": values, "x": np.arange(20.0)})
    fit = lb.fit("y ~ x", data, family="bernoulli", sample_prior="only", draws=10,
                 priors=[lb.prior("normal(0, 1)", class_="b")])
    levels = fit.design.encoder.coding.levels
    assert len(levels) == 2
    labels = [str(v) for v in list(values)]
    np.testing.assert_array_equal(fit.design.y, [float(lab == levels[1]) for lab in labels])
    assert levels[1] == expected_success
    assert f"Success: '{expected_success}'" in str(fit.summary())
