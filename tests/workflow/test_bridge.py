"""Bridge sampling (brms's bridge_sampler and bayes_factor) against exact marginal likelihoods.

Witnesses, all from outside the code:

- a conjugate Gaussian model with known SDs (``se()``) and normal priors, whose marginal likelihood
  is the multivariate normal y ~ N(X m0, S + X V0 X') (X with the predictor centred: brms's Intercept
  prior is on the centred intercept);
- random-intercept models on the collapsed engine against Gauss-Legendre quadrature of their exact
  marginal likelihood over the SDs (1-D with se(), 2-D with sigma), the intercept integrated analytically.

Together they exercise every constant the engines drop: the plan's affine maps (log b), the response's
standardisation (-N log y_scale), the truncated mass of half-priors on sd and sigma, and the se()
constant of the collapsed engine. Measured errors of logml (2 chains x 1000 draws): 0.002 (conjugate,
joint engine), 0.005 (random intercept with sigma, collapsed, 3 dimensions; 0.005 also on the joint
engine over 9 dimensions); 0.014 with se() and a normal(0.5, 1) prior cut at 0 on sd (-0.005 +- 0.002 over
six seeds with 2 x 2000 draws); 0.004 for ordered thresholds (their log 2! included).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from conftest import quiet_fit
from scipy.special import logsumexp

import lmmbayes as lb
from lmmbayes.workflow.bridge import error_measures, iterative_scheme, spectrum0_ar

# -- the conjugate model: y_i ~ N(Intercept + b (x_i - mean x), s_i), normal priors --------------------

RNG = np.random.default_rng(1)
N = 20
X_COL = RNG.normal(size=N)
S_COL = RNG.uniform(0.5, 1.5, N)
Y_COL = 1.0 + 1.2 * X_COL + RNG.normal(size=N) * S_COL
CONJ = pd.DataFrame({"y": Y_COL, "x": X_COL, "s": S_COL})
M_I, T_I, M_B, T_B = 0.5, 2.0, 0.0, 1.0
CONJ_PRIORS = [lb.prior(f"normal({M_I}, {T_I})", class_="Intercept"), lb.prior(f"normal({M_B}, {T_B})", class_="b")]
TOL = 0.05  # on logml; the measured errors are 10-25 times smaller


def exact_conjugate(slope: bool) -> float:
    """log N(y; X m0, S + X V0 X'), X = [1, x - mean(x)] (or [1] without the slope)."""
    X = np.column_stack([np.ones(N), X_COL - X_COL.mean()]) if slope else np.ones((N, 1))
    m0 = np.array([M_I, M_B][: X.shape[1]])
    V0 = np.diag([T_I**2, T_B**2][: X.shape[1]])
    return float(scipy.stats.multivariate_normal(X @ m0, np.diag(S_COL**2) + X @ V0 @ X.T).logpdf(Y_COL))


@pytest.fixture(scope="module")
def conjugate_fits():
    kw = {"chains": 2, "draws": 1000, "seed": 1}
    return (quiet_fit("y | se(s) ~ 1 + x", CONJ, CONJ_PRIORS, **kw),
            quiet_fit("y | se(s) ~ 1", CONJ, CONJ_PRIORS[:1], **kw))


def test_conjugate_logml_matches_the_exact_marginal_likelihood(conjugate_fits):
    fit = conjugate_fits[0]
    res = fit.bridge_sampler()
    assert fit.engine == "joint" and res.method == "normal" and res.dimension == 2
    assert res.logml == pytest.approx(exact_conjugate(True), abs=TOL)
    assert 0 < res.cv < 0.05 and res.re2 == pytest.approx(res.cv**2) and res.percentage.endswith("%")
    assert res.error_measures == {"re2": res.re2, "cv": res.cv, "percentage": res.percentage}
    text = str(res)
    assert text.startswith("Bridge sampling estimate of the log marginal likelihood: ")
    assert 'via method "normal"' in text
    # reproducible: the proposal is seeded from the fit's seed
    assert lb.bridge_sampler(fit).logml == res.logml
    assert lb.bridge_sampler(fit, seed=5).logml == pytest.approx(res.logml, abs=TOL)


def test_bayes_factor_of_nested_models_matches_the_exact_ratio(conjugate_fits):
    full, null = conjugate_fits
    exact = exact_conjugate(True) - exact_conjugate(False)
    bf = lb.bayes_factor(full, null)
    assert bf.log_bf == pytest.approx(exact, abs=2 * TOL)
    assert bf.bf == pytest.approx(np.exp(bf.log_bf))
    assert bf.log_bf == pytest.approx(bf.bridge1.logml - bf.bridge2.logml)
    assert str(bf) == f"Estimated Bayes factor in favor of fit1 over fit2: {bf.bf:.5f}"
    back = null.bayes_factor(full, log=True, names=("null", "full"))
    assert back.log_bf == pytest.approx(-bf.log_bf)
    assert str(back) == f"Estimated log Bayes factor in favor of null over full: {back.log_bf:.5f}"


# -- random intercepts on the collapsed engine against quadrature -------------------------------------

G, PER = 6, 4
GROUP = np.repeat(np.arange(G), PER)
Z = (GROUP[:, None] == np.arange(G)).astype(float)
RI_Y = 10 + np.random.default_rng(3).normal(0, 1.0, G)[GROUP] + np.random.default_rng(4).normal(0, 0.8, G * PER)
RI_S = np.random.default_rng(5).uniform(0.6, 1.2, G * PER)
RI = pd.DataFrame({"y": RI_Y, "s": RI_S, "g": [f"g{k}" for k in GROUP]})
M_RI, T_RI = 10.0, 5.0


def _mvn_logpdf(cov: np.ndarray) -> np.ndarray:
    """log N(RI_Y; M_RI, cov) for a batch of covariance matrices (..., n, n)."""
    L = np.linalg.cholesky(cov)
    z = np.linalg.solve(L, np.broadcast_to((RI_Y - M_RI)[:, None], cov.shape[:-1] + (1,)))[..., 0]
    return -0.5 * (z**2).sum(-1) - np.log(np.diagonal(L, axis1=-2, axis2=-1)).sum(-1) - 0.5 * RI_Y.size * np.log(
        2 * np.pi)


def _legendre(lo: float, hi: float, m: int = 100) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.legendre.leggauss(m)
    return (hi - lo) / 2 * x + (hi + lo) / 2, w * (hi - lo) / 2


def exact_random_intercept_sigma() -> float:
    """∫∫ N(y; m 1, T² 11' + σ² I + sd² ZZ') p(σ) p(sd): half student_t(3, 0, 2) on σ (over log σ), half
    normal(0, 2) on sd; 100 x 100 Gauss-Legendre nodes (60 give the same to 1e-9)."""
    t, wt = _legendre(np.log(0.05), np.log(20.0))
    sd, wsd = _legendre(0.0, 15.0)
    sig, D = np.meshgrid(np.exp(t), sd, indexing="ij")
    cov = T_RI**2 + sig[..., None, None] ** 2 * np.eye(RI_Y.size) + D[..., None, None] ** 2 * (Z @ Z.T)
    log_prior = np.log(2 * scipy.stats.t.pdf(sig, 3, 0, 2)) + np.log(2 * scipy.stats.norm.pdf(D, 0, 2))
    return float(logsumexp(_mvn_logpdf(cov) + log_prior + np.log(sig) + np.log(wt)[:, None] + np.log(wsd)))


def exact_random_intercept_se() -> float:
    """∫ N(y; m 1, S + T² 11' + sd² ZZ') p(sd) dsd with normal(0.5, 1) cut at 0 on sd (its mass above 0 is
    Φ(0.5) = 0.69, not a half); 100 Gauss-Legendre nodes."""
    sd, w = _legendre(0.0, 15.0)
    cov = np.diag(RI_S**2) + T_RI**2 + sd[:, None, None] ** 2 * (Z @ Z.T)
    log_prior = scipy.stats.norm.logpdf(sd, 0.5, 1) - scipy.stats.norm.logcdf(0.5)
    return float(logsumexp(_mvn_logpdf(cov) + log_prior + np.log(w)))


RI_PRIORS = [lb.prior(f"normal({M_RI}, {T_RI})", class_="Intercept"), lb.prior("normal(0, 2)", class_="sd")]


def test_collapsed_random_intercept_with_sigma_against_2d_quadrature(tmp_path):
    fit = quiet_fit("y ~ 1 + (1 | g)", RI, [*RI_PRIORS, lb.prior("student_t(3, 0, 2)", class_="sigma")],
                    chains=2, draws=1000, seed=1, method="collapsed")
    res = fit.bridge_sampler()
    # bridged over Intercept, sigma and sd only: the six random effects are integrated out exactly
    assert res.integrated and res.dimension == 3
    assert res.logml == pytest.approx(exact_random_intercept_sigma(), abs=TOL)
    assert "random effects integrated out exactly" in str(res)
    back = lb.load(fit.save(tmp_path / "ri.lmmb"))
    assert back.bridge_sampler().logml == res.logml


def test_collapsed_lognormal_is_the_gaussian_model_of_log_y_with_its_jacobian(tmp_path):
    """lognormal on exp(y) is the normal model of y, whose density is that of exp(y) times Π exp(y_i): the
    collapsed engine integrates log y (`Family.normal_response`), and the bridge adds back Σ log t'(y) = −Σ y."""
    data = RI.assign(y=np.exp(RI_Y))
    fit = quiet_fit("y ~ 1 + (1 | g)", data, [*RI_PRIORS, lb.prior("student_t(3, 0, 2)", class_="sigma")],
                    family="lognormal", chains=2, draws=1000, seed=1)
    assert fit.engine == "collapsed"
    res = fit.bridge_sampler()
    assert res.integrated and res.dimension == 3
    assert res.logml == pytest.approx(exact_random_intercept_sigma() - RI_Y.sum(), abs=TOL)
    back = lb.load(fit.save(tmp_path / "lognormal.lmmb"))
    assert back.design.stats.log_jacobian == pytest.approx(-RI_Y.sum(), rel=1e-12)
    assert back.bridge_sampler().logml == res.logml


def test_collapsed_random_intercept_with_known_sds_against_1d_quadrature():
    """se() on the collapsed engine: its likelihood keeps the known SDs as row weights and drops their constant."""
    priors = [RI_PRIORS[0], lb.prior("normal(0.5, 1)", class_="sd")]
    fit = quiet_fit("y | se(s) ~ 1 + (1 | g)", RI, priors, chains=2, draws=1000, seed=2, method="collapsed")
    res = fit.bridge_sampler()
    assert res.integrated and res.dimension == 2
    assert res.logml == pytest.approx(exact_random_intercept_se(), abs=TOL)


@pytest.mark.slow  # a joint-engine compile (about 10 s) and 9 dimensions: `make validate`
def test_joint_random_intercept_bridges_over_the_effects_too():
    """The same model on the joint engine: the bridge runs over the six random effects as well (measured 0.012)."""
    fit = quiet_fit("y ~ 1 + (1 | g)", RI, [*RI_PRIORS, lb.prior("student_t(3, 0, 2)", class_="sigma")],
                    chains=2, draws=1000, seed=1, method="joint")
    res = fit.bridge_sampler()
    assert not res.integrated and res.dimension == 9
    assert res.logml == pytest.approx(exact_random_intercept_sigma(), abs=TOL)


@pytest.mark.slow  # a cumulative-model compile (about 17 s): `make validate`
def test_ordinal_thresholds_under_one_prior_against_2d_quadrature():
    """Independent student_t(3, 0, 2.5) priors restricted to τ1 < τ2 (brms's default) have density 2! p(τ1) p(τ2);
    the exact value integrates the multinomial likelihood over τ1 and log(τ2 − τ1). Measured error 0.004; without
    log 2! it would be 0.69."""
    from scipy.special import expit

    y = np.random.default_rng(2).choice([1, 2, 3], size=30, p=[0.3, 0.5, 0.2])
    counts = np.bincount(y, minlength=4)[1:]
    t1, w1 = _legendre(-8.0, 8.0, 150)
    ld, wd = _legendre(np.log(1e-3), np.log(20.0), 150)
    T1, LD = np.meshgrid(t1, ld, indexing="ij")
    T2 = T1 + np.exp(LD)
    F1, F2 = expit(T1), expit(T2)
    loglik = counts[0] * np.log(F1) + counts[1] * np.log(F2 - F1) + counts[2] * np.log1p(-F2)
    log_prior = np.log(2) + scipy.stats.t.logpdf(T1, 3, 0, 2.5) + scipy.stats.t.logpdf(T2, 3, 0, 2.5)
    exact = logsumexp(loglik + log_prior + LD + np.log(w1)[:, None] + np.log(wd)[None, :])
    fit = quiet_fit("y ~ 1", pd.DataFrame({"y": y}), family="cumulative", chains=2, draws=1000, seed=1)
    assert fit.bridge_sampler().logml == pytest.approx(exact, abs=TOL)


def test_log_density_has_every_constant_exactly():
    """The density bridged over, at the fit's own draws, against an independent formula: the exact marginal
    likelihood (random effects integrated out), the priors with normal(0.5, 1)'s mass above 0, and the Jacobian
    of the unbounded scale to the user's (the plan's ``user = a + b u`` and ``sd = b exp(x)``)."""
    from lmmbayes.engines.plan import plan as make_plan
    from lmmbayes.workflow.bridge import posterior_density

    priors = [RI_PRIORS[0], lb.prior("normal(0.5, 1)", class_="sd")]
    fit = quiet_fit("y | se(s) ~ 1 + (1 | g)", RI, priors, chains=1, draws=50, tune=200, seed=1, method="collapsed")
    density = posterior_density(fit)
    b_int, b_sd = (p.b for p in make_plan(fit.design, fit.priors).params)
    intercept, sd = fit.posterior["b"].values[0, :, 0], fit.posterior["sd_g"].values[0, :, 0]
    for k in range(0, 50, 7):
        cov = np.diag(RI_S**2) + sd[k] ** 2 * (Z @ Z.T)
        loglik = scipy.stats.multivariate_normal(np.full(RI_Y.size, intercept[k]), cov).logpdf(RI_Y)
        log_prior = (scipy.stats.norm.logpdf(intercept[k], M_RI, T_RI) + scipy.stats.norm.logpdf(sd[k], 0.5, 1)
                     - scipy.stats.norm.logcdf(0.5))
        jacobian = np.log(b_int) + np.log(sd[k])  # log b_int + log b_sd + log(sd / b_sd)
        assert density.logp(density.draws[0, k]) == pytest.approx(loglik + log_prior + jacobian, abs=1e-6)


# -- refusals ----------------------------------------------------------------------------------------


def test_flat_priors_are_refused_naming_the_parameter_and_the_fix():
    data = RI.assign(x=np.linspace(-1, 1, len(RI)))
    fit = quiet_fit("y ~ x + (1 | g)", data, RI_PRIORS, chains=1, draws=100, tune=100, seed=1, method="collapsed")
    with pytest.raises(lb.PriorError, match="flat") as info:
        fit.bridge_sampler()
    assert "b_x" in str(info.value) and "lb.prior('normal(0, 10)', class_='b')" in str(info.value)


def test_prior_only_fits_and_different_data_are_refused(conjugate_fits):
    prior_only = lb.fit("y | se(s) ~ 1 + x", CONJ, CONJ_PRIORS, sample_prior="only", draws=50, seed=1)
    with pytest.raises(lb.FitError, match="prior only"):
        lb.bridge_sampler(prior_only)
    other = quiet_fit("y | se(s) ~ 1 + x", CONJ.assign(y=CONJ["y"] + 1), CONJ_PRIORS, chains=1, draws=100, tune=100,
                      seed=1)
    with pytest.raises(lb.DataError, match="same response values"):
        lb.bayes_factor(conjugate_fits[0], other)
    with pytest.raises(lb.FitError, match="names"):
        lb.bayes_factor(conjugate_fits[0], conjugate_fits[1], names=("only one",))


# -- the numerics on plain arrays ----------------------------------------------------------------------


def test_iterative_scheme_recovers_a_known_normalising_constant():
    """Target c·N(0, I₃) and a wider normal proposal: the bridge must return log c (independent draws)."""
    rng = np.random.default_rng(0)
    D, n, log_c = 3, 4000, -7.25
    post = rng.standard_normal((n, D))
    prop = 1.3 * rng.standard_normal((n, D)) + 0.1

    def target(x: np.ndarray) -> np.ndarray:
        return log_c + scipy.stats.multivariate_normal(np.zeros(D)).logpdf(x)

    def proposal(x: np.ndarray) -> np.ndarray:
        return scipy.stats.multivariate_normal(np.full(D, 0.1), 1.69 * np.eye(D)).logpdf(x)

    q11, q12, q21, q22 = target(post), proposal(post), target(prop), proposal(prop)
    res = iterative_scheme(q11, q12, q21, q22, float(n))
    assert res.converged and res.logml == pytest.approx(log_c, abs=0.02)
    re2, cv = error_measures(q11, q12, q21, q22, res.logml)
    assert cv == pytest.approx(np.sqrt(re2)) and 0 < cv < 0.02


def test_spectrum_at_zero_of_an_ar1_series():
    """AR(1) with φ = 0.5 and unit innovations: spectral density at 0 (coda's scale) is 1 / (1 − φ)² = 4."""
    rng = np.random.default_rng(1)
    e = rng.standard_normal(20000)
    x = np.empty_like(e)
    x[0] = e[0]
    for i in range(1, e.size):
        x[i] = 0.5 * x[i - 1] + e[i]
    assert spectrum0_ar(x) == pytest.approx(4.0, rel=0.1)
    assert spectrum0_ar(rng.standard_normal(5000)) == pytest.approx(1.0, rel=0.1)
    assert spectrum0_ar(np.ones(100)) == 0.0


def test_documented():
    root = Path(__file__).resolve().parents[2]
    assert "bayes_factor" in (root / "docs" / "api.md").read_text()
    assert "## Bayes factors" in (root / "docs" / "after-the-fit.md").read_text()


def test_quadrature_fits_are_bridged_with_the_exact_joint_density():
    """A poisson fit on the collapsed engine (random effects integrated by quadrature, an approximation) is
    bridged over every parameter with the joint engine's exact density: the same log marginal likelihood as
    the joint engine's fit of the same model, within the estimates' errors."""
    rng = np.random.default_rng(8)
    g = np.repeat(np.arange(8), 5)
    x = rng.normal(size=g.size)
    y = rng.poisson(np.exp(0.5 + 0.3 * x + rng.normal(0, 0.5, 8)[g]))
    data = pd.DataFrame({"y": y, "x": x, "g": g.astype(str)})
    priors = [lb.prior("normal(0, 2)", class_="Intercept"), lb.prior("normal(0, 1)", class_="b"),
              lb.prior("normal(0, 1)", class_="sd")]
    fits = [quiet_fit("y ~ x + (1 | g)", data, priors, family="poisson", method=m, chains=2, draws=1000, seed=3)
            for m in ("collapsed", "joint")]
    assert fits[0].engine == "collapsed"
    a, b = (f.bridge_sampler(seed=1) for f in fits)
    assert not a.integrated and a.dimension == b.dimension
    assert a.logml == pytest.approx(b.logml, abs=0.1)
