"""The collapsed engine for non-Gaussian families: adaptive quadrature in C, checked against witnesses.

Witnesses: the marginal likelihood by scipy's adaptive quadrature (1-D) and
a dense grid (2-D); finite differences of the value for the gradient; the
exact conditional distribution of one group's effect by numerical
integration for the random-effect draws; the joint engine (which samples every
random effect and needs no approximation) for whole fits.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from arviz_stats.base import array_stats
from scipy import integrate, special

import lmmbayes as lb
from lmmbayes import pipeline
from lmmbayes.engines.collapsed import glmm, kernel
from lmmbayes.engines.plan import plan as make_plan
from lmmbayes.priors import as_prior_set, resolve_priors
from lmmbayes.results.posterior import flat_draws

from conftest import quiet_fit

pytestmark = pytest.mark.skipif(not kernel.available(), reason="the C kernel is not built")


INVERSE_LINKS = {"logit": special.expit, "probit": special.ndtr, "cloglog": lambda eta: -np.expm1(-np.exp(eta))}


def simulate(family: str, q: int = 1, groups: int = 30, per: int = 6, sd: float = 1.0, seed: int = 4,
             link: str = "logit") -> pd.DataFrame:
    """Rows of ``y ~ x + (1 | g)`` (q = 1) or ``(1 + x | g)`` (q = 2) with known random effects (binomial
    families under ``link``)."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(groups), per)
    x = rng.normal(size=g.size)
    b = rng.normal(size=(groups, 2)) * [sd, 0.5 * sd]
    eta = 0.2 + 0.5 * x + b[g, 0] + (b[g, 1] * x if q == 2 else 0.0)
    data = {"x": x, "g": [f"g{k:02d}" for k in g]}
    if family == "bernoulli":
        data["y"] = (rng.random(g.size) < INVERSE_LINKS[link](eta)).astype(int)
    elif family == "binomial":
        data["n"] = rng.integers(1, 6, g.size)
        data["y"] = rng.binomial(data["n"], INVERSE_LINKS[link](eta))
    elif family == "poisson":
        data["y"] = rng.poisson(np.exp(eta))
    elif family == "gamma":
        data["y"] = rng.gamma(GAMMA_SHAPE, np.exp(eta) / GAMMA_SHAPE)
    else:
        mu = np.exp(eta)
        data["y"] = rng.poisson(rng.gamma(2.0, mu / 2.0))
    return pd.DataFrame(data)


#: The gamma family's shape in the simulations (mean exp(eta), CV 1/sqrt(3)).
GAMMA_SHAPE = 3.0


def gamma_ll(eta, yy, phi):
    """The gamma (log link) log density of ``yy`` without its -log y, the constant the kernel leaves out."""
    return phi * (np.log(phi) + np.log(yy) - eta - yy * np.exp(-eta)) - special.gammaln(phi)


def formula(family: str, q: int = 1) -> str:
    lhs = "y | trials(n)" if family == "binomial" else "y"
    return f"{lhs} ~ x + " + ("(1 | g)" if q == 1 else "(1 + x | g)")


def kernel_of(family: str, q: int = 1, link: str | None = None, **kw) -> tuple[glmm.GlmmKernel, object, object]:
    data = simulate(family, q, **kw)
    fam = pipeline.options(family=family, link=link).family
    design = pipeline.design_of(formula(family, q), data, fam)
    pl = make_plan(design, resolve_priors(design, as_prior_set(None)))
    k = glmm.build(design, pl)
    assert k is not None
    return k, design, pl


def flat_priors(k: glmm.GlmmKernel) -> glmm.GlmmKernel:
    """The same kernel with every prior flat: its value is then the marginal likelihood plus the log Jacobians."""
    return replace(k, params=replace(k.params, fam=np.zeros_like(k.params.fam)))


def exact_loglik(family: str, data: pd.DataFrame, beta: np.ndarray, Lam: np.ndarray, phi: float | None = None,
                 link: str = "logit") -> float:
    """log p(y | beta, Lam) by scipy's adaptive quadrature (q = 1) or a fine dense grid (q = 2), constants kept
    out as the kernel keeps them out (binomial coefficients, log y!)."""
    x, y = data["x"].to_numpy(), data["y"].to_numpy(dtype=float)
    n = data["n"].to_numpy(dtype=float) if "n" in data else np.ones_like(y)
    q = Lam.shape[0]

    def row_ll(eta, yy, nn):
        if family in ("bernoulli", "binomial") and link == "probit":
            return yy * special.log_ndtr(eta) + (nn - yy) * special.log_ndtr(-eta)
        if family in ("bernoulli", "binomial") and link == "cloglog":
            return yy * np.log(-np.expm1(-np.exp(eta))) - (nn - yy) * np.exp(eta)
        if family in ("bernoulli", "binomial"):
            return yy * eta - nn * np.logaddexp(0.0, eta)
        if family == "poisson":
            return yy * eta - np.exp(eta)
        if family == "gamma":
            return gamma_ll(eta, yy, phi)
        lt = np.logaddexp(np.log(phi), eta)
        return special.gammaln(yy + phi) - special.gammaln(phi) + phi * (np.log(phi) - lt) + yy * (eta - lt)

    total = 0.0
    for _, rows in data.groupby("g", sort=True).indices.items():
        xx, yy, nn = x[rows], y[rows], n[rows]
        eta0 = beta[0] + beta[1] * xx
        Z = np.column_stack([np.ones_like(xx), xx])[:, :q]
        if q == 1:
            f = lambda v: np.exp(row_ll(eta0 + Z[:, 0] * Lam[0, 0] * v, yy, nn).sum() - 0.5 * v * v) / np.sqrt(2 * np.pi)
            total += np.log(integrate.quad(f, -12, 12, epsabs=0, epsrel=1e-11, limit=200)[0])
        else:
            grid = np.linspace(-9, 9, 721)
            V1, V2 = np.meshgrid(grid, grid, indexing="ij")
            V = np.stack([V1.ravel(), V2.ravel()], 1)
            B = V @ Lam.T
            eta = eta0[None, :] + B @ Z.T
            log_f = row_ll(eta, yy[None], nn[None]).sum(1) - 0.5 * (V**2).sum(1) - np.log(2 * np.pi)
            top = log_f.max()
            total += top + np.log(np.exp(log_f - top).sum() * (grid[1] - grid[0]) ** 2)
    return total


CASES = [("bernoulli", 1), ("binomial", 1), ("poisson", 1), ("negbinomial", 1), ("bernoulli", 2), ("poisson", 2),
         ("gamma", 1), ("gamma", 2)]


def kernel_and_exact(k: glmm.GlmmKernel, pl, family: str, data: pd.DataFrame, x: np.ndarray,
                     link: str = "logit") -> tuple[float, float]:
    """The kernel's value at ``x`` with flat priors, less the log Jacobians, and log p(y | theta) by scipy."""
    u, L = k.constrained(x)
    std = pl.to_std(u)
    bounded = np.isfinite(k.params.lo) & ~np.isfinite(k.params.hi)
    jac = x[:bounded.size][bounded].sum()  # log-transform Jacobians of the sd (and shape)
    # LKJ(1) on the correlation's coordinate y (rho = tanh(y / 2)): its log density, log(1 - rho^2) up to a
    # constant the kernel drops, stays in the value
    rho = np.tanh(0.5 * x[bounded.size:])
    jac += np.log1p(-rho**2).sum()
    beta_std = std[:k.n_beta]
    sd_std = std[k.n_beta + k.n_dpar:]
    # back to the data's units: W is standardised x with a ones column (centred intercept)
    sx, cx = pl.std.x_scale[0], pl.std.x_centre[0]
    beta = np.array([beta_std[0] - beta_std[1] * cx / sx, beta_std[1] / sx])
    z = pl.std.z_scale[0]
    Lam = np.diag(sd_std / z) @ L
    phi = std[k.n_beta] if k.n_dpar else None
    return k.logp(x)[0] - jac, exact_loglik(family, data, beta, Lam, phi, link)


@pytest.mark.parametrize("family,q", CASES)
def test_quadrature_is_the_marginal_likelihood(family, q):
    """The kernel's value with flat priors, less the log Jacobians, is log p(y | theta) computed by scipy."""
    k, design, pl = kernel_of(family, q, groups=6, per=5)
    k = flat_priors(k)
    data = simulate(family, q, groups=6, per=5)
    rng = np.random.default_rng(0)
    for _ in range(2):
        x = k.unconstrain_start() + rng.uniform(-0.5, 0.5, k.n_dim)
        value, exact = kernel_and_exact(k, pl, family, data, x)
        assert value == pytest.approx(exact, abs=2e-3 if q == 2 else 1e-4)


#: The binomial families' other links, brms's probit and cloglog: (family, q, link).
LINKS = [("binomial", 1, "probit"), ("bernoulli", 2, "probit"), ("binomial", 1, "cloglog"), ("bernoulli", 2, "cloglog")]


# `make test` runs one case per link (both kinds of rows, both group sizes); `make validate` all four.
@pytest.mark.parametrize("family,q,link", [c if c in (LINKS[0], LINKS[3]) else pytest.param(*c, marks=pytest.mark.slow)
                                           for c in LINKS])
def test_other_links_integrate_their_own_marginal_likelihood(family, q, link):
    """As above for the probit and cloglog links; and the gradient is the value's derivative (many nodes, and
    one: the Laplace rule's exact gradient needs each row's third derivative), also where the linear
    predictor reaches +-40, past erfc's range (probit's asymptotic series) and where exp(eta) overflows the
    cloglog's expm1."""
    k, design, pl = kernel_of(family, q, link=link, groups=6, per=5)
    assert k.code == {"probit": 4, "cloglog": 5}[link]
    flat = flat_priors(k)
    data = simulate(family, q, groups=6, per=5)
    rng = np.random.default_rng(0)
    for _ in range(2):
        x = flat.unconstrain_start() + rng.uniform(-0.5, 0.5, flat.n_dim)
        value, exact = kernel_and_exact(flat, pl, family, data, x, link)
        assert value == pytest.approx(exact, abs=2e-3 if q == 2 else 1e-4)
    base = k.unconstrain_start() + np.random.default_rng(1).uniform(-0.4, 0.4, k.n_dim)
    assert pl.params[0].name == "Intercept" and pl.params[0].beta == 1.0  # x[0] moves eta one for one
    for shift in (0.0, 40.0, -40.0):
        x = base + shift * (np.arange(k.n_dim) == 0)
        for kk, tol in ((k.with_nodes(20 if q == 1 else 14), 1e-5), (k.with_nodes(1), 1e-5)):
            value, grad = kk.logp(x)
            assert np.isfinite(value) and np.isfinite(grad).all()
            h = 1e-5
            fd = np.array([(kk.logp(x + h * e)[0] - kk.logp(x - h * e)[0]) / (2 * h) for e in np.eye(kk.n_dim)])
            np.testing.assert_allclose(grad, fd, rtol=tol, atol=tol)


@pytest.mark.parametrize("q", [1, 2])
def test_gamma_gradient_is_the_values_derivative_at_many_nodes_and_at_one(q):
    """The gamma family (log link; its shape is the family's parameter, as the negative binomial's): the gradient
    by Fisher's identity at many nodes, and the Laplace rule's exact gradient (the rows' third derivative and the
    derivatives of the first two by the shape), against finite differences of the value; also far from the
    mode, where y e^-eta is large."""
    k, _, pl = kernel_of("gamma", q, groups=6, per=5)
    assert k.code == 6 and k.n_dpar == 1
    base = k.unconstrain_start() + np.random.default_rng(1).uniform(-0.4, 0.4, k.n_dim)
    for shift in (0.0, 3.0, -3.0):
        x = base + shift * (np.arange(k.n_dim) == 0)
        for kk in (k.with_nodes(20 if q == 1 else 14), k.with_nodes(1)):
            value, grad = kk.logp(x)
            assert np.isfinite(value) and np.isfinite(grad).all()
            h = 1e-5
            fd = np.array([(kk.logp(x + h * e)[0] - kk.logp(x - h * e)[0]) / (2 * h) for e in np.eye(kk.n_dim)])
            np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-5)


# -- nodes precomputed once per fit ----------------------------------------------------------------


def design_of(formula_: str, data: pd.DataFrame, family: str) -> tuple[glmm.GlmmKernel, object]:
    """The kernel of ``formula_`` on ``data`` with default priors, and its plan."""
    fam = pipeline.options(family=family).family
    design = pipeline.design_of(formula_, data, fam)
    pl = make_plan(design, resolve_priors(design, as_prior_set(None)))
    k = glmm.build(design, pl)
    assert k is not None
    return k, pl


def test_group_maps_find_the_population_columns_in_each_groups_span():
    """A predictor with a random slope, or constant within groups, lies in the span of the group's own columns
    (W_g = Z_g A_g, checked row by row); one that varies within groups without a slope does not, and a family
    parameter (the negative binomial's shape) enters every group's likelihood: no precomputed nodes there (gamma's
    shape only scales it: they stay)."""
    k, _, _ = kernel_of("bernoulli", 2)
    r = k.rows
    group = np.repeat(np.arange(k.n_groups), np.diff(r.starts.astype(int)))
    np.testing.assert_allclose(np.einsum("nq,nqp->np", r.Z, k.maps[group]), r.W, atol=1e-12)
    assert kernel_of("bernoulli", 1)[0].maps is None
    assert kernel_of("negbinomial", 2)[0].maps is None
    assert kernel_of("gamma", 2)[0].maps is not None  # its shape scales the rows' log-likelihood: SCALED_CODES
    data = simulate("poisson", 1)
    data["z"] = data.groupby("g")["x"].transform("mean")  # a group-level predictor
    assert design_of("y ~ z + (1 | g)", data, "poisson")[0].maps is not None
    assert design_of("y ~ z + x + (1 | g)", data, "poisson")[0].maps is None


@pytest.mark.parametrize("family", ["binomial", "poisson", "gamma"])
def test_precomputed_nodes_integrate_the_same_marginal_likelihood(family):
    """Placed at one point they are adaptive quadrature's nodes there (same value); at other points they stay
    a quadrature of the same integral: against scipy's dense grid, to 2e-3 as adaptive quadrature. Their
    gradient is the value's exact derivative (finite differences, 1e-5). (Bernoulli is binomial with one trial
    per row, in the same code.) Gamma's shape moves with the other parameters: the nodes keep their places and
    their weights follow it (`FixedNodes.scaled`)."""
    k, _, pl = kernel_of(family, 2, groups=6, per=30)
    k = flat_priors(k)
    data = simulate(family, 2, groups=6, per=30)
    rng = np.random.default_rng(3)
    x0 = k.unconstrain_start() + rng.uniform(-0.3, 0.3, k.n_dim)
    fixed = k.with_fixed(x0, 7, np.ones(k.n_groups, dtype=bool))
    assert fixed is not None and fixed.rule_text.endswith("precomputed at the posterior mode for every group")
    assert fixed.logp(x0)[0] == pytest.approx(k.with_nodes(7).logp(x0)[0], abs=1e-8)
    for _ in range(2):
        x = x0 + rng.normal(0, 0.1, k.n_dim)
        value, exact = kernel_and_exact(fixed, pl, family, data, x)
        assert value == pytest.approx(exact, abs=2e-3)
        _, grad = fixed.logp(x)
        h = 1e-5
        fd = np.array([(fixed.logp(x + h * e)[0] - fixed.logp(x - h * e)[0]) / (2 * h) for e in np.eye(k.n_dim)])
        np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-5)


def test_the_pilot_precomputes_nodes_only_where_they_integrate_as_well(monkeypatch):
    """300 groups of 60 bernoulli rows, two terms: precomputed nodes match 12 x 12 adaptive ones over the
    pilot's points, so the pilot takes them (no pass over the rows per gradient). With 10 rows per group they
    move too far from the groups' conditionals as the hyperparameters move, and it keeps adaptive quadrature,
    unless its rules (value and gradient) are loosened."""
    informative, _, _ = kernel_of("bernoulli", 2, groups=300, per=60)
    assert glmm.choose_nodes(informative, seed=1).fixed is not None
    small, _, _ = kernel_of("bernoulli", 2, groups=300, per=10)
    assert glmm.choose_nodes(small, seed=1).fixed is None
    monkeypatch.setattr(glmm, "ACCURACY_SD", 10.0)
    monkeypatch.setattr(glmm, "GRADIENT_SD", 10.0)
    assert glmm.choose_nodes(small, seed=1).fixed is not None


def test_the_check_compares_precomputed_nodes_with_adaptive_ones():
    """The check after sampling compares precomputed nodes with adaptive quadrature at every checked draw: near
    where they were placed it passes; nodes placed far from the posterior fail it."""
    k, _, _ = kernel_of("bernoulli", 2, groups=300, per=60)
    chosen = glmm.choose_nodes(k, seed=1)
    assert chosen.fixed is not None
    from scipy.optimize import minimize

    mode = minimize(lambda x: -chosen.logp(x)[0], k.unconstrain_start(), jac=lambda x: -chosen.logp(x)[1]).x
    draws = mode + np.random.default_rng(0).normal(0, 0.03, (40, k.n_dim))
    near = glmm.check_accuracy(chosen, draws)
    assert near.ok and near.fixed_against == glmm.FIXED_CHECK_NODES[2]
    assert "against adaptive quadrature with 4^2 nodes per group" in near.text()
    far = k.with_fixed(mode + 3.0, chosen.fixed.nodes_per_dim, np.ones(k.n_groups, dtype=bool))
    assert far is not None
    assert not glmm.check_accuracy(far, draws).ok


@pytest.mark.parametrize("family,q", CASES)
def test_gradient_is_the_derivative_of_the_value(family, q):
    """The quadrature of Fisher's identity equals the value's derivative up to quadrature error: to 1e-5
    with many nodes (which checks the algebra), to 1% at the default (what NUTS gets). With one node (the
    Laplace approximation, large groups) the gradient is exact: to 1e-5."""
    k0, _, _ = kernel_of(family, q)
    x = k0.unconstrain_start() + np.random.default_rng(1).uniform(-0.4, 0.4, k0.n_dim)
    for k, tol in ((k0.with_nodes(20 if q == 1 else 14), 1e-5), (k0, 1e-2), (k0.with_nodes(1), 1e-5)):
        _, grad = k.logp(x)
        h = 1e-5
        fd = np.array([(k.logp(x + h * e)[0] - k.logp(x - h * e)[0]) / (2 * h) for e in np.eye(k.n_dim)])
        np.testing.assert_allclose(grad, fd, rtol=tol, atol=tol)


def test_fewer_nodes_are_chosen_only_where_they_integrate_as_well():
    """The pilot before sampling keeps 9 nodes on the hard case (its posterior needs 7 or more: measured SD of
    K vs 2K 0.12 at 5) and takes fewer where groups are informative."""
    hard, _, _ = kernel_of("bernoulli", 1, groups=200, per=3, sd=2.0)
    assert glmm.choose_nodes(hard, seed=1).nodes_per_dim == glmm.NODES[1]
    counts, _, _ = kernel_of("poisson", 2, groups=30, per=8, sd=0.7)
    assert glmm.choose_nodes(counts, seed=1).nodes_per_dim < glmm.NODES[2]


def test_the_pilot_refuses_rules_whose_gradient_disagrees(monkeypatch):
    """300 groups of 10 bernoulli rows, two terms: 4 x 4 nodes match the value to the pilot's SD, but their
    gradient (Fisher's identity) differs from 12 x 12's by about 0.1 posterior SDs, and with that NUTS's step
    size collapsed (0.02 against 0.56 at 5 x 5, 28 times the gradients per draw, on the benchmark's 1,000
    groups). The pilot takes 5 x 5; on the value alone it took 4 x 4."""
    k, _, _ = kernel_of("bernoulli", 2, groups=300, per=10, sd=1.0)
    assert glmm.choose_nodes(k, seed=1).nodes_per_dim == 5
    monkeypatch.setattr(glmm, "GRADIENT_SD", np.inf)
    assert glmm.choose_nodes(k, seed=1).nodes_per_dim == 4


def test_the_check_takes_equal_rules_as_perfect():
    """Where both rules agree exactly at every draw (all weights equal, or a tail of equal ones), the check
    passes with k = 0 instead of failing inside PSIS (found by SBC of a poisson slope model)."""
    assert glmm.weights_k(np.zeros(100)) == 0.0
    tail_flat = np.concatenate([np.linspace(-1, 0, 80), np.zeros(20)])
    assert glmm.weights_k(tail_flat) <= 0.7
    assert np.isfinite(glmm.weights_k(np.random.default_rng(0).normal(0, 0.05, 100)))


def test_the_check_fails_draws_that_did_not_move():
    """A stuck chain (every draw the same point) agrees with any rule, so the K vs 2K comparison alone would
    pass it (SD 0; it did, on 2% of the poisson slope SBC's fits before the warm-start fix): the check
    fails it and says why, so auto refits on the joint engine."""
    k, _, _ = kernel_of("poisson", 1)
    x = k.unconstrain_start()
    stuck = glmm.check_accuracy(k, np.tile(x, (400, 1)))
    assert stuck.sd == 0.0 and not stuck.ok and "stuck" in stuck.text()
    moving = glmm.check_accuracy(k, x + np.random.default_rng(0).normal(0, 0.05, (400, x.size)))
    assert moving.ok and "FAILS" not in moving.text()


def test_a_far_point_does_not_poison_the_next_evaluation():
    """Each thread starts a group's Newton solve at its last mode. After a far point (a divergent trajectory
    with a large sd), that start can sit where exp overflows in the Hessian; Newton then failed there at every
    later call, so the density was -inf everywhere and a chain stopped moving for good (400 divergences of
    400 in 2% of the poisson slope SBC's fits, whose b_x ranks were then U-shaped). Witness: the same point
    evaluated by a fresh kernel, which starts every group at zero."""
    k, _, _ = kernel_of("poisson", 2, groups=12, per=10, sd=1.5, seed=7)
    rng = np.random.default_rng(1)
    x = k.unconstrain_start() + 0.3
    poisoned = 0
    for scale in (1.0, 3.0, 10.0):
        for _ in range(60):
            k.logp(x + rng.normal(size=x.size) * scale)
            value = k.logp(x)[0]
            fresh = replace(k).logp(x)[0]  # a new buffer, so new warm starts
            poisoned += not np.isclose(value, fresh, rtol=0, atol=1e-6)
    assert poisoned == 0


def test_newton_converges_where_rounding_limits_the_mode():
    """Negative binomial groups with counts of 1e5: the gradient's rounding alone moves Newton by about 1e-10
    (the curvature per row saturates at the shape), above the Laplace rule's step tolerance of 1e-11, so the
    solve never met its tolerance and the density was -inf (a chain stuck for all its 1,000 draws in the
    negative binomial slope SBC). Converged by the Newton decrement instead; witness: 12 nodes per dimension."""
    data = simulate("negbinomial", 2, groups=12, per=10, sd=1.5, seed=3)
    data["y"] = data["y"] * 20_000 + 7
    fam = pipeline.options(family="negbinomial").family
    design = pipeline.design_of(formula("negbinomial", 2), data, fam)
    k = glmm.build(design, make_plan(design, resolve_priors(design, as_prior_set(None))))
    assert k is not None
    rng = np.random.default_rng(0)
    for x in k.unconstrain_start() + rng.normal(0, 0.3, (5, k.n_dim)):
        laplace, fine = k.with_nodes(1, 1).logp(x)[0], k.with_nodes(12, 12).logp(x)[0]
        assert np.isfinite(laplace) and abs(laplace - fine) < 0.5


def test_rows_are_summed_exactly():
    """Bernoulli rows sharing a group and predictors are one binomial row of their sums: same log density."""
    rng = np.random.default_rng(2)
    g = rng.integers(0, 8, 400)
    x = rng.integers(0, 3, 400).astype(float)
    y = (rng.random(400) < special.expit(0.3 * x + 0.2 * g - 0.8)).astype(int)
    data = pd.DataFrame({"y": y, "x": x, "g": g.astype(str)})
    fam = pipeline.options(family="bernoulli").family
    design = pipeline.design_of("y ~ x + (1 | g)", data, fam)
    pl = make_plan(design, resolve_priors(design, as_prior_set(None)))
    k = glmm.build(design, pl)
    assert k.rows.y.shape[0] <= 8 * 3 < 400 and k.rows.n_original == 400
    summed = data.groupby(["g", "x"], as_index=False).agg(y=("y", "sum"), n=("y", "size"))
    fam_b = pipeline.options(family="binomial").family
    design_b = pipeline.design_of("y | trials(n) ~ x + (1 | g)", summed, fam_b)
    k_b = glmm.build(design_b, make_plan(design_b, resolve_priors(design_b, as_prior_set(None))))
    # the same parameters in both standardisations: compare with flat priors at matching points
    x0 = np.array([-0.3, 0.2, np.log(0.8)])
    u = k.constrained(x0)[0]
    std = pl.to_std(u)
    pl_b = make_plan(design_b, resolve_priors(design_b, as_prior_set(None)))
    # map the bernoulli design's standardised coefficients onto the binomial design's
    beta = np.array([std[0] - std[1] * pl.std.x_centre[0] / pl.std.x_scale[0], std[1] / pl.std.x_scale[0]])
    beta_b = np.array([beta[0] + beta[1] * pl_b.std.x_centre[0], beta[1] * pl_b.std.x_scale[0]])
    sd_b = std[2] / pl.std.z_scale[0][0] * pl_b.std.z_scale[0][0]
    u_b = (np.array([beta_b[0], beta_b[1], sd_b]) - np.array([p.alpha for p in pl_b.params])) / \
        np.array([p.beta for p in pl_b.params])
    x_b = np.array([u_b[0], u_b[1], np.log(u_b[2])])
    a, b = flat_priors(k).logp(x0)[0] - x0[2], flat_priors(k_b).logp(x_b)[0] - x_b[2]
    assert a == pytest.approx(b, abs=1e-8)


def test_random_effect_draws_follow_their_exact_conditional():
    """At one fixed theta, 4000 draws of a group's effect have the mean, SD and quantiles of its exact
    conditional distribution (numerical integration), for a bernoulli group with 3 rows and SD 2."""
    k, design, pl = kernel_of("bernoulli", 1, groups=5, per=3, sd=2.0)
    x = k.unconstrain_start()
    x[k.n_beta] = np.log(2.0 / pl.params[k.n_beta].beta)  # sd 2 in standardised units
    xs = np.tile(x, (4000, 1))
    r, accepted = k.effects(xs, seed=3)
    assert accepted.mean() > 0.5
    assert_exact_conditional(k, pl.to_std(k.constrained(x)[0]), r)


def test_gamma_random_effect_draws_follow_their_exact_conditional():
    """As above for gamma groups of 2 rows (shape 1.5, SD 1.5): a skewed conditional (the e^-eta term)."""
    k, design, pl = kernel_of("gamma", 1, groups=5, per=2, sd=1.5)
    x = k.unconstrain_start()
    x[k.n_beta] = np.log(1.5 / pl.params[k.n_beta].beta)  # the shape
    x[k.n_beta + 1] = np.log(1.5 / pl.params[k.n_beta + 1].beta)  # the sd
    r, accepted = k.effects(np.tile(x, (4000, 1)), seed=3)
    assert accepted.mean() > 0.5
    std = pl.to_std(k.constrained(x)[0])
    assert_exact_conditional(k, std, r, lambda eta, y, n: gamma_ll(eta, y, std[k.n_beta]))


def assert_exact_conditional(k: glmm.GlmmKernel, std: np.ndarray, r: np.ndarray, row_ll=None) -> None:
    """Each group's draws ``r[:, g, 0]`` (one term; binomial-logit rows unless ``row_ll(eta, y, n)`` says
    otherwise) have the mean, SD and CDF at the mean of the exact conditional at ``std`` (standardised
    parameters), by numerical integration."""
    W, Z, y, n, s = k.rows.W, k.rows.Z[:, 0], k.rows.y, k.rows.n, k.rows.starts.astype(int)
    row_ll = row_ll or (lambda eta, yy, nn: yy * eta - nn * np.logaddexp(0, eta))
    for g in range(k.n_groups):
        rows = slice(s[g], s[g + 1])
        eta0 = W[rows] @ std[:k.n_beta]
        lam = std[k.n_beta + k.n_dpar]

        def dens(b, eta0=eta0, rows=rows):
            eta = eta0 + Z[rows] * b
            return np.exp(row_ll(eta, y[rows], n[rows]).sum() - 0.5 * (b / lam) ** 2)

        norm = integrate.quad(dens, -30, 30, limit=200)[0]
        mean = integrate.quad(lambda b: b * dens(b), -30, 30, limit=200)[0] / norm
        var = integrate.quad(lambda b: (b - mean) ** 2 * dens(b), -30, 30, limit=200)[0] / norm
        draws = r[:, g, 0]
        assert abs(draws.mean() - mean) < 4 * np.sqrt(var / r.shape[0])
        assert draws.std() == pytest.approx(np.sqrt(var), rel=0.06)
        cdf_at_mean = integrate.quad(dens, -30, mean, limit=200)[0] / norm
        assert (draws < mean).mean() == pytest.approx(cdf_at_mean, abs=0.03)


def test_random_effect_draws_from_precomputed_nodes_follow_their_exact_conditional():
    """Groups with precomputed nodes propose from the nodes' moments (no Newton solve): the draws still have
    their exact conditional's mean, SD and a quantile (numerical integration), with nodes placed at another
    point and four Metropolis steps; bernoulli, 3 rows per group, SD 2."""
    data = simulate("bernoulli", 1, groups=5, per=3, sd=2.0)
    k, pl = design_of("y ~ 1 + (1 | g)", data, "bernoulli")
    x = k.unconstrain_start()
    x[k.n_beta] = np.log(2.0 / pl.params[k.n_beta].beta)  # sd 2 in standardised units
    fixed = k.with_fixed(x + 0.2, 9, np.ones(k.n_groups, dtype=bool))
    assert fixed is not None
    r, accepted = fixed.effects(np.tile(x, (4000, 1)), seed=3, steps=4)
    assert accepted.mean() > 0.5
    assert_exact_conditional(k, pl.to_std(k.constrained(x)[0]), r)


def test_refusals_name_what_would_work():
    data = simulate("poisson", 2)
    data["h"] = (np.arange(len(data)) % 3).astype(str)  # crossed with g (nested factors: test_nested_refusals...)
    with pytest.raises(lb.FitError, match="crossed, not nested"):
        lb.fit("y ~ x + (1 | g) + (1 | h)", data, family="poisson", method="collapsed", progress=False)
    data["z"] = data["x"] ** 2
    with pytest.raises(lb.FitError, match="at most 2 terms"):
        lb.fit("y ~ x + (1 + x + z | g)", data, family="poisson", method="collapsed", progress=False)
    with pytest.raises(lb.FitError, match="link 'identity' has no collapsed kernel.*'log'"):
        lb.fit("y ~ x + (1 | g)", data, family=lb.family("poisson", link="identity"), method="collapsed",
               progress=False)
    with pytest.raises(lb.FitError, match='sampler="nutpie"'):
        lb.fit("y ~ x + (1 | g)", data, family="poisson", method="collapsed", sampler="pymc", progress=False)


# -- whole fits against the joint engine ---------------------------------------------------------------


def assert_agree(a, b, n_effects_allowed: float = 0.01) -> None:
    """Hyperparameters and population effects within 4 combined MCSE; at most 1% of random effects beyond 3.5."""
    (names, c), (names_j, j) = flat_draws(a.posterior, a.design), flat_draws(b.posterior, b.design)
    assert names == names_j
    kw = {"chain_axis": 0, "draw_axis": 1}
    mcse = np.hypot(array_stats.mcse(c, method="mean", **kw), array_stats.mcse(j, method="mean", **kw))
    z = np.abs(c.mean(axis=(0, 1)) - j.mean(axis=(0, 1))) / mcse
    effect = np.array([n.startswith("r_") for n in names])
    bad = [f"{n}: {v:.1f}" for n, v, e in zip(names, z, effect) if not e and v > 4]
    assert not bad, f"beyond 4 MCSE: {bad}"
    assert (z[effect] > 3.5).mean() <= n_effects_allowed, np.sort(z[effect])[-5:]


#: (family, q, groups, rows per group, group SD): the hard case (3 bernoulli rows per group, SD 2), counts with
#: a correlated slope, overdispersed counts, groups of 60 rows with a correlated slope (precomputed nodes:
#: every group's rows depend on its own two coefficients) and groups of 60 rows without (the Laplace rule).
PAIRS = [("bernoulli", 1, 60, 3, 2.0), ("poisson", 2, 30, 8, 0.7), ("negbinomial", 1, 30, 8, 0.7),
         ("bernoulli", 2, 30, 60, 1.0), ("bernoulli", 1, 12, 60, 1.0),
         # the rest of each family's intercept and correlated slope
         ("binomial", 1, 30, 6, 1.0), ("binomial", 2, 30, 6, 1.0), ("poisson", 1, 30, 8, 0.7),
         ("negbinomial", 2, 30, 8, 0.7), ("bernoulli", 2, 40, 8, 1.0),
         # the other links of the binomial families
         ("bernoulli:probit", 2, 40, 8, 1.0), ("binomial:cloglog", 1, 30, 6, 1.0),
         # the gamma family (log link), whose shape is sampled as the negative binomial's; with 60 rows per group
         # and slopes, precomputed nodes whose weights follow the shape
         ("gamma", 1, 30, 8, 0.7), ("gamma", 2, 30, 8, 0.7), ("gamma", 2, 30, 60, 0.7)]
#: The rule each pair's pilot is expected to choose (words of `GlmmKernel.rule_text`).
RULES = ["9 nodes per group", "nodes per group", "nodes per group", "precomputed at the posterior mode for every group",
         "for every group (each has 50 rows or more)", "per group", "per group", "per group", "per group",
         "per group", "per group", "per group", "per group", "per group",
         "precomputed at the posterior mode for every group"]


#: CI fits the hard case and the precomputed nodes' case; `make validate` all of them (each pair compiles a
#: joint model).
IN_CI = {0, 3}


@pytest.fixture(scope="module", params=[p if i in IN_CI else pytest.param(p, marks=pytest.mark.slow)
                                        for i, p in enumerate(PAIRS)],
                ids=[f"{p[0]}-q{p[1]}-{p[3]}rows" for p in PAIRS])
def engine_pair(request):
    family, q, groups, per, sd = request.param
    family, _, link = family.partition(":")
    data = simulate(family, q, groups=groups, per=per, sd=sd, link=link or "logit")
    kw = dict(family=lb.family(family, link=link or None), chains=2, draws=1000, tune=1000, seed=5)
    fits = tuple(quiet_fit(formula(family, q), data, method=m, **kw) for m in ("collapsed", "joint"))
    return (*fits, RULES[PAIRS.index(request.param)])


def test_collapsed_glmm_agrees_with_the_joint_engine(engine_pair):
    collapsed, joint, rule = engine_pair
    assert collapsed.engine == "collapsed" and joint.engine == "joint"
    assert rule in collapsed.info["quadrature_rule"]
    assert collapsed.info["quadrature_ok"] and collapsed.info["effects_acceptance"] > 0.5
    assert_agree(collapsed, joint)


def test_fit_reports_its_integration_and_looks_like_a_joint_fit(engine_pair):
    collapsed, joint, _ = engine_pair
    text = str(collapsed.summary())
    fixed = "precomputed" in collapsed.info["quadrature_rule"]
    assert "Gauss-Hermite quadrature" in text and "passes the rule" in text
    assert ("Check: against adaptive quadrature" if fixed else "Check: against twice the nodes") in text
    diag = collapsed.diagnostics()
    assert "nodes per" in diag.integration and "Integration:" in str(diag)
    assert list(collapsed.draws().columns) == list(joint.draws().columns)
    # LOO over the rows whose importance ratios both fits can smooth (Pareto k <= 0.7). Measured on the probit
    # pair (40 groups x 8 rows with slopes, 14 to 17 rows above 0.7), 4 chains x 1000 draws: elpd -173.13 and
    # -172.67 collapsed, -172.28 and -172.88 joint at two seeds; with 2 chains the smoothed rows alone differed
    # by 1.05 between the engines. A wrong density in log_lik moves it by tens.
    a, b = collapsed.loo(), joint.loo()
    ok = (a.pareto_k.values <= 0.7) & (b.pareto_k.values <= 0.7)
    assert ok.mean() >= 0.75  # the hard case (3 rows per group, SD 2): 10% of rows above 0.7
    assert a.elpd_i.values[ok].sum() == pytest.approx(b.elpd_i.values[ok].sum(), abs=1.5)
    assert "compile" not in collapsed.timings


def test_a_saved_fit_keeps_its_integration_report(engine_pair, tmp_path):
    collapsed, _, _ = engine_pair
    path = tmp_path / "glmm.lmmfit"
    collapsed.save(path)
    back = lb.load(path)
    assert back.engine == "collapsed" and back.info["integration"] == collapsed.info["integration"]
    assert "Check: against" in str(back.summary())


def test_auto_picks_the_collapsed_engine_and_falls_back_when_its_check_fails(monkeypatch):
    data = simulate("bernoulli", 1, groups=60, per=3, sd=2.0)
    kw = dict(family="bernoulli", chains=2, draws=300, tune=300, seed=2)
    auto = quiet_fit("y ~ x + (1 | g)", data, **kw)
    assert auto.engine == "collapsed" and auto.info["quadrature_ok"]
    # a rule no quadrature meets: the check is computed as always and fails (two nodes per group fail the real
    # rule too, with an SD of about 0.7, but sample 15x slower: 30 s a fit)
    monkeypatch.setattr(glmm, "ACCURACY_SD", 1e-9)
    fallback = quiet_fit("y ~ x + (1 | g)", data, **kw)
    assert fallback.engine == "joint" and "refitted on the joint engine" in fallback.info["fallback"]
    assert any("refitted on the joint engine" in w for w in fallback.warnings)
    assert "refitted on the joint engine" in str(fallback.summary())
    forced = quiet_fit("y ~ x + (1 | g)", data, method="collapsed", **kw)
    assert forced.engine == "collapsed" and not forced.info["quadrature_ok"]
    assert any("not accurate enough" in w for w in forced.warnings)


def test_a_registered_prior_runs_on_the_collapsed_engine():
    """A registered prior (the user's PyMC code) no longer sends auto to the joint engine: the C kernel
    integrates and PyTensor adds the prior's log density (two chains: a PyTensor function per thread). The
    posterior is the equal built-in prior's, and the prior is applied: a tight one holds b_x at 3."""
    import pymc as pm

    lb.register_distribution("glmm_test_normal", lambda name, mu, s, **kw: pm.Normal(name, mu, s, **kw), n_args=2)
    data = simulate("poisson", 1)
    kw = dict(family="poisson", chains=2, draws=300, tune=300, seed=1)
    fit = quiet_fit("y ~ x + (1 | g)", data, [lb.prior("glmm_test_normal(3, 0.01)", class_="b")], **kw)
    same = quiet_fit("y ~ x + (1 | g)", data, [lb.prior("normal(3, 0.01)", class_="b")], **kw)
    # the prior's PyTensor ops (compiled once per machine and cached); the model itself compiles nothing
    assert fit.engine == "collapsed" and fit.timings["compile"] > 0 and "compile" not in same.timings
    assert fit.info["quadrature_ok"]
    assert fit.info["route"].endswith("evaluated by PyTensor in Python") and same.info["route"] == "C kernel"
    a, b = fit.posterior_summary(), same.posterior_summary()
    assert abs(a.loc["b_x", "Estimate"] - 3) < 0.05
    for name in ("b_Intercept", "b_x", "sd_g__Intercept"):
        assert a.loc[name, "Estimate"] == pytest.approx(b.loc[name, "Estimate"], abs=0.25 * b.loc[name, "Est.Error"])


def test_a_probit_fit_recovers_its_simulated_model():
    """Through lb.fit, with nothing to compile: the 95% intervals cover the simulated coefficients, sds and
    correlation (0), and the integration check passes."""
    data = simulate("bernoulli", 2, groups=40, per=25, link="probit")
    fit = quiet_fit(formula("bernoulli", 2), data, family=lb.family("bernoulli", link="probit"), chains=2,
                    draws=500, tune=500, seed=2)
    assert fit.engine == "collapsed" and fit.info["quadrature_ok"] and "compile" not in fit.timings
    table = fit.posterior_summary()
    for name, truth in {"b_Intercept": 0.2, "b_x": 0.5, "sd_g__Intercept": 1.0, "sd_g__x": 0.5,
                        "cor_g__Intercept__x": 0.0}.items():
        lo, hi = table.loc[name, ["Q2.5", "Q97.5"]]
        assert lo < truth < hi, name


@pytest.mark.parametrize("family", ["bernoulli", "binomial", "poisson", "negbinomial"])
def test_auto_picks_the_quadrature_for_intercepts_and_correlated_slopes(family):
    """Every family with a kernel, one or two terms per group (count slopes were left to the joint engine for
    one stop, until their SBC was explained: docs/validation.md)."""
    from lmmbayes.engines import collapsed as cl

    fam = pipeline.options(family=family).family
    for q in (1, 2):
        assert cl.preferred(pipeline.design_of(formula(family, q), simulate(family, q), fam))


# -- two nested factors ------------------------------------------------------------------------------------


def simulate_nested(family: str, outer: int = 6, inner: int = 3, per: int = 4, sd: tuple[float, float] = (1.0, 0.8),
                    seed: int = 1, discrete_x: bool = False, slopes: tuple[float, float] | None = None,
                    intercept: float = 0.2) -> pd.DataFrame:
    """Rows of ``y ~ x + (1 | school/klass)``: ``inner`` classes per school (class labels repeat across schools,
    as in lme4's nested data), ``per`` rows per class, with known effects; with ``slopes`` (their SDs per
    factor), independent effects of x too, ``(1 + x | school/klass)``."""
    rng = np.random.default_rng(seed)
    a = np.repeat(np.arange(outer), inner * per)
    c = np.repeat(np.arange(outer * inner), per)
    x = rng.integers(0, 3, a.size).astype(float) if discrete_x else rng.normal(size=a.size)
    eta = intercept + 0.5 * x + (rng.normal(size=outer) * sd[0])[a] + (rng.normal(size=outer * inner) * sd[1])[c]
    if slopes is not None:
        eta += x * ((rng.normal(size=outer) * slopes[0])[a] + (rng.normal(size=outer * inner) * slopes[1])[c])
    data = {"x": x, "school": [f"s{k}" for k in a], "klass": [f"c{k % inner}" for k in c]}
    if family == "bernoulli":
        data["y"] = (rng.random(a.size) < special.expit(eta)).astype(int)
    elif family == "poisson":
        data["y"] = rng.poisson(np.exp(eta))
    elif family == "gamma":
        data["y"] = rng.gamma(GAMMA_SHAPE, np.exp(eta) / GAMMA_SHAPE)
    else:
        data["y"] = rng.poisson(rng.gamma(2.0, np.exp(eta) / 2.0))
    return pd.DataFrame(data)


NESTED = "y ~ x + (1 | school/klass)"


def nested_kernel(data: pd.DataFrame, family: str, formula_: str = NESTED) -> tuple[glmm.NestedGlmmKernel, object]:
    fam = pipeline.options(family=family).family
    design = pipeline.design_of(formula_, data, fam)
    assert glmm.applies(design) == (True, "")
    pl = make_plan(design, resolve_priors(design, as_prior_set(None)))
    return glmm.build_nested(design, pl), pl


def exact_nested_loglik(family: str, data: pd.DataFrame, beta: np.ndarray, sa: float, sb: float,
                        phi: float | None) -> float:
    """log p(y | theta) of the nested model on a fine grid: per school, the integral over its effect of the
    product over its classes of each class's integral (constants left out as the kernel leaves them)."""
    x, y = data["x"].to_numpy(), data["y"].to_numpy(dtype=float)
    w = data["w"].to_numpy(dtype=float) if "w" in data else np.ones_like(y)

    def row_ll(eta, yy):
        if family == "bernoulli":
            return yy * eta - np.logaddexp(0.0, eta)
        if family == "poisson":
            return yy * eta - np.exp(eta)
        if family == "gamma":
            return gamma_ll(eta, yy, phi)
        lt = np.logaddexp(np.log(phi), eta)
        return special.gammaln(yy + phi) - special.gammaln(phi) + phi * (np.log(phi) - lt) + yy * (eta - lt)

    grid = np.linspace(-12, 12, 721)
    step, log_norm = grid[1] - grid[0], -0.5 * grid**2 - 0.5 * np.log(2 * np.pi)
    logsum = lambda a, axis: special.logsumexp(a, axis=axis) + np.log(step)  # noqa: E731
    total = 0.0
    for _, rows in data.groupby("school").indices.items():
        outer = log_norm.copy()  # log of the integrand over the school's effect
        for _, cls in data.iloc[rows].groupby("klass").indices.items():
            r = rows[cls]
            eta = (beta[0] + beta[1] * x[r])[None, None, :] + sa * grid[:, None, None] + sb * grid[None, :, None]
            outer += logsum((w[r] * row_ll(eta, y[r][None, None, :])).sum(-1) + log_norm[None, :], 1)
        total += logsum(outer, 0)
    return total


@pytest.mark.parametrize("family", ["bernoulli", "bernoulli-weighted", "poisson", "negbinomial", "gamma"])
def test_nested_quadrature_is_the_marginal_likelihood(family):
    """The nested kernel's value with flat priors, less the log Jacobians, is log p(y | theta) on a fine grid:
    to 1e-7 with 19 nodes per level (which checks the algebra and the rows' preparation, summed Poisson rows
    included; gamma's integrands, with their e^-eta, need more than 15 for that), to 2e-3 at the default rule; and its gradient (Fisher's identity) is the value's derivative.
    Unit bernoulli rows take the vector passes, weighted ones the scalar code."""
    family, _, weighted = family.partition("-")
    data = simulate_nested(family, discrete_x=family == "poisson")
    if weighted:
        data["w"] = np.tile([0.5, 1.0, 2.0], len(data) // 3)
    k, pl = nested_kernel(data, family, "y | weights(w) ~ x + (1 | school/klass)" if weighted else NESTED)
    assert k.buffer[16] == float(family == "bernoulli" and not weighted)  # the vector passes' flag
    assert (k.rows.y.shape[0] < len(data)) == (family == "poisson") and k.rows.n_original == len(data)
    flat = replace(k, params=replace(k.params, fam=np.zeros_like(k.params.fam)))
    rng = np.random.default_rng(0)
    for _ in range(2):
        x = flat.unconstrain_start() + rng.uniform(-0.5, 0.5, flat.n_dim)
        std = pl.to_std(flat.constrained(x)[0])
        bounded = np.isfinite(flat.params.lo) & ~np.isfinite(flat.params.hi)
        sx, cx = pl.std.x_scale[0], pl.std.x_centre[0]
        beta = np.array([std[0] - std[1] * cx / sx, std[1] / sx])
        sds = std[k.n_beta + k.n_dpar:]
        sa, sb = sds[k.off_outer] / pl.std.z_scale[k.outer][0], sds[k.off_inner] / pl.std.z_scale[k.inner][0]
        exact = exact_nested_loglik(family, data, beta, sa, sb, std[k.n_beta] if k.n_dpar else None)
        jac = x[:bounded.size][bounded].sum()
        assert flat.with_nodes(19, 19).logp(x)[0] - jac == pytest.approx(exact, abs=1e-7)
        assert flat.logp(x)[0] - jac == pytest.approx(exact, abs=2e-3)
    x = k.unconstrain_start() + rng.uniform(-0.4, 0.4, k.n_dim)
    for kk, tol in ((k.with_nodes(15, 15), 1e-5), (k, 1e-2)):
        _, grad = kk.logp(x)
        h = 1e-5
        fd = np.array([(kk.logp(x + h * e)[0] - kk.logp(x - h * e)[0]) / (2 * h) for e in np.eye(kk.n_dim)])
        np.testing.assert_allclose(grad, fd, rtol=tol, atol=tol)


def test_nested_draws_follow_their_exact_conditional():
    """At one fixed theta, 4000 draws of a school's effect and of its three classes' (3 bernoulli rows each,
    SDs 2 and 1.5) have the means and SDs of their exact joint conditional (a grid over both effects)."""
    data = simulate_nested("bernoulli", outer=2, inner=3, per=3, sd=(2.0, 1.5), seed=3)
    k, pl = nested_kernel(data, "bernoulli")
    x = k.unconstrain_start()
    sd0 = k.n_beta + k.n_dpar
    for off, sd in ((k.off_outer, 2.0), (k.off_inner, 1.5)):
        x[sd0 + off] = np.log(sd / pl.params[sd0 + off].beta)
    effects, accepted = k.effects(np.tile(x, (4000, 1)), seed=3)
    assert accepted.mean() > 0.5
    std = pl.to_std(k.constrained(x)[0])
    W, y, za, zb = k.rows.W, k.rows.y, k.rows.za[:, 0], k.rows.zb[:, 0]
    sa, sb = std[sd0 + k.off_outer], std[sd0 + k.off_inner]
    grid = np.linspace(-9, 9, 1201)
    o, i = k.rows.outer_starts.astype(int), k.rows.inner_starts.astype(int)
    for h in range(2):
        classes = range(o[h], o[h + 1])
        # log p(y_c, v | u) on (u, v) grids per class, then the school's posterior over u
        logs = []
        for c in classes:
            r = slice(i[c], i[c + 1])
            eta = (W[r] @ std[:k.n_beta])[None, None, :] + sa * za[r] * grid[:, None, None] \
                + sb * zb[r] * grid[None, :, None]
            logs.append((y[r] * eta - np.logaddexp(0, eta)).sum(-1) - 0.5 * grid[None, :] ** 2)
        log_u = -0.5 * grid**2 + sum(special.logsumexp(lc, axis=1) for lc in logs)
        pu = np.exp(log_u - log_u.max())
        pu /= pu.sum()
        draws_u = effects[k.names[0]][:, h, 0] / sa
        mean_u, sd_u = (pu * grid).sum(), np.sqrt((pu * grid**2).sum() - (pu * grid).sum() ** 2)
        assert abs(draws_u.mean() - mean_u) < 4 * sd_u / np.sqrt(4000) * 2  # draws are autocorrelated a little
        assert draws_u.std() == pytest.approx(sd_u, rel=0.08)
        for c, lc in zip(classes, logs):
            pv = np.exp(lc - lc.max(axis=1, keepdims=True))
            pv /= pv.sum(axis=1, keepdims=True)  # p(v | u)
            m1, m2 = (pu[:, None] * pv * grid).sum(), (pu[:, None] * pv * grid**2).sum()
            level = k.rows.inner_order[c]
            draws_v = effects[k.names[1]][:, level, 0] / sb
            assert abs(draws_v.mean() - m1) < 8 * np.sqrt(m2 - m1**2) / np.sqrt(4000)
            assert draws_v.std() == pytest.approx(np.sqrt(m2 - m1**2), rel=0.08)


# -- nested factors of several terms: the Laplace approximation ---------------------------------------------

#: (family, formula): every combination of one and two terms per factor, each family's rows.
SEVERAL_TERMS = [("bernoulli", "y ~ x + (1 + x | school) + (1 | school:klass)"),
                 ("bernoulli-weighted", "y | weights(w) ~ x + (1 + x | school/klass)"),
                 ("poisson", "y ~ x + (1 + x | school/klass)"),
                 ("negbinomial", "y ~ x + (1 | school) + (1 + x | school:klass)"),
                 ("gamma", "y ~ x + (1 + x | school/klass)")]


def nested_row_ll(family: str, eta: np.ndarray, yy: np.ndarray, phi: float | None, nn: np.ndarray) -> np.ndarray:
    """A row's log-likelihood with the constants the kernel keeps (bernoulli; Poisson without log y!, ``nn`` the
    multiplicity of summed rows)."""
    if family == "bernoulli":
        return yy * eta - np.logaddexp(0.0, eta)
    if family == "poisson":
        return yy * eta - nn * np.exp(eta)
    if family == "gamma":
        return gamma_ll(eta, yy, phi)
    lt = np.logaddexp(np.log(phi), eta)
    return special.gammaln(yy + phi) - special.gammaln(phi) + phi * (np.log(phi) - lt) + yy * (eta - lt)


def several_terms_kernel(family: str, formula_: str, **kw) -> tuple[glmm.NestedGlmmKernel, object, pd.DataFrame]:
    family, _, weighted = family.partition("-")
    data = simulate_nested(family, discrete_x=family == "poisson", **kw)
    if weighted:
        data["w"] = np.tile([0.5, 1.0, 2.0], len(data) // 3)
    k, pl = nested_kernel(data, family, formula_)
    return k, pl, data


def standard_parameters(k: glmm.NestedGlmmKernel, pl, x: np.ndarray) -> tuple[np.ndarray, float | None, np.ndarray,
                                                                                 np.ndarray, float]:
    """beta, phi and each factor's Λ (sd times the correlations' Cholesky factor) in the kernel's standardised
    units at ``x``, and the log Jacobians a flat-prior kernel's value keeps (log sds, log shape, and LKJ(1)'s
    log(1 - rho^2) on each correlation's coordinate)."""
    u, L = k.constrained(x)
    std = pl.to_std(u)
    Lam = np.diag(std[k.n_beta + k.n_dpar:]) @ L
    bounded = np.isfinite(k.params.lo) & ~np.isfinite(k.params.hi)
    jac = x[:bounded.size][bounded].sum() + np.log1p(-np.tanh(0.5 * x[bounded.size:]) ** 2).sum()
    (qa, qb), oa, ob = k.terms, k.off_outer, k.off_inner
    return (std[:k.n_beta], std[k.n_beta] if k.n_dpar else None, Lam[oa:oa + qa, oa:oa + qa],
            Lam[ob:ob + qb, ob:ob + qb], jac)


def dense_nested_laplace(k: glmm.NestedGlmmKernel, family: str, beta, phi, Lam_a, Lam_b) -> float:
    """The Laplace approximation of log p(y | theta), computed densely and apart from the kernel's arrow algebra:
    per school, the mode of its stacked effects (its own and its classes') by Newton's method on a dense Hessian,
    each row's derivatives by central differences of its log-likelihood, and log|H| by numpy's slogdet."""
    r = k.rows
    o, i = r.outer_starts.astype(int), r.inner_starts.astype(int)
    eta0 = r.W @ beta + r.offset
    ta, tb = r.za @ Lam_a, r.zb @ Lam_b
    qa, qb = k.terms
    h = 1e-4
    total = 0.0
    for s in range(len(o) - 1):
        rows = slice(i[o[s]], i[o[s + 1]])
        nc = o[s + 1] - o[s]
        Z = np.zeros((rows.stop - rows.start, qa + nc * qb))
        Z[:, :qa] = ta[rows]
        for c in range(nc):
            cr = slice(i[o[s] + c] - rows.start, i[o[s] + c + 1] - rows.start)
            Z[cr, qa + c * qb:qa + (c + 1) * qb] = tb[rows][cr]
        y, w, e0, nn = r.y[rows], r.weight[rows], eta0[rows], r.n[rows]
        f = lambda eta: w * nested_row_ll(family, eta, y, phi, nn)  # noqa: E731
        v = np.zeros(Z.shape[1])
        for _ in range(100):
            eta = e0 + Z @ v
            l1 = (f(eta + h) - f(eta - h)) / (2 * h)
            l2 = (f(eta + h) - 2 * f(eta) + f(eta - h)) / h**2
            H = np.eye(v.size) + Z.T @ (-l2[:, None] * Z)
            step = np.linalg.solve(H, Z.T @ l1 - v)
            v += step
            if np.abs(step).max() < 1e-12:
                break
        total += f(e0 + Z @ v).sum() - 0.5 * v @ v - 0.5 * np.linalg.slogdet(H)[1]
    return total


@pytest.mark.parametrize("family,formula_", SEVERAL_TERMS, ids=[f for f, _ in SEVERAL_TERMS])
def test_nested_laplace_is_the_dense_laplace_approximation(family, formula_):
    """With several terms per factor the kernel's value, flat priors and log Jacobians aside, is the Laplace
    approximation computed densely apart from its arrow algebra (to 1e-6), and its gradient (implicit-function
    theorem) is the value's derivative (five-point finite differences)."""
    k, pl, _ = several_terms_kernel(family, formula_, per=5)
    assert k.laplace and k.nodes == glmm.NESTED_LAPLACE
    flat = replace(k, params=replace(k.params, fam=np.zeros_like(k.params.fam)))
    rng = np.random.default_rng(1)
    fam = family.partition("-")[0]
    for _ in range(2):
        x = flat.unconstrain_start() + rng.uniform(-0.5, 0.5, flat.n_dim)
        beta, phi, Lam_a, Lam_b, jac = standard_parameters(flat, pl, x)
        assert flat.logp(x)[0] - jac == pytest.approx(dense_nested_laplace(flat, fam, beta, phi, Lam_a, Lam_b),
                                                      abs=1e-6)
    x = k.unconstrain_start() + rng.uniform(-0.4, 0.4, k.n_dim)
    _, grad = k.logp(x)
    h = 1e-3
    f = lambda e: k.logp(x + e)[0]  # noqa: E731
    fd = np.array([(-f(2 * h * e) + 8 * f(h * e) - 8 * f(-h * e) + f(-2 * h * e)) / (12 * h) for e in np.eye(k.n_dim)])
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-5)


def several_terms_grid(k: glmm.NestedGlmmKernel, family: str, beta, phi, Lam_a, Lam_b, grid: np.ndarray):
    """Per school, log p(y_h, u) on a grid of its effect u (one or two terms), each class integrated over its
    effect v on the same grid (one or two terms): the witness for one and two terms per factor, one of them 1."""
    r = k.rows
    o, i = r.outer_starts.astype(int), r.inner_starts.astype(int)
    eta0 = r.W @ beta + r.offset
    qa, qb = k.terms
    mesh = lambda q: np.stack([m.ravel() for m in np.meshgrid(*[grid] * q, indexing="ij")], 1)  # noqa: E731
    U, V = mesh(qa), mesh(qb)
    step = grid[1] - grid[0]
    out = []
    for s in range(len(o) - 1):
        log_u = -0.5 * (U**2).sum(1) - 0.5 * qa * np.log(2 * np.pi)
        per_class = []
        for c in range(o[s], o[s + 1]):
            rows = slice(i[c], i[c + 1])
            eta = (eta0[rows][None, None, :] + (U @ Lam_a.T @ r.za[rows].T)[:, None, :]
                   + (V @ Lam_b.T @ r.zb[rows].T)[None, :, :])
            log_uv = (r.weight[rows] * nested_row_ll(family, eta, r.y[rows], phi, r.n[rows])).sum(-1) \
                - 0.5 * (V**2).sum(1)[None, :] - 0.5 * qb * np.log(2 * np.pi)
            per_class.append(log_uv)
            log_u = log_u + special.logsumexp(log_uv, axis=1) + qb * np.log(step)
        out.append((log_u, per_class))
    return U, V, out, step


@pytest.mark.parametrize("formula_", ["y ~ x + (1 + x | school) + (1 | school:klass)",
                                      "y ~ x + (1 | school) + (1 + x | school:klass)"])
def test_nested_quadrature_of_several_terms_is_the_marginal_likelihood(formula_):
    """The accuracy check's reference, nested quadrature with several terms per factor (its value), is log
    p(y | theta) on a grid to 1e-6 at 9 nodes per dimension; at the check's 3 x 4 nodes to 0.02."""
    k, pl, _ = several_terms_kernel("bernoulli", formula_, outer=2, inner=2, per=3, sd=(1.5, 1.0))
    flat = replace(k, params=replace(k.params, fam=np.zeros_like(k.params.fam)))
    x = flat.unconstrain_start() + np.random.default_rng(2).uniform(-0.3, 0.3, flat.n_dim)
    beta, phi, Lam_a, Lam_b, jac = standard_parameters(flat, pl, x)
    *_, schools, step = several_terms_grid(flat, "bernoulli", beta, phi, Lam_a, Lam_b, np.linspace(-8, 8, 121))
    exact = sum(special.logsumexp(log_u) + k.terms[0] * np.log(step) for log_u, _ in schools)
    value, grad = flat.with_nodes(9, 9).logp(x)
    assert value - jac == pytest.approx(exact, abs=1e-6)
    assert np.isnan(grad).all()  # the quadrature's value alone: never sampled
    assert flat.finer().logp(x)[0] - jac == pytest.approx(exact, abs=0.02)


@pytest.mark.parametrize("formula_", ["y ~ x + (1 + x | school) + (1 | school:klass)",
                                      "y ~ x + (1 | school) + (1 + x | school:klass)"])
def test_nested_draws_of_several_terms_follow_their_exact_conditional(formula_):
    """At one fixed theta, 4000 draws of two schools' effects and of their classes' (3 bernoulli rows each) have
    the means and SDs of their exact joint conditional, term by term (grids over both levels' effects)."""
    k, pl, _ = several_terms_kernel("bernoulli", formula_, outer=2, inner=2, per=3, sd=(1.5, 1.0))
    x = k.unconstrain_start() + np.random.default_rng(4).uniform(-0.3, 0.3, k.n_dim)
    effects, accepted = k.effects(np.tile(x, (4000, 1)), seed=3)
    assert accepted.mean() > 0.5
    beta, phi, Lam_a, Lam_b, _ = standard_parameters(k, pl, x)
    U, V, schools, _ = several_terms_grid(k, "bernoulli", beta, phi, Lam_a, Lam_b, np.linspace(-8, 8, 121))
    Ba, Bb = U @ Lam_a.T, V @ Lam_b.T  # the effects b = Λ u on the grids
    o = k.rows.outer_starts.astype(int)

    def assert_moments(draws: np.ndarray, p: np.ndarray, b: np.ndarray) -> None:
        m1 = p @ b
        sd = np.sqrt(p @ b**2 - m1**2)
        assert np.all(np.abs(draws.mean(0) - m1) < 8 * sd / np.sqrt(4000))  # draws are autocorrelated a little
        np.testing.assert_allclose(draws.std(0), sd, rtol=0.08)

    for s, (log_u, per_class) in enumerate(schools):
        pu = np.exp(log_u - special.logsumexp(log_u))
        assert_moments(effects[k.names[0]][:, s], pu, Ba)
        for c, log_uv in zip(range(o[s], o[s + 1]), per_class):
            pv = np.exp(log_uv - special.logsumexp(log_uv, axis=1, keepdims=True))  # p(v | u)
            assert_moments(effects[k.names[1]][:, k.rows.inner_order[c]], pu @ pv, Bb)


def test_nested_refusals_name_what_would_work():
    data = simulate_nested("poisson")
    data["other"] = np.arange(len(data)) % 4  # crossed with the schools
    with pytest.raises(lb.FitError, match="crossed, not nested"):
        lb.fit("y ~ x + (1 | school) + (1 | other)", data, family="poisson", method="collapsed", progress=False)
    data["x2"] = data["x"] ** 2
    with pytest.raises(lb.FitError, match="at most 2 terms per grouping factor, and 'school' has 3"):
        lb.fit("y ~ x + (1 + x + x2 | school) + (1 | school:klass)", data, family="poisson", method="collapsed",
               progress=False)
    with pytest.raises(lb.FitError, match="one grouping factor or two nested ones; this model has 3"):
        lb.fit("y ~ x + (1 | school/klass) + (1 | other)", data, family="poisson", method="collapsed", progress=False)


#: (family, schools, classes per school, rows per class, SDs): CI fits the first; `make validate` all, the hard
#: case (3 bernoulli rows per class, SDs 2 and 1.5) among them.
NESTED_PAIRS = [("bernoulli", 20, 5, 6, (1.0, 0.8)), ("bernoulli", 30, 4, 3, (2.0, 1.5)),
                ("poisson", 20, 4, 5, (0.7, 0.5)), ("negbinomial", 20, 4, 5, (0.7, 0.5)),
                ("gamma", 20, 4, 5, (0.7, 0.5))]


@pytest.fixture(scope="module", params=[p if i == 0 else pytest.param(p, marks=pytest.mark.slow)
                                        for i, p in enumerate(NESTED_PAIRS)],
                ids=[f"{p[0]}-{p[1]}x{p[2]}x{p[3]}" for p in NESTED_PAIRS])
def nested_pair(request):
    family, outer, inner, per, sd = request.param
    data = simulate_nested(family, outer, inner, per, sd, seed=3)
    kw = dict(family=family, chains=2, draws=1000, tune=1000, seed=5)
    return quiet_fit(NESTED, data, **kw), quiet_fit(NESTED, data, method="joint", **kw)


def test_nested_glmm_agrees_with_the_joint_engine(nested_pair):
    """auto picks the nested quadrature; hyperparameters, population and random effects agree with the joint
    engine; the fit reports its rule and its check, and looks like a joint fit."""
    collapsed, joint = nested_pair
    assert collapsed.engine == "collapsed" and joint.engine == "joint" and "compile" not in collapsed.timings
    assert "per 'school' level and, within each," in collapsed.info["quadrature_rule"]
    assert collapsed.info["quadrature_ok"] and collapsed.info["effects_acceptance"] > 0.5
    assert_agree(collapsed, joint)
    text = " ".join(str(collapsed.summary()).split())
    assert collapsed.info["quadrature_rule"] in text and "passes the rule" in text
    assert "Metropolis-within-Gibbs" in collapsed.diagnostics().integration
    assert list(collapsed.draws().columns) == list(joint.draws().columns)


SLOPES = "y ~ x + (1 + x | school/klass)"


@pytest.fixture(scope="module")
def laplace_fit():
    """Counts with correlated-free slopes at both levels, fitted by auto (20 schools x 4 classes x 10 rows)."""
    data = simulate_nested("poisson", 20, 4, 10, (0.6, 0.4), seed=3, slopes=(0.3, 0.2), intercept=1.5)
    return quiet_fit(SLOPES, data, family="poisson", chains=2, draws=500, tune=500, seed=5), data


def test_auto_fits_nested_factors_of_several_terms_by_laplace_where_it_is_accurate(laplace_fit):
    """auto integrates both factors' intercepts and slopes out (Laplace, checked against nested quadrature) and
    draws every effect; the fit has the joint engine's names, and its population effects cover the truth."""
    fit, data = laplace_fit
    assert fit.engine == "collapsed" and "compile" not in fit.timings
    assert fit.info["quadrature_rule"].startswith("the Laplace approximation per 'school' level")
    assert fit.info["quadrature_ok"] and fit.info["effects_acceptance"] > 0.5
    assert "nested adaptive quadrature, 3^2 nodes per 'school' level" in fit.info["quadrature_check"]
    names = set(fit.draws().columns)
    for name in ("cor_school__Intercept__x", "cor_school:klass__Intercept__x", "r_school[s0,x]",
                 "r_school:klass[s0_c3,x]", "sd_school:klass__x"):
        assert name in names, name
    s = fit.posterior_summary()
    for name, truth in (("b_Intercept", 1.5), ("b_x", 0.5)):
        assert abs(s.loc[name, "Estimate"] - truth) < 4 * s.loc[name, "Est.Error"], name
    assert fit.posterior["r_school:klass"].shape[-2:] == (80, 2)


def test_the_pilot_refuses_a_nested_laplace_that_would_fail_its_check():
    """Bernoulli classes of 6 rows with two terms: Laplace is measured before sampling against nested quadrature
    and refused (auto then fits on the joint engine: one fit); counts with many rows per class pass."""
    hard = simulate_nested("bernoulli", 20, 4, 6, (1.0, 0.8), seed=3, slopes=(0.4, 0.3))
    k, _ = nested_kernel(hard, "bernoulli", SLOPES)
    why = glmm.laplace_pilot(k, seed=1)
    assert why is not None and "differed from nested adaptive quadrature" in why
    easy = simulate_nested("poisson", 20, 4, 10, (0.6, 0.4), seed=3, slopes=(0.3, 0.2), intercept=1.5)
    assert glmm.laplace_pilot(nested_kernel(easy, "poisson", SLOPES)[0], seed=1) is None
    fit = quiet_fit(SLOPES, hard, family="bernoulli", chains=1, draws=100, tune=100, seed=5)
    assert fit.engine == "joint" and "before sampling" in fit.info["fallback"]
    assert "differed from nested adaptive quadrature" in str(fit.summary())
    # forced, the rule samples, and its check after sampling fails and warns
    forced = quiet_fit(SLOPES, hard, family="bernoulli", chains=1, draws=100, tune=100, seed=5, method="collapsed")
    assert forced.engine == "collapsed" and not forced.info["quadrature_ok"]
    assert any("not accurate enough" in w for w in forced.warnings)


#: (family, schools, classes, rows per class, SDs, slope SDs, formula): each family with several terms per factor,
#: forced onto the Laplace rule, whose check must pass (`make validate`). Negative binomial classes need 20 rows:
#: with 10 the pilot measured Laplace's SD at 0.088 against the check's quadrature (refused), with 20 at 0.048.
SLOPE_PAIRS = [("poisson", 20, 4, 10, (0.6, 0.4), (0.3, 0.2), SLOPES),
               ("negbinomial", 20, 4, 20, (0.6, 0.4), (0.3, 0.2), "y ~ x + (1 | school) + (1 + x | school:klass)"),
               ("gamma", 20, 4, 10, (0.6, 0.4), (0.3, 0.2), SLOPES),
               ("bernoulli", 15, 3, 80, (1.0, 0.7), (0.4, 0.3), "y ~ x + (1 + x | school) + (1 | school:klass)")]


@pytest.fixture(scope="module", params=[pytest.param(p, marks=pytest.mark.slow) for p in SLOPE_PAIRS],
                ids=[p[0] for p in SLOPE_PAIRS])
def slope_pair(request):
    family, outer, inner, per, sd, slopes, formula_ = request.param
    data = simulate_nested(family, outer, inner, per, sd, seed=3, slopes=slopes,
                           intercept=1.5 if family in ("poisson", "negbinomial") else 0.2)
    kw = dict(family=family, chains=2, draws=1000, tune=1000, seed=5)
    return tuple(quiet_fit(formula_, data, method=m, **kw) for m in ("collapsed", "joint"))


def test_nested_laplace_agrees_with_the_joint_engine(slope_pair):
    collapsed, joint = slope_pair
    assert collapsed.engine == "collapsed" and joint.engine == "joint"
    assert collapsed.info["quadrature_rule"].startswith("the Laplace approximation")
    assert collapsed.info["quadrature_ok"] and collapsed.info["effects_acceptance"] > 0.5
    assert_agree(collapsed, joint)


def test_the_vector_exp_of_the_bernoulli_passes_is_exact_to_rounding():
    """The bernoulli node passes take e^-|eta| two at a time from their own exp (Cody-Waite reduction, Taylor to
    r^12, Estrin's scheme): within 4 ulp of numpy's over [-708, 0], and clamped below, where e is 3e-308 or less
    and only 1 + e, e / (1 + e) ~ 0 are read. The gamma node passes take e^-eta of either sign from the same
    code: within 4 ulp over (0, 709], and clamped above at e^709."""
    import ctypes

    x = np.concatenate([-np.geomspace(1e-300, 708.0, 200_001), np.linspace(-708.0, 0.0, 100_001), [0.0, -0.0],
                        np.geomspace(1e-300, 709.0, 200_001), np.linspace(0.0, 709.0, 100_001)])
    out = np.empty_like(x)
    f64p = ctypes.POINTER(ctypes.c_double)
    kernel._library().vector_exp(x.ctypes.data_as(f64p), out.ctypes.data_as(f64p), x.size)
    assert np.all(np.abs(out - np.exp(x)) <= 4 * np.spacing(np.exp(x)))
    high = np.array([709.5, 800.0, np.inf, 1e300])
    kernel._library().vector_exp(high.ctypes.data_as(f64p), (top := np.empty(4)).ctypes.data_as(f64p), 4)
    assert np.all(np.abs(top - np.exp(709.0)) <= 4 * np.spacing(np.exp(709.0)))
    far = np.array([-709.0, -745.0, -1e4, -np.inf, -800.0, -1e300])
    kernel._library().vector_exp(far.ctypes.data_as(f64p), (low := np.empty(6)).ctypes.data_as(f64p), 6)
    assert np.all((low >= 0) & (low <= np.exp(-708.0) * (1 + 1e-15)))
