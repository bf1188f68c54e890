"""The hand-written collapsed log density against the PyTensor graph of the same model.

Witnesses: PyMC's log density of the collapsed model (value differences
between points, since the kernel leaves out constants, and gradients), and
central finite differences; then a fit through the kernel against a fit
through the PyTensor graph, and the starting point of both routes.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import quiet_fit

import lmmbayes as lb
from lmmbayes import pipeline
from lmmbayes.engines import collapsed as cl
from lmmbayes.engines.collapsed import kernel
from lmmbayes.engines.collapsed.algebra import DenseEffects
from lmmbayes.engines.plan import plan as make_plan
from lmmbayes.engines.pymc_model import param_groups
from lmmbayes.priors import as_prior_set, resolve_priors


def simulated(seed: int = 4, groups: int = 12, n: int = 150) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = rng.integers(0, groups, n)
    x, z = rng.normal(size=n), rng.normal(size=n)
    u = rng.multivariate_normal([0, 0], [[1.0, 0.3], [0.3, 0.5]], size=groups)
    y = 5.0 + x - 0.5 * z + u[g, 0] + u[g, 1] * x + rng.normal(size=n)
    return pd.DataFrame({"y": y, "x": x, "z": z, "cat": rng.choice(["a", "b", "c"], n),
                         "g": [f"g{k}" for k in g]})


CASES = {
    "slope_defaults": ("y ~ x + (1 + x | g)", []),
    "families": ("y ~ x + z + cat + (1 + x | g)", [
        lb.prior("normal(5, 2)", class_="Intercept"), lb.prior("student_t(3, 0, 2)", class_="b"),
        lb.prior("double_exponential(0, 1)", class_="b", coef="z"), lb.prior("logistic(0, 1)", class_="b", coef="catb"),
        lb.prior("uniform(-5, 5)", class_="b", coef="catc"), lb.prior("exponential(1)", class_="sigma"),
        lb.prior("gamma(2, 1)", class_="sd", coef="Intercept", group="g"),
        lb.prior("lognormal(0, 1)", class_="sd", coef="x", group="g"), lb.prior("lkj(3)", class_="cor")]),
    "positive": ("y ~ x + (x || g)", [
        lb.prior("inv_gamma(3, 2)", class_="sigma"), lb.prior("weibull(2, 1)", class_="sd"),
        lb.prior("cauchy(0, 2)", class_="Intercept"), lb.prior("normal(0, 3)", class_="b", lb=-1, ub=4)]),
    "no_intercept": ("y ~ 0 + x + (1 | g)", [lb.prior("normal(0, 1)", class_="sd", lb=0, ub=3)]),
    "beta_sd": ("y ~ x + (1 | g)", [lb.prior("beta(2, 2)", class_="sd")]),
    "gamma_intercept": ("y ~ x + (1 | g)", [lb.prior("gamma(20, 4)", class_="Intercept")]),
    "narrow_prior": ("y ~ x + (1 | g)", [lb.prior("normal(1, 1e-8)", class_="b", coef="x")]),
    "three_terms": ("y ~ x + z + (1 + x + z | g)", [lb.prior("lkj(2)", class_="cor")]),
    "four_terms": ("y ~ x * z + (1 + x * z | g)", []),
}
#: Blocks of three or more terms: PyMC's LKJCorr has another parameterisation, so their witnesses are finite
#: differences, the LKJ density itself (`test_blocks_of_any_size_have_the_lkj_density`) and a fit.
LARGE_BLOCKS = {"three_terms", "four_terms"}


def parts(formula, priors, data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        design = pipeline.design_of(formula, data, lb.family("gaussian"), "collapsed")
        resolved = resolve_priors(design, as_prior_set(priors))
    pl = make_plan(design, resolved)
    collapsed = cl.collapse(design, pl)
    return design, pl, collapsed, kernel.build(design, pl, collapsed)


def pymc_point(model, pl, x: np.ndarray, k: kernel.Kernel) -> tuple[dict, np.ndarray]:
    """The PyMC model's value variables at the kernel's point ``x``, and the kernel order of its gradient."""
    u, _ = k.constrained(x)
    point, order = {}, []
    groups = param_groups(pl)
    n_cor = 0
    for rv in model.free_RVs:
        if rv.name.startswith("u"):
            idx = groups[int(rv.name[1:])]
            value = u[idx]
        else:  # cor{j}__g_u: the LKJ(eta) coordinate of pair j, u = sigmoid(z)
            idx = [k.n_beta + 1 + k.q + n_cor]
            n_cor += 1
            value = 1 / (1 + np.exp(-x[idx[0]]))
        transform = model.rvs_to_transforms[rv]
        point[model.rvs_to_values[rv].name] = (transform.forward(value, *rv.owner.inputs).eval()
                                               if transform is not None else np.asarray(value))
        order.extend(idx)
    return point, np.array(order)


@pytest.fixture(scope="module")
def data():
    return simulated()


# Each case compiles a PyTensor graph (about 30 s): `make test` runs the two that cover the most prior
# families and the prior-aware scaling; `make validate` runs them all. The finite-difference gradient
# test below runs every case in `make test` (no compile).
DENSITY_IN_CI = {"families", "narrow_prior"}


@pytest.mark.parametrize("case", [c if c in DENSITY_IN_CI else pytest.param(c, marks=pytest.mark.slow)
                                  for c in sorted(set(CASES) - LARGE_BLOCKS)])
def test_kernel_matches_the_pytensor_density_and_gradient(case, data):
    formula, priors = CASES[case]
    design, pl, collapsed, k = parts(formula, priors, data)
    assert k is not None
    model, _ = cl.build_model(design, pl, collapsed)
    logp, dlogp = model.compile_logp(), model.compile_dlogp()
    rng = np.random.default_rng(1)
    xs = [k.unconstrain_start() + rng.uniform(-1, 1, k.n_dim) for _ in range(4)]
    got, want = [], []
    for x in xs:
        point, order = pymc_point(model, pl, x, k)
        assert sorted(order) == list(range(k.n_dim))
        value, grad = k.logp(x)
        got.append((value, grad[order]))
        want.append((logp(point), dlogp(point)))
    for (v, g), (w, h) in zip(got, want):
        # The kernel leaves out constants: compare differences between points.
        assert v - got[0][0] == pytest.approx(w - want[0][0], rel=1e-9, abs=1e-8)
        np.testing.assert_allclose(g, h, rtol=1e-8, atol=1e-8)


# Not the narrow prior: its value 1 + 1e-8 u carries rounding noise of 1e-8 in u, which a finite
# difference magnifies (the analytic gradient has no such noise; the graph comparison covers it).
@pytest.mark.parametrize("case", sorted(set(CASES) - {"narrow_prior"}))
def test_kernel_gradient_matches_finite_differences(case, data):
    formula, priors = CASES[case]
    k = parts(formula, priors, data)[3]
    rng = np.random.default_rng(2)
    x = k.unconstrain_start() + rng.uniform(-1, 1, k.n_dim)
    value, grad = k.logp(x)
    assert np.isfinite(value)
    h = 1e-6
    numeric = np.array([(k.logp(x + h * e)[0] - k.logp(x - h * e)[0]) / (2 * h) for e in np.eye(k.n_dim)])
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("m,eta", [(3, 2.0), (4, 1.0), (4, 3.5)])
def test_blocks_of_any_size_have_the_lkj_density(m, eta, data):
    """With the data's information about the effects removed, the kernel's density over a block's coordinates
    y is LKJ(eta) on the correlation matrix C(y) times |dC/dy|: f(y) - log|dC/dy| - (eta - 1) log det C is the
    same at every y. The Jacobian is taken by finite differences of the map, independently of the kernel."""
    from dataclasses import replace

    terms = " + ".join(["1", "x", "z", "x:z"][:m])
    design, pl, collapsed, k = parts(f"y ~ x * z + ({terms} | g)", [lb.prior(f"lkj({eta})", class_="cor")], data)
    shift, n, WtW, Wty, yty, ZtZ, ZtW, Zty = k.data
    k = replace(k, data=(shift, n, WtW, Wty, yty, 0 * ZtZ, 0 * ZtW, 0 * Zty))  # Lam no longer in the likelihood
    base = k.unconstrain_start()
    first = k.n_dim - m * (m - 1) // 2
    tri = np.tril_indices(m, -1)

    def corr(y):
        L = kernel.cholesky_corr(y, m)
        return (L @ L.T)[tri]

    rng = np.random.default_rng(3)
    out = []
    for _ in range(5):
        y = rng.normal(0, 1.2, m * (m - 1) // 2)
        x = base.copy()
        x[first:] = y
        h = 1e-6
        J = np.array([(corr(y + h * e) - corr(y - h * e)) / (2 * h) for e in np.eye(y.size)]).T
        L = kernel.cholesky_corr(y, m)
        logdet_C = 2 * np.log(np.diag(L)).sum()
        out.append(k.logp(x)[0] - np.linalg.slogdet(J)[1] - (eta - 1) * logdet_C)
    np.testing.assert_allclose(out, out[0], atol=1e-6)


@pytest.mark.parametrize("case", ["families", "gamma_intercept", "narrow_prior"])
def test_both_routes_start_at_the_same_point(case, data):
    """The PyTensor route (nested factors, custom priors, sampler='pymc') starts where the C kernel starts."""
    formula, priors = CASES[case]
    design, pl, collapsed, k = parts(formula, priors, data)
    model, _ = cl.build_model(design, pl, collapsed)
    start = model.initial_point()
    point, order = pymc_point(model, pl, k.unconstrain_start(), k)
    for name, value in point.items():
        np.testing.assert_allclose(start[name], value, rtol=1e-12, atol=1e-12, err_msg=name)


def test_kernel_applies_to_the_common_models_only(data):
    assert parts("y ~ x + (1 + x | g)", [], data)[3] is not None
    assert parts("y ~ 0 + x + (1 | g)", [], data)[3] is not None
    # Nested factors take the nested route; registered priors are added in Python.
    k = parts("y ~ x + (1 | g/h)", [], nested_data(data))[3]
    assert isinstance(k, kernel.FactorsKernel) and k.function == "nested"
    assert parts("y ~ x + z + (1 + x + z | g)", [], data)[3] is not None  # blocks of any size
    import pymc as pm

    lb.register_distribution("kernel_test_normal", lambda name, mu, s, **kw: pm.Normal(name, mu, s, **kw), n_args=2)
    k = parts("y ~ x + (1 | g)", [lb.prior("kernel_test_normal(0, 1)", class_="b")], data)[3]
    assert k is not None and k.params.python is not None and k.params.python.index.tolist() == [1]
    assert kernel.route(k.params) == ("C kernel, with prior('kernel_test_normal(0, 1)', class='b') evaluated by "
                                      "PyTensor in Python")


def test_a_registered_prior_is_added_to_the_c_density_in_python(data, crossed):
    """A registered distribution equal to a built-in one gives the same kernel density up to a constant and the
    same gradient, to 1e-9: on one factor and on the crossed route (whose decoupled β' leaves a β with a registered
    prior in place), for coefficients and for a positive prior on the sds (through its transform)."""
    import pymc as pm

    lb.register_distribution("kt_normal", lambda name, mu, s, **kw: pm.Normal(name, mu, s, **kw), n_args=2)
    lb.register_distribution("kt_halfnormal", lambda name, s, **kw: pm.HalfNormal(name, s, **kw), n_args=1,
                             support="positive")
    registered = [lb.prior("kt_normal(0.5, 2)", class_="b"), lb.prior("kt_halfnormal(3)", class_="sd")]
    builtin = [lb.prior("normal(0.5, 2)", class_="b"), lb.prior("normal(0, 3)", class_="sd")]
    for formula, frame in [("y ~ x + (1 + x | g)", data), ("y ~ x + (1 + x | g) + (1 | h)", crossed)]:
        k_reg, k_blt = parts(formula, registered, frame)[3], parts(formula, builtin, frame)[3]
        assert k_reg.params.python is not None and k_blt.params.python is None
        assert len(k_reg.params.python.parts) == 2  # one PyTensor density per prior, over all its parameters
        if isinstance(k_blt, kernel.FactorsKernel) and k_blt.maps:
            # the built-in β of x is decoupled (x holds β'), the registered one is not: compare in one system
            assert np.abs(k_blt.maps[0][:, 1]).max() > 0 and not k_reg.maps[0][:, 1].any()
            k_blt = dataclasses.replace(k_blt, maps=k_reg.maps)
        rng = np.random.default_rng(3)
        diffs = []
        for x in k_blt.unconstrain_start() + rng.normal(0, 0.7, (6, k_blt.n_dim)):
            (va, ga), (vb, gb) = k_reg.logp(x), k_blt.logp(x)
            diffs.append(va - vb)
            np.testing.assert_allclose(ga, gb, rtol=1e-9, atol=1e-9)
        assert np.ptp(diffs) < 1e-9
    # a far-out point (exp overflows a Python float) is outside the support, not an exception in nutpie's thread
    far = k_reg.unconstrain_start()
    far[k_reg.params.python.index[-1]] = 1e4
    assert k_reg.params.python(far)[0] == -np.inf


def test_the_c_kernel_was_built_with_the_package():
    """`pip install` builds engines/collapsed/_kernel.c; without it every collapsed fit would compile a graph."""
    assert kernel.available(), "lmmbayes.engines.collapsed._kernel is missing: reinstall with a C compiler present"
    logp, expand = kernel.c_callbacks()
    assert logp.address and expand.address and logp.address != expand.address


@pytest.mark.parametrize("case", ["families", pytest.param("three_terms", marks=pytest.mark.slow)])
def test_fits_through_the_kernel_and_through_the_graph_agree(case, data, monkeypatch):
    """Posterior means within 4 combined MCSE and SDs within 15%, every parameter; for a three-term block
    too, whose graph uses PyMC's LKJCorr (another parameterisation of the same prior)."""
    from arviz_stats.base import array_stats

    from lmmbayes.results.posterior import flat_draws

    formula, priors = CASES[case]
    kw = dict(chains=2, draws=1000, tune=1000, seed=5, method="collapsed")
    fast = quiet_fit(formula, data, priors, **kw)
    monkeypatch.setattr(kernel, "build", lambda *a: None)
    graph = quiet_fit(formula, data, priors, **kw)
    assert fast.info["route"] == "C kernel" and graph.info["route"] == "PyTensor graph"
    assert "compile" not in fast.timings and graph.timings["compile"] > 0  # the kernel compiles nothing
    (names, a), (names_g, b) = flat_draws(fast.posterior, fast.design), flat_draws(graph.posterior, graph.design)
    assert names == names_g
    mc = {"chain_axis": 0, "draw_axis": 1}
    tol = 4 * np.hypot(array_stats.mcse(a, method="mean", **mc), array_stats.mcse(b, method="mean", **mc))
    gap = np.abs(a.mean(axis=(0, 1)) - b.mean(axis=(0, 1)))
    assert not [n for n, g, t in zip(names, gap, tol) if g > t]
    ratio = a.std(axis=(0, 1)) / b.std(axis=(0, 1))
    assert not [n for n, r in zip(names, ratio) if abs(r - 1) > 0.15]


def test_collapsed_with_pymc_sampler_takes_the_graph_route(data):
    formula, priors = CASES["slope_defaults"]
    fit = quiet_fit(formula, data, priors, chains=1, draws=60, tune=60, seed=1, method="collapsed", sampler="pymc")
    assert fit.engine == "collapsed" and fit.info["route"] == "PyTensor graph"
    assert fit.posterior["b"].shape == (1, 60, 2)


def test_without_the_c_kernel_collapsed_fits_take_the_graph_route(data, monkeypatch):
    """An installation built without a C compiler still fits, through the PyTensor graph."""
    formula, priors = CASES["slope_defaults"]
    monkeypatch.setattr(kernel, "_library", lambda: None)
    assert not kernel.available()
    assert parts(formula, priors, data)[3] is None
    fit = quiet_fit(formula, data, priors, chains=1, draws=30, tune=30, seed=1, method="collapsed")
    assert fit.engine == "collapsed" and fit.timings["compile"] > 0


# -- crossed factors: the largest integrated out, the others sampled (FactorsKernel) -----------------------


def crossed_data(seed: int = 5, n: int = 600) -> pd.DataFrame:
    """120 levels of g crossed with 10 of h and 6 of k: more effects than the dense algebra takes."""
    rng = np.random.default_rng(seed)
    g, h, k = rng.integers(0, 120, n), rng.integers(0, 10, n), rng.integers(0, 6, n)
    x = rng.normal(size=n)
    a, c = rng.normal(0, 0.8, (120, 2)), rng.multivariate_normal([0, 0], [[1.0, 0.4], [0.4, 0.6]], 10)
    y = 2.0 + 0.5 * x + a[g, 0] + a[g, 1] * x + c[h, 0] + c[h, 1] * x + rng.normal(0, 0.5, 6)[k] + rng.normal(size=n)
    return pd.DataFrame({"y": y, "x": x, "g": [f"g{v}" for v in g], "h": [f"h{v}" for v in h],
                         "k": [f"k{v}" for v in k]})


CROSSED = {
    # g's slopes are integrated out, h's intercepts sampled
    "two_factors": ("y ~ x + (1 + x | g) + (1 | h)", [lb.prior("student_t(3, 0, 2)", class_="b"),
                                                      lb.prior("gamma(2, 1)", class_="sd", group="h")]),
    # h's correlated intercepts and slopes and k's intercepts sampled, and their cross-products with each other
    "three_factors": ("y ~ x + (1 | g) + (1 + x | h) + (1 | k)", [lb.prior("lkj(2)", class_="cor"),
                                                                  lb.prior("exponential(1)", class_="sigma"),
                                                                  lb.prior("normal(2, 3)", class_="Intercept")]),
}

#: Few effects in all: every one integrated out by a dense Cholesky (DenseEffects), in C.
DENSE = {
    "dense_slopes": ("y ~ x + (1 + x | h) + (1 | k)", [lb.prior("lkj(1.5)", class_="cor"),
                                                     lb.prior("gamma(2, 2)", class_="sd", group="k")]),
    "dense_three": ("y ~ x + (1 | h) + (1 + x | k) + (1 | h:k)", [lb.prior("normal(0, 1)", class_="sd", lb=0),
                                                                  lb.prior("normal(0, 2)", class_="b")]),
}


@pytest.fixture(scope="module")
def crossed():
    return crossed_data()


def crossed_point(model, pl, x: np.ndarray, k: kernel.FactorsKernel) -> tuple[dict, np.ndarray]:
    """`pymc_point` for a crossed model: the plan's parameters, then the sampled effects z."""
    u, _ = k.constrained(x)
    z = k.effects(x)
    point, order = {}, []
    groups = param_groups(pl)
    n_cor, first_z = 0, {}
    c = k.params.n_dim
    for name, G, q in k.sampled:
        first_z[name] = c
        c += G * q
    for rv in model.free_RVs:
        if rv.name.startswith("z__"):
            name = rv.name[3:]
            value, idx = z[name], list(range(first_z[name], first_z[name] + z[name].size))
        elif rv.name.startswith("u"):
            idx = groups[int(rv.name[1:])]
            value = u[idx]
        else:
            idx = [k.n_beta + 1 + k.params.q + n_cor]
            n_cor += 1
            value = 1 / (1 + np.exp(-x[idx[0]]))
        transform = model.rvs_to_transforms[rv]
        point[model.rvs_to_values[rv].name] = (transform.forward(value, *rv.owner.inputs).eval()
                                               if transform is not None else np.asarray(value))
        order.extend(idx)
    return point, np.array(order)


def test_crossed_models_take_the_crossed_kernel(crossed):
    for formula, priors in CROSSED.values():
        design, pl, collapsed, k = parts(formula, priors, crossed)
        assert isinstance(collapsed, cl.PartlyCollapsed) and collapsed.big.name == "g"
        assert isinstance(k, kernel.FactorsKernel)
        assert k.n_dim == k.params.n_dim + sum(G * q for _, G, q in k.sampled)


@pytest.mark.parametrize("case", ["three_factors", "dense_three", pytest.param("two_factors", marks=pytest.mark.slow),
                                  pytest.param("dense_slopes", marks=pytest.mark.slow)])
def test_crossed_kernel_matches_the_pytensor_density_and_gradient(case, crossed):
    """Both routes of FactorsKernel: crossed factors partly collapsed, and few effects all integrated out."""
    formula, priors = {**CROSSED, **DENSE}[case]
    design, pl, collapsed, k = parts(formula, priors, crossed)
    # the graph's coordinates (the sampler's own: the test below)
    assert_matches_the_graph(design, pl, collapsed, plain_kernel(k), seed=1, points=4, tol=1e-8)


def factorial_data(subjects: int = 130, items: int = 8, seed: int = 6) -> pd.DataFrame:
    """A 2 x 2 within-subject, within-item design: each subject answers each item once, the conditions rotated by
    a Latin square, so the subject-item cross-products hold four distinct 4 x 4 blocks."""
    rng = np.random.default_rng(seed)
    s, i = np.repeat(np.arange(subjects), items), np.tile(np.arange(items), subjects)
    cond = (s + i) % 4
    a, b = np.where(cond % 2 == 0, -0.5, 0.5), np.where(cond < 2, -0.5, 0.5)
    X = np.column_stack([np.ones(s.size), a, b, a * b])
    y = X @ [0.5, 0.4, 0.2, 0.1] + (X * rng.normal(0, 0.5, (subjects, 4))[s]).sum(axis=1) \
        + (X * rng.normal(0, 0.3, (items, 4))[i]).sum(axis=1) + rng.normal(size=s.size)
    return pd.DataFrame({"y": y, "a": a, "b": b, "subject": [f"s{v}" for v in s], "item": [f"i{v}" for v in i]})


#: The 2 x 2 design's subject-item cross-products are 4 distinct blocks (2 with one slope): `_bsr`'s table.
FACTORIAL = {"factorial_q2": ("y ~ a + (1 + a | subject) + (1 + a | item)", []),
             "factorial_q4": ("y ~ a * b + (1 + a * b | subject) + (1 + a * b | item)", [])}


@pytest.mark.parametrize("case,distinct", [("factorial_q2", 2), ("factorial_q4", 4)])
def test_a_factorial_design_takes_its_blocks_from_a_table_and_gets_the_same_density(case, distinct, monkeypatch):
    """A factorial design's cross-products of subjects and items (1,040 pairs of levels) hold a few distinct
    blocks, which `_bsr` stores once each (``_kernel.c`` then reads an index per pair). The density and gradient
    equal those of the same kernel with every block stored (only the order of additions differs); the gradient
    equals finite differences; with one slope (PyMC's LKJ parameterises q = 2 as the kernel does) the density
    and gradient equal the PyTensor graph's. q = 4 takes the vectorised 4 x 4 product."""
    design, pl, collapsed, k = parts(*FACTORIAL[case], factorial_data())
    assert isinstance(collapsed, cl.PartlyCollapsed) and collapsed.big.name == "subject"
    q = 2 if case == "factorial_q2" else 4
    rows, stored, n_table = kernel._bsr(collapsed.big_other[0].matrix(), q, q)[0]
    assert (rows, stored, n_table) == (130, 1040, distinct)
    monkeypatch.setattr(kernel, "TABLE_MAX_SHARE", 0.0)
    plain = kernel.build(design, pl, collapsed)
    monkeypatch.undo()
    # each of the two products: an index per pair and the table, in place of q^2 values per pair
    assert plain.buffer.size - k.buffer.size == 2 * (1040 * q * q - 1040 - distinct * q * q)
    rng = np.random.default_rng(4)
    for _ in range(3):
        x = k.unconstrain_start() + rng.uniform(-1, 1, k.n_dim)
        (v, g), (w, gw) = k.logp(x), plain.logp(x)
        assert v == pytest.approx(w, rel=1e-12)
        np.testing.assert_allclose(g, gw, rtol=1e-9, atol=1e-9)
    h = 1e-6
    numeric = np.array([(k.logp(x + h * e)[0] - k.logp(x - h * e)[0]) / (2 * h) for e in np.eye(k.n_dim)])
    np.testing.assert_allclose(g, numeric, rtol=1e-5, atol=1e-5)
    if q == 2:
        assert_matches_the_graph(design, pl, collapsed, plain_kernel(k), seed=2, points=3, tol=1e-8)


def assert_matches_the_graph(design, pl, collapsed, k: kernel.FactorsKernel, seed: int, points: int,
                             tol: float) -> None:
    """The kernel's value differences between random points and its gradient equal the PyTensor graph's."""
    model, _ = cl.build_model(design, pl, collapsed)
    logp, dlogp = model.compile_logp(), model.compile_dlogp()
    rng = np.random.default_rng(seed)
    got, want = [], []
    for _ in range(points):
        x = k.unconstrain_start() + rng.uniform(-1, 1, k.n_dim)
        point, order = crossed_point(model, pl, x, k)
        assert sorted(order) == list(range(k.n_dim))
        value, grad = k.logp(x)
        got.append((value, grad[order]))
        want.append((logp(point), dlogp(point)))
    for (v, g), (w, h) in zip(got, want):
        assert v - got[0][0] == pytest.approx(w - want[0][0], rel=1e-9, abs=1e-8)
        np.testing.assert_allclose(g, h, rtol=tol, atol=tol)


def plain_kernel(k: kernel.FactorsKernel) -> kernel.FactorsKernel:
    """``k`` in the PyTensor graph's coordinates: β and every sampled factor's z."""
    return dataclasses.replace(k, maps=(), centred=tuple((False,) * q for _, _, q in k.sampled))


def with_centring(k: kernel.FactorsKernel, centred: bool | int) -> kernel.FactorsKernel:
    """``k`` with every sampled term centred, none, or (an int r) the terms i with i % 2 == r."""
    pick = (lambda i: centred) if isinstance(centred, bool) else (lambda i: i % 2 == centred)
    return dataclasses.replace(k, centred=tuple(tuple(pick(i) for i in range(q)) for _, _, q in k.sampled))


@pytest.mark.parametrize("centred", [False, True, 0, 1], ids=["z", "centred", "even_centred", "odd_centred"])
@pytest.mark.parametrize("case", sorted(CROSSED))
def test_sampled_coordinates_are_the_plain_density_up_to_their_jacobian(case, centred, crossed):
    """The sampler's coordinates (FactorsKernel): β' = β + c(b), and each sampled factor's effects (centred) or
    z. The density at x is the plain coordinates' density at plain(x) plus log|d plain / dx| (−G_k log|Λ_k| per
    centred factor, 0 otherwise), and β' − β is the sampled effects' least-squares projection on W,
    recomputed here from the rows."""
    design, pl, collapsed, k = parts(*CROSSED[case], crossed)
    k, plain = with_centring(k, centred), plain_kernel(k)
    assert k.maps and k.buffer.size > plain.buffer.size
    rng = np.random.default_rng(3)
    for _ in range(4):
        x = k.unconstrain_start() + rng.uniform(-1, 1, k.n_dim)
        back = k.plain(x)
        assert k.logp(x)[0] == pytest.approx(plain.logp(back)[0] + k.log_jacobian(x), rel=1e-12, abs=1e-9)
        assert (k.log_jacobian(x) != 0) == any(any(c) for c in k.centred)
        assert np.array_equal(back[k.n_beta:k.params.n_dim], x[k.n_beta:k.params.n_dim])
        assert not np.allclose(back[:k.n_beta], x[:k.n_beta])
    rows = design.require_rows("test", "")
    u, L = k.constrained(x)
    std = pl.std
    W = np.column_stack([np.ones(rows.X.shape[0]), (rows.X - std.x_centre) / std.x_scale])
    fitted = np.zeros(W.shape[0])
    for name, z in k.effects(x).items():
        f = next(i for i, fa in enumerate(design.factors) if fa.name == name)
        sd = pl.to_std(u)[pl.indices("sd", name)]
        off = kernel.sd_offsets(pl)[name]
        lam = sd[:, None] * L[off:off + z.shape[1], off:off + z.shape[1]]
        b = z @ lam.T
        fitted += np.einsum("ni,ni->n", rows.factors[f].Z / std.z_scale[f], b[rows.factors[f].index])
    c = np.linalg.solve(W.T @ W, W.T @ fitted)
    np.testing.assert_allclose((x - back)[:k.n_beta] * k.params.beta[:k.n_beta], c, rtol=1e-8, atol=1e-10)


def test_centring_follows_how_well_the_data_determine_each_term():
    """kernel.centring: a term whose levels have many rows and a wide sd is sampled centred, one with a narrow
    sd (or few rows per level) is not; a correlated block may mix both."""
    rng = np.random.default_rng(8)

    def data(n, levels, sds):
        g, h, x = rng.integers(0, 150, n), rng.integers(0, levels, n), rng.normal(size=n)
        b = rng.normal(size=(levels, 2)) * sds
        y = 1.0 + 0.5 * x + rng.normal(size=150)[g] + b[h, 0] + b[h, 1] * x + rng.normal(size=n)
        return pd.DataFrame({"y": y, "x": x, "g": [f"g{v}" for v in g], "h": [f"h{v}" for v in h]})

    many = parts("y ~ x + (1 | g) + (1 + x | h)", [], data(2400, 8, [1.0, 0.05]))  # 300 rows per level of h
    few = parts("y ~ x + (1 | g) + (1 | h)", [], data(240, 60, [0.2, 0.0]))  # 4 rows per level of h
    assert isinstance(many[2], cl.PartlyCollapsed) and many[2].big.name == "g"
    assert kernel.centring(many[2]) == ((True, False),) and many[3].centred == ((True, False),)
    assert kernel.centring(few[2]) == ((False,),)


@pytest.mark.parametrize("case", sorted(CROSSED) + sorted(DENSE))
def test_crossed_kernel_gradient_matches_finite_differences(case, crossed):
    """Both routes, and for crossed factors both parameterisations of the sampled factors."""
    k = parts(*{**CROSSED, **DENSE}[case], crossed)[3]
    rng = np.random.default_rng(2)
    x = k.unconstrain_start() + rng.uniform(-1, 1, k.n_dim)
    for each in [k] if case in DENSE else [with_centring(k, c) for c in (False, True, 0, 1)]:
        value, grad = each.logp(x)
        assert np.isfinite(value)
        h = 1e-6
        numeric = np.array([(each.logp(x + h * e)[0] - each.logp(x - h * e)[0]) / (2 * h) for e in np.eye(k.n_dim)])
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case,route", [
    ("three_factors", "C kernel; h, k sampled, g integrated out"),
    pytest.param("dense_three", "C kernel", marks=pytest.mark.slow),
    pytest.param("factorial_q4", "C kernel; item sampled, subject integrated out", marks=pytest.mark.slow)])
def test_crossed_fits_through_the_kernel_and_through_the_graph_agree(case, route, crossed, monkeypatch):
    """Three crossed factors, the largest integrated out (or, with few effects, all of them; or the maximal
    2 x 2 design, q = 4 on both, its blocks from a table): every parameter's posterior mean and SD within 4
    combined MCSE (random effects too: the integrated ones are drawn given each draw's sampled ones), and the
    kernel compiles nothing."""
    from arviz_stats.base import array_stats

    from lmmbayes.results.posterior import flat_draws

    formula, priors = {**CROSSED, **DENSE, **FACTORIAL}[case]
    data = factorial_data() if case in FACTORIAL else crossed
    kw = dict(chains=2, draws=1000, tune=1000, seed=5, method="collapsed")
    fast = quiet_fit(formula, data, priors, **kw)
    monkeypatch.setattr(kernel, "build", lambda *a: None)
    graph = quiet_fit(formula, data, priors, **kw)
    assert fast.info["route"] == route
    assert graph.info["route"].startswith("PyTensor graph")
    assert "compile" not in fast.timings and graph.timings["compile"] > 0
    (names, a), (names_g, b) = flat_draws(fast.posterior, fast.design), flat_draws(graph.posterior, graph.design)
    assert names == names_g
    mc = {"chain_axis": 0, "draw_axis": 1}
    tol = 4 * np.hypot(array_stats.mcse(a, method="mean", **mc), array_stats.mcse(b, method="mean", **mc))
    gap = np.abs(a.mean(axis=(0, 1)) - b.mean(axis=(0, 1)))
    far = [n for n, g, t in zip(names, gap, tol) if g > t]
    assert len(far) <= 0.01 * len(names), far  # about 140 random effects: one may stray by chance
    # SDs within 4 combined MCSE of the SD (sd's heavy tail with 6 levels of k makes all six r_k's SDs move
    # together by 10% or so between two fits of 2 x 1000 draws)
    tol_sd = 4 * np.hypot(array_stats.mcse(a, method="sd", **mc), array_stats.mcse(b, method="sd", **mc))
    gap_sd = np.abs(a.std(axis=(0, 1)) - b.std(axis=(0, 1)))
    far_sd = [n for n, g, t in zip(names, gap_sd, tol_sd) if g > t]
    assert len(far_sd) <= 0.01 * len(names), far_sd


def test_dense_models_take_the_dense_kernel(crossed):
    for formula, priors in DENSE.values():
        design, pl, collapsed, k = parts(formula, priors, crossed)
        assert isinstance(collapsed, DenseEffects)
        assert isinstance(k, kernel.FactorsKernel) and k.function == "dense" and k.sampled == ()


# -- two nested factors: a Schur complement per outer level (FactorsKernel, "nested") ------------------------


def nested_data(data: pd.DataFrame) -> pd.DataFrame:
    """``data`` with h: three levels within each of its 12 levels of g (36 in all)."""
    return data.assign(h=[f"h{i % 3}" for i in range(len(data))])


NESTED = {
    "intercepts": ("y ~ x + (1 | g/h)", []),
    "slopes": ("y ~ x + (1 + x | g/h)", [lb.prior("lkj(2)", class_="cor"), lb.prior("gamma(2, 1)", class_="sd")]),
    # the inner factor first in the formula, with other terms than the outer one's
    "inner_first": ("y ~ x + z + (1 + z | g:h) + (1 + x || g)", [lb.prior("student_t(3, 0, 2)", class_="b"),
                                                               lb.prior("exponential(1)", class_="sigma")]),
    "three_terms": ("y ~ 0 + x + z + (1 + x + z | g) + (1 | g:h)", [lb.prior("lkj(1.5)", class_="cor")]),
}


def nested_as_dense(case, data, monkeypatch):
    """The nested case's kernel, and the dense kernel of the same model: every effect integrated out by one
    dense Cholesky (the nesting hidden from the layout), an independent route through the same algebra."""
    formula, priors = NESTED[case]
    nested = nested_data(data)
    k = parts(formula, priors, nested)[3]
    from lmmbayes.design import crossprod

    with monkeypatch.context() as m:
        m.setattr(crossprod, "nested_parent", lambda *a: None)
        collapsed, dense = parts(formula, priors, nested)[2:]
    assert isinstance(collapsed, DenseEffects) and dense.function == "dense"
    return k, dense


@pytest.mark.parametrize("case", list(NESTED))
def test_nested_kernel_equals_the_dense_kernel_of_the_same_model(case, data, monkeypatch):
    k, dense = nested_as_dense(case, data, monkeypatch)
    assert k.function == "nested" and k.n_dim == dense.n_dim
    rng = np.random.default_rng(4)
    for _ in range(4):
        x = k.unconstrain_start() + rng.uniform(-1.5, 1.5, k.n_dim)
        (v, g), (w, h) = k.logp(x), dense.logp(x)
        assert v == pytest.approx(w, rel=1e-11, abs=1e-9)
        np.testing.assert_allclose(g, h, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("case", list(NESTED))
def test_nested_kernel_gradient_matches_finite_differences(case, data):
    k = parts(*NESTED[case], nested_data(data))[3]
    x = k.unconstrain_start() + np.random.default_rng(5).uniform(-1, 1, k.n_dim)
    value, grad = k.logp(x)
    assert np.isfinite(value)
    h = 1e-6
    numeric = np.array([(k.logp(x + h * e)[0] - k.logp(x - h * e)[0]) / (2 * h) for e in np.eye(k.n_dim)])
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["slopes", "inner_first"])
def test_nested_kernel_matches_the_pytensor_density_and_gradient(case, data):
    assert_matches_the_graph(*parts(*NESTED[case], nested_data(data)), seed=6, points=3, tol=1e-7)


def test_a_nested_fit_runs_in_c_and_recovers_the_simulated_structure():
    """(1 + x | school/class) through lb.fit: no compile, and the 95% intervals cover the simulated sds and
    correlation and nearly all the simulated effects of the inner factor (its 120 x 2 of them)."""
    rng = np.random.default_rng(8)
    schools, classes, pupils = 30, 4, 12
    school = np.repeat(np.arange(schools), classes * pupils)
    cls = np.repeat(np.arange(schools * classes), pupils)
    x = rng.normal(size=cls.size)
    u = rng.multivariate_normal([0, 0], [[1.0, 0.2], [0.2, 0.25]], schools)
    v = rng.normal(0, [0.6, 0.3], (schools * classes, 2))
    y = 1.0 + 0.5 * x + u[school, 0] + u[school, 1] * x + v[cls, 0] + v[cls, 1] * x + rng.normal(0, 0.7, cls.size)
    df = pd.DataFrame({"y": y, "x": x, "school": [f"s{k}" for k in school], "class": [f"c{k % classes}" for k in cls]})
    fit = quiet_fit("y ~ x + (1 + x | school/class)", df, chains=2, draws=500, tune=500, seed=3)
    assert fit.engine == "collapsed" and fit.info["route"] == "C kernel" and "compile" not in fit.timings
    table = fit.posterior_summary()
    truth = {"sd_school__Intercept": 1.0, "sd_school__x": 0.5, "cor_school__Intercept__x": 0.4,
             "sd_school:class__Intercept": 0.6, "sd_school:class__x": 0.3, "sigma": 0.7, "b_x": 0.5}
    for name, value in truth.items():
        lo, hi = table.loc[name, ["Q2.5", "Q97.5"]]
        assert lo < value < hi, name
    inside = [table.loc[f"r_school:class[s{k // classes}_c{k % classes},{term}]", "Q2.5"] < v[k, t]
              < table.loc[f"r_school:class[s{k // classes}_c{k % classes},{term}]", "Q97.5"]
              for k in range(schools * classes) for t, term in enumerate(["Intercept", "x"])]
    assert np.mean(inside) > 0.88
