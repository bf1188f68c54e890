"""Marginal likelihoods by bridge sampling and Bayes factors (brms's ``bridge_sampler`` and ``bayes_factor``).

The log marginal likelihood ``log p(y) = log ∫ p(y | θ) p(θ) dθ`` is estimated
as the R package bridgesampling does it with ``method = "normal"`` (Gronau et
al. 2017; Meng and Wong 1996): the posterior draws, mapped to the unbounded
scale the sampler moves on, are split in two halves by iteration; a
multivariate normal fitted to the first half is the proposal; the second half
and as many proposal draws enter Meng and Wong's iterative scheme; and the
error measures are Frühwirth-Schnatter's (2004) approximate relative mean
squared error, as bridgesampling's ``error_measures``.

A marginal likelihood needs the log density with *every* constant, which
samplers do not: `posterior_density` takes the engine's own PyMC model
(`lmmbayes.engines.joint.build_model` or
`lmmbayes.engines.collapsed.build_model`), whose prior, likelihood and
transform terms are complete, and adds in one place what the engines drop
because sampling does not need it:

- ``log b`` per parameter: NUTS samples ``u`` with ``user = a + b u``
  (`lmmbayes.engines.plan`), so the prior density of ``u`` is ``b p(a + b u)``;
- ``−log P(lo < θ < hi)`` per bounded parameter: a half-normal on an SD is
  the normal cut at 0 and needs its truncated mass (brms's ``lccdf`` terms);
- ``−Σ_i w_i log y_scale`` where the response is modelled in standardised
  units ``(y − shift) / y_scale`` (identity-link location-scale families);
- on the collapsed engine, the Jacobian ``Σ_i w_i log t'(y_i)`` of the scale on which the family is
  normal (lognormal: ``t(y) = log y``; `lmmbayes.families.Family.normal_response`);
- with ``se()`` on the collapsed engine, the known SDs' ``−½ Σ w_i log 2π s_i²``
  (that engine folds them into row weights and keeps only a constant in σ);
- ``log (K − 1)!`` for the ordered thresholds of an ordinal model under one
  shared prior: independent priors restricted to increasing order, the
  distribution `lmmbayes.engines.prior.draw` draws from.

For a collapsed-engine fit the random effects are integrated out exactly, so
the bridge runs over the hyperparameters only (β, σ, the SDs and
correlations): a handful of dimensions where the normal proposal fits the
posterior closely, which makes the estimate unusually accurate. A joint-engine
fit bridges over every parameter, random effects included.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _validate as check
from ..errors import DataError, FitError, PriorError
from ..results.model import FitResult, same_data
from ..results.posterior import dpar_names
from .display import pre_html

#: bridgesampling's defaults: the starting ratio, the tolerance on its relative change, and at most this many steps.
R0, TOL, MAXITER = 0.5, 1e-10, 1000


# -- the iterative scheme and its error (plain arrays) --------------------------------------------------


@dataclass(frozen=True)
class SchemeResult:
    """Meng and Wong's iterative estimate: ``logml``, the steps taken, and whether it converged."""

    logml: float
    niter: int
    converged: bool


def iterative_scheme(q11: np.ndarray, q12: np.ndarray, q21: np.ndarray, q22: np.ndarray, neff: float, *,
                     r0: float = R0, tol: float = TOL, maxiter: int = MAXITER) -> SchemeResult:
    """The bridge estimate of ``log p(y)`` by Meng and Wong's (1996) optimal-bridge iteration.

    Parameters
    ----------
    q11, q12 : (N1,) arrays
        The log unnormalised posterior and the proposal's log density at the posterior draws.
    q21, q22 : (N2,) arrays
        The same at the proposal's draws.
    neff : float
        Effective sample size of the posterior draws (their weight ``s1`` in the optimal bridge).

    Notes
    -----
    With ``l1 = q11 − q12``, ``l2 = q21 − q22`` and ``l* = median(l1)`` (which keeps
    the exponentials in range), ``s1 = neff / (neff + N2)``, ``s2 = N2 / (neff + N2)``::

        r ← (N1 / N2) Σ e^{l2 − l*} / (s1 e^{l2 − l*} + s2 r)  /  Σ 1 / (s1 e^{l1 − l*} + s2 r)

    until ``|Δr / r| <= tol``; ``logml = log r + l*``.
    """
    l1, l2 = q11 - q12, q21 - q22
    lstar = float(np.median(l1))
    n1, n2 = l1.size, l2.size
    s1, s2 = neff / (neff + n2), n2 / (neff + n2)
    e1, e2 = np.exp(l1 - lstar), np.exp(l2 - lstar)
    r = r0
    for i in range(1, maxiter + 1):
        old = r
        num = np.sum(e2 / (s1 * e2 + s2 * r))
        den = np.sum(1.0 / (s1 * e1 + s2 * r))
        r = (n1 / n2) * num / den
        if not (math.isfinite(r) and r > 0):
            return SchemeResult(math.nan, i, False)
        if abs((r - old) / r) <= tol:
            return SchemeResult(math.log(r) + lstar, i, True)
    return SchemeResult(math.log(r) + lstar, maxiter, False)


def spectrum0_ar(x: np.ndarray) -> float:
    """The spectral density at frequency 0 of ``x`` from an autoregressive fit (coda's ``spectrum0.ar``).

    As R's ``ar(x, aic = TRUE)`` (Yule-Walker, order up to ``min(n − 1, 10 log10 n)`` chosen by
    AIC): ``var.pred / (1 − Σ φ)²``, with ``var.pred`` the innovations variance times
    ``n / (n − (order + 1))``.
    """
    x = np.asarray(x, dtype=float)
    n = x.size
    t = np.arange(n, dtype=float)
    resid = x - np.polyval(np.polyfit(t, x, 1), t) if n > 2 else x - x.mean()
    if n < 3 or not np.std(resid) > 1e-14 * max(1.0, float(np.abs(x).max())):
        return 0.0
    xc = x - x.mean()
    order_max = int(min(n - 1, math.floor(10 * math.log10(n))))
    acov = np.array([xc[: n - k] @ xc[k:] / n for k in range(order_max + 1)])
    # Levinson-Durbin: the AR coefficients and innovations variance of every order up to order_max
    phi = np.zeros(0)
    var = acov[0]
    fits = [(phi, var)]
    for k in range(1, order_max + 1):
        kappa = (acov[k] - phi @ acov[1:k][::-1]) / var if k > 1 else acov[1] / var
        phi = np.append(phi - kappa * phi[::-1], kappa)
        var = var * (1.0 - kappa**2)
        fits.append((phi, var))
        if not var > 0:
            break
    aic = [n * math.log(v) + 2 * k if v > 0 else math.inf for k, (_, v) in enumerate(fits)]
    k = int(np.argmin(aic))
    phi, var = fits[k]
    var_pred = var * n / (n - (k + 1))
    return float(var_pred / (1.0 - phi.sum()) ** 2)


def error_measures(q11: np.ndarray, q12: np.ndarray, q21: np.ndarray, q22: np.ndarray,
                   logml: float) -> tuple[float, float]:
    """Frühwirth-Schnatter's (2004) approximate relative mean squared error of ``exp(logml)``, and its root.

    As bridgesampling's ``error_measures``: with ``f1 = p/(s1 p + s2 g)`` at the
    proposal's draws and ``f2 = g/(s1 p + s2 g)`` at the posterior's (``p`` the
    normalised posterior, ``g`` the proposal, ``s_i = N_i / (N1 + N2)``),
    ``re2 = var(f1) / (N2 mean(f1)²) + ρ_f2(0) var(f2) / (N1 mean(f2)²)``
    where ``ρ_f2(0)`` is the spectral density at 0 of the autocorrelated ``f2``.
    """
    n1, n2 = q11.size, q22.size
    s1, s2 = n1 / (n1 + n2), n2 / (n1 + n2)
    lp_g, lp_p = q21 - logml, q11 - logml  # log normalised posterior at the proposal's and the posterior's draws
    # ratios computed in logs: the densities themselves under- or overflow in many dimensions
    f1 = np.exp(lp_g - np.logaddexp(np.log(s1) + lp_g, np.log(s2) + q22))
    f2 = np.exp(q12 - np.logaddexp(np.log(s1) + lp_p, np.log(s2) + q12))
    rho = spectrum0_ar(f2)
    re2 = np.var(f1, ddof=1) / (n2 * f1.mean() ** 2) + rho * np.var(f2, ddof=1) / (n1 * f2.mean() ** 2)
    return float(re2), float(math.sqrt(re2))


# -- the log posterior with every constant -----------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PosteriorDensity:
    """The unnormalised log posterior ``log p(y | θ) + log p(θ)``, every constant included, on the sampler's
    unbounded scale, and the fit's draws on that scale.

    Attributes
    ----------
    logp : callable
        ``logp(x)`` for one point ``x`` (D,).
    draws : (C, S, D) array
        The posterior draws, per chain, mapped to the unbounded scale.
    names : tuple of str
        What each of the D coordinates is (PyMC's value variables, flattened).
    constant : float
        What was added to the PyMC model's log density (see the module's notes).
    integrated : bool
        True where the random effects are integrated out (collapsed engine).
    """

    logp: Callable[[np.ndarray], float]
    draws: np.ndarray
    names: tuple[str, ...]
    constant: float
    integrated: bool


def _slot_call(name: str, slot: Any) -> str:
    args = [f"class_={slot.class_!r}"]
    if slot.coef:
        args.append(f"coef={slot.coef!r}")
    if slot.group:
        args.append(f"group={slot.group!r}")
    example = "normal(0, 10)" if slot.class_ in ("b", "Intercept") else "student_t(3, 0, 10)"
    return f"lb.prior({example!r}, {', '.join(args)})  # {name}"


def check_bridgeable(fit: FitResult) -> None:
    """Refuse fits whose marginal likelihood cannot be estimated, saying why and what to do.

    Raises
    ------
    PriorError
        A parameter has a flat (improper) prior, brms's default on class ``b``:
        the marginal likelihood then depends on the flat density's arbitrary
        constant, and so would every Bayes factor.
    FitError
        A fit holding no posterior draws (``sample_prior="only"``) or lacking
        a block of them.
    DataError
        ``se()`` on data reduced on Dask (the known SDs' constant needs the rows).
    """
    from ..engines.plan import plan as make_plan

    if fit.engine == "prior":
        raise FitError('bridge_sampler needs posterior draws, and this fit holds draws from the prior only '
                       '(sample_prior="only"); refit with sample_prior="no" or "yes".')
    flat = fit.priors.flat()
    if flat:
        params = {p.slot: p.name for p in make_plan(fit.design, fit.priors).params}
        names = [params.get(s, s.class_) for s in flat]
        lines = [_slot_call(params.get(s, s.class_), s) for s in flat]
        if all(s.class_ == "b" for s in flat):
            lines.insert(0, "lb.prior('normal(0, 10)', class_='b')  # every slope at once")
        raise PriorError(
            f"bridge_sampler needs a proper prior on every parameter, but {names} have flat (improper) priors "
            "(brms's default on class 'b' is flat): under a flat prior the marginal likelihood depends on the flat "
            "density's arbitrary constant, and so would any Bayes factor. Refit with a proper prior, scaled to "
            "what the coefficient can plausibly be, e.g.\n  " + "\n  ".join(lines))
    post = fit.posterior
    needed = ["b", *dpar_names(fit.design)]
    for f in fit.design.factors:
        needed += [f"sd_{f.name}", f"r_{f.name}"] + ([f"cor_{f.name}"] if f.cor_pairs else [])
    missing = [v for v in needed if v not in post]
    if missing:
        raise FitError(f"bridge_sampler needs the draws of every parameter, and this fit lacks {missing}; refit "
                       "the model (lb.fit keeps every parameter's draws).")
    if fit.design.spec.additions.se is not None and not fit.design.rows_in_memory:
        raise DataError("bridge_sampler of an se() model needs the rows (the known SDs enter the marginal "
                        "likelihood's constant), and this fit of a Dask DataFrame holds only cross-products; fit "
                        "a pandas frame (ddf.compute()).")


def _user_values(fit: FitResult, plan: Any) -> np.ndarray:
    """(C, S, K) every planned parameter on the user's scale, from the fit's brms blocks.

    Inverts `lmmbayes.engines.base.population_effects`: the centred intercept
    is ``b_Intercept + x̄'b`` (an ordinal model's thresholds ``b_Intercept[k] − x̄'b``).
    """
    design, post = fit.design, fit.posterior
    b = post["b"].values
    names = list(design.b_names)
    n_int = len(design.intercept_names)
    slopes = b[..., n_int:]
    shift = slopes @ plan.std.x_centre if design.centred_intercept else 0.0
    out = np.empty(b.shape[:2] + (len(plan.params),))
    for k, p in enumerate(plan.params):
        if p.kind == "Intercept":
            j = names.index(f"Intercept[{p.slot.coef}]" if design.n_thresholds else "Intercept")
            out[..., k] = b[..., j] - shift if design.n_thresholds else b[..., j] + shift
        elif p.kind == "b":
            out[..., k] = b[..., names.index(p.slot.coef)]
        elif p.kind == "dpar":
            out[..., k] = post[p.name].values
        else:
            f = p.slot.group
            t = list(post[f"sd_{f}"].coords[f"{f}__term"].values).index(p.slot.coef)
            out[..., k] = post[f"sd_{f}"].values[..., t]
    return out


def _correlation_cholesky(fit: FitResult, factor: Any) -> np.ndarray:
    """(C, S, q, q) Cholesky factors of a factor's correlation matrices, rebuilt from the ``cor_`` draws."""
    post = fit.posterior
    C, S = post.sizes["chain"], post.sizes["draw"]
    R = np.broadcast_to(np.eye(factor.q), (C, S, factor.q, factor.q)).copy()
    if factor.cor_pairs:
        cor = post[f"cor_{factor.name}"].values
        for m, (i, j) in enumerate(factor.cor_pairs):
            R[..., i, j] = R[..., j, i] = cor[..., m]
    L = np.zeros_like(R)
    for block in factor.blocks:
        idx = np.array(block)
        L[..., idx[:, None], idx[None, :]] = np.linalg.cholesky(R[..., idx[:, None], idx[None, :]])
    return L


def _truncation(plan: Any) -> float:
    """−Σ log P(lo < θ < hi) over the parameters whose prior is cut by their bounds (half-priors on SDs...)."""
    total = 0.0
    for p in plan.params:
        prior = p.prior
        lo, hi = p.a + p.b * p.lo, p.a + p.b * p.hi
        s_lo, s_hi = prior.family.support_bounds(prior.args)
        if lo <= s_lo and hi >= s_hi:
            continue
        dist = prior.family.frozen(prior.args)
        if dist is None:
            raise PriorError(f"{prior.describe()}: bridge_sampler needs the mass of this prior between {lo} and {hi} "
                             f"(the bounds of {p.name}), and a custom distribution gives no CDF; register it with "
                             "the support the parameter has (e.g. support='positive' for sd and sigma).")
        # the tail that holds the mass, in logs: a narrow prior far from a bound keeps its precision
        if math.isinf(hi):
            mass = float(dist.logsf(lo))
        elif math.isinf(lo):
            mass = float(dist.logcdf(hi))
        else:
            mass = math.log(float(dist.cdf(hi) - dist.cdf(lo)))
        if not math.isfinite(mass):
            raise PriorError(f"{prior.describe()}: the prior puts no mass between {lo} and {hi}, where {p.name} lives.")
        total -= mass
    return total


def _thresholds_constant(fit: FitResult, plan: Any) -> float:
    """log (K − 1)! for ordered thresholds under one shared prior (its mass on increasing order is 1/(K − 1)!)."""
    idx = plan.indices("Intercept") if fit.design.n_thresholds else []
    if len(idx) < 2:
        return 0.0
    priors = [plan.params[k].prior for k in idx]
    if not all(p.same_distribution(priors[0]) for p in priors):
        raise PriorError("bridge_sampler: the thresholds (class 'Intercept') of this ordinal model have different "
                         "priors, and the mass those priors give to increasing thresholds has no closed form; "
                         "give the thresholds one prior for the whole class, e.g. "
                         "lb.prior('normal(0, 5)', class_='Intercept').")
    return math.lgamma(len(idx) + 1)


def _likelihood_constant(fit: FitResult, plan: Any, collapsed: Any) -> float:
    """The response's standardisation Jacobian and, on the collapsed engine, the se() constant it drops."""
    design = fit.design
    rows = design.rows
    if rows is not None:
        w = np.ones(design.n_obs) if rows.weights is None else np.asarray(rows.weights, dtype=float)
        total_w = float(w.sum())
    else:
        assert design.reduced is not None
        total_w = float(design.reduced.sums.weight)
    # the model sees y* = (y − shift) / y_scale: p(y) = p(y*) / y_scale per (weighted) row
    out = -total_w * math.log(plan.std.y_scale)
    if collapsed is not None:  # its likelihood is that of t(y) (lognormal: log y): p(y) = p(t(y)) t'(y)
        out += design.stats.log_jacobian
    if collapsed is not None and design.spec.additions.se is not None:
        from ..engines.collapsed import fixed_sigma

        assert rows is not None and rows.extra.se is not None
        s_std = np.asarray(rows.extra.se, dtype=float) / plan.std.y_scale
        sigma = fixed_sigma(design, plan)
        assert sigma is not None
        # the engine's −½ n log 2πσ² (n the total of the weights w/s², σ the unit SD in standardised units)
        # stands where each row's −½ w log 2π s_i² belongs
        out += -0.5 * float(w @ np.log(2 * math.pi * s_std**2)) + 0.5 * collapsed.fixed.n * math.log(
            2 * math.pi * sigma**2)
    return out


def posterior_density(fit: FitResult) -> PosteriorDensity:
    """The fit's log posterior density with every constant, and its draws on the same (unbounded) scale.

    The density is the engine's PyMC model (the joint engine's, or the
    collapsed engine's PyTensor route, random effects integrated out) plus the
    constants the engines drop (see the module's notes); the draws are the
    fit's, mapped back through the plan's affine maps and PyMC's transforms.

    Raises
    ------
    PriorError, FitError, DataError
        See `check_bridgeable`.
    """
    import pytensor
    import pytensor.tensor as pt

    from ..engines.plan import plan as make_plan

    check_bridgeable(fit)
    design = fit.design
    plan = make_plan(design, fit.priors)
    # exact only for Gaussian models: a non-Gaussian collapsed fit integrated by quadrature, so it is bridged
    # over all its parameters (its draws hold the random effects) with the joint engine's exact density
    integrated = fit.engine == "collapsed" and "collapsed" in design.family.engines
    collapsed = None
    if integrated:
        from ..engines.collapsed import build_model as collapsed_model
        from ..engines.collapsed import collapse

        collapsed = collapse(design, plan)
        model, _ = collapsed_model(design, plan, collapsed)
    else:
        from ..engines.joint import build_model as joint_model

        model, _ = joint_model(design, plan)
    constant = (float(np.sum(np.log([p.b for p in plan.params]))) + _truncation(plan)
                + _thresholds_constant(fit, plan) + _likelihood_constant(fit, plan, collapsed))

    values = model.value_vars
    shapes = [tuple(int(s) for s in model.initial_point()[v.name].shape) for v in values]
    sizes = [int(np.prod(s)) for s in shapes]
    cuts = np.cumsum([0, *sizes])
    flat_in = pt.vector("x")
    replace = {v: flat_in[cuts[i]:cuts[i + 1]].reshape(shapes[i]) for i, v in enumerate(values)}
    logp_graph = pytensor.graph.replace.graph_replace(model.logp(jacobian=True), replace)
    compiled = pytensor.function([flat_in], logp_graph, on_unused_input="ignore")

    def logp(x: np.ndarray) -> float:
        return float(compiled(np.asarray(x, dtype=float))) + constant

    draws = _unbounded_draws(fit, plan, model, shapes)
    names = tuple(f"{v.name}[{j}]" if sizes[i] > 1 else v.name for i, v in enumerate(values) for j in range(sizes[i]))
    return PosteriorDensity(logp, draws, names, constant, integrated)


def _unbounded_draws(fit: FitResult, plan: Any, model: Any, shapes: list[tuple[int, ...]]) -> np.ndarray:
    """(C, S, D) the fit's draws as the PyMC model's value variables (PyMC's transforms applied)."""
    import pytensor
    import pytensor.tensor as pt

    from ..engines.pymc_model import param_groups

    design = fit.design
    user = _user_values(fit, plan)
    u = (user - np.array([p.a for p in plan.params])) / np.array([p.b for p in plan.params])
    C, S = u.shape[:2]
    constrained: dict[str, np.ndarray] = {}
    ordinal = bool(design.n_thresholds)
    rest = [k for k, p in enumerate(plan.params) if not (ordinal and p.kind == "Intercept")]
    for g, idx in enumerate(param_groups(plan, rest)):  # the groups build_hyper declares, in its order
        constrained[f"u{g}"] = u[..., idx]
    if ordinal:
        constrained["thresholds"] = u[..., plan.indices("Intercept")]
    lcorr = {f.name: _correlation_cholesky(fit, f) for f in design.factors}
    for f in design.factors:
        for j, block in enumerate(b for b in plan.cor if b.factor == f.name):
            terms = np.array(block.terms)
            Lb = lcorr[f.name][..., terms[:, None], terms[None, :]]
            if len(terms) == 2:
                constrained[f"cor{j}__{f.name}_u"] = (Lb[..., 1, 0] + 1.0) / 2.0  # rho = 2u − 1
            else:
                constrained[f"cor{j}__{f.name}"] = Lb
    std_vals = plan.to_std(u)
    for f, z_scale in zip(design.factors, plan.std.z_scale):
        name = f"z__{f.name}"
        if name not in {rv.name for rv in model.free_RVs}:
            continue  # integrated out
        # r = y_scale / z_scale * r_std and r_std[level] = (diag(sd*) Lcorr) z[level]
        r_std = fit.posterior[f"r_{f.name}"].values * (z_scale / plan.std.y_scale)
        scale = std_vals[..., plan.indices("sd", f.name)][..., :, None] * lcorr[f.name]
        constrained[name] = np.linalg.solve(scale[:, :, None], r_std[..., None])[..., 0]
    # PyMC's own forward transforms, one compiled function for all variables
    inputs, outputs = [], []
    for v in model.value_vars:
        rv = model.values_to_rvs[v]
        x = pt.tensor(name=v.name, shape=(None,) * rv.type.ndim, dtype="float64")
        transform = model.rvs_to_transforms.get(rv)
        inputs.append(x)
        outputs.append(x if transform is None else transform.forward(x, *rv.owner.inputs))
    forward = pytensor.function(inputs, outputs, on_unused_input="ignore")
    out = np.empty((C, S, sum(int(np.prod(s)) for s in shapes)))
    for c in range(C):
        for s in range(S):
            parts = forward(*[constrained[model.values_to_rvs[v].name][c, s] for v in model.value_vars])
            out[c, s] = np.concatenate([np.asarray(p, dtype=float).ravel() for p in parts])
    return out


# -- the results ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BridgeResult:
    """A bridge-sampling estimate of a fit's log marginal likelihood (bridgesampling's ``bridge`` object).

    Attributes
    ----------
    logml : float
        The estimate of ``log p(y)``.
    niter : int
        Steps of the iterative scheme.
    method : str
        ``"normal"``: a multivariate normal proposal on the unbounded scale.
    re2 : float
        Approximate relative mean squared error of ``exp(logml)`` (Frühwirth-Schnatter 2004).
    cv : float
        Its square root, the coefficient of variation (about the SD of ``logml``).
    percentage : str
        ``cv`` as a percentage, as bridgesampling's ``error_measures`` prints it.
    dimension : int
        Number of parameters bridged over.
    n_draws : int
        Posterior draws in the iterative half (and as many proposal draws).
    integrated : bool
        True when the random effects were integrated out exactly (collapsed engine).
    seconds : float
    """

    logml: float
    niter: int
    method: str
    re2: float
    cv: float
    percentage: str
    dimension: int
    n_draws: int
    integrated: bool
    seconds: float

    @property
    def error_measures(self) -> dict[str, Any]:
        """bridgesampling's ``error_measures()``: ``re2``, ``cv`` and ``percentage``."""
        return {"re2": self.re2, "cv": self.cv, "percentage": self.percentage}

    def __str__(self) -> str:
        over = ("the hyperparameters (random effects integrated out exactly)" if self.integrated
                else "all parameters (random effects included)")
        return (f"Bridge sampling estimate of the log marginal likelihood: {self.logml:.5f}\n"
                f"Estimate obtained in {self.niter} iteration(s) via method \"{self.method}\".\n"
                f"Approximate percentage error: {self.percentage} ({self.dimension} dimension(s): {over}).")

    def _repr_html_(self) -> str:
        return pre_html(self)


@dataclass(frozen=True)
class BayesFactor:
    """The Bayes factor of two fits (brms's ``bayes_factor``).

    Attributes
    ----------
    bf : float
        ``p(y | fit1) / p(y | fit2)``.
    log_bf : float
        Its log, ``logml1 − logml2``.
    bridge1, bridge2 : BridgeResult
    names : tuple of str
        How the printout names the two models.
    log : bool
        Print the log Bayes factor.
    """

    bf: float
    log_bf: float
    bridge1: BridgeResult
    bridge2: BridgeResult
    names: tuple[str, str] = ("fit1", "fit2")
    log: bool = False

    def __str__(self) -> str:
        value = self.log_bf if self.log else self.bf
        what = "log Bayes factor" if self.log else "Bayes factor"
        return f"Estimated {what} in favor of {self.names[0]} over {self.names[1]}: {value:.5f}"

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return pre_html(self)


def _neff(draws: np.ndarray) -> float:
    """Median bulk ESS over the coordinates of (C, S, D) draws (bridgesampling's ``neff``)."""
    from arviz_stats.base import array_stats

    if draws.shape[0] * draws.shape[1] < 8:
        return float(draws.shape[0] * draws.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        ess = np.asarray(array_stats.ess(draws, method="bulk", chain_axis=0, draw_axis=1), dtype=float)
    ess = ess[np.isfinite(ess)]
    return float(np.median(ess)) if ess.size else float(draws.shape[0] * draws.shape[1])


def bridge_sampler(fit: FitResult, *, seed: int | None = None, maxiter: int = MAXITER, tol: float = TOL,
                   use_neff: bool = True) -> BridgeResult:
    """The log marginal likelihood of a fit by bridge sampling (brms's ``bridge_sampler``).

    Parameters
    ----------
    fit : Fit
        Every parameter needs a proper prior (set ``lb.prior("normal(0, 10)",
        class_="b")``: brms's default on ``b`` is flat).
    seed : int, optional
        Seeds the proposal's draws; by default the fit's seed, so repeating
        the call repeats the estimate.
    maxiter, tol : int, float
        The iterative scheme stops when the ratio's relative change is at most
        ``tol``, or after ``maxiter`` steps (bridgesampling's 1000 and 1e-10).
    use_neff : bool
        Weigh the posterior draws by their effective sample size (bridgesampling's default).

    Returns
    -------
    BridgeResult
        ``logml``, ``niter``, ``method`` and bridgesampling's error measures.

    Notes
    -----
    The draws, on the sampler's unbounded scale, are split by iteration: the
    first half of each chain fits the normal proposal (mean and covariance),
    the second half and as many proposal draws enter the iterative scheme.
    On the collapsed engine the random effects are integrated out exactly, so
    the bridge runs over the handful of hyperparameters, where the normal
    proposal fits well: such estimates are unusually accurate (tests: within
    0.01 of the exact log marginal likelihood). On the joint engine it runs
    over every parameter, random effects included, and needs more draws (as
    brms warns, often ten times the usual; the dimension must stay below the
    draws in the first half).

    Raises
    ------
    PriorError
        A flat (improper) prior on any parameter, naming it and the prior to set.
    FitError
        Draws from the prior only, too few draws for the dimension, or a failed scheme.
    """
    maxiter = check.count(maxiter, "maxiter", error=FitError)
    tol = check.real(tol, "tol", error=FitError, positive=True)
    use_neff = check.flag(use_neff, "use_neff", error=FitError)
    seed = fit.config.seed if seed is None else check.seed(seed, error=FitError)
    t0 = time.perf_counter()
    density = posterior_density(fit)
    draws = density.draws
    C, S, D = draws.shape
    half = S // 2
    fit_part = draws[:, :half].reshape(-1, D)
    iter_part = draws[:, half:]
    if fit_part.shape[0] <= D + 1:
        hint = "" if density.integrated else (" The collapsed engine (method=\"collapsed\"), where it applies, "
                                              "integrates the random effects out and needs far fewer.")
        raise FitError(f"bridge_sampler fits a {D}-dimensional normal proposal to the first half of the draws, and "
                       f"this fit has {fit_part.shape[0]} there; refit with more draws (bridge sampling wants many: "
                       f"brms suggests ten times the usual).{hint}")
    n_post = iter_part.shape[0] * iter_part.shape[1]
    post = iter_part.reshape(-1, D)
    mean = fit_part.mean(axis=0)
    cov = np.atleast_2d(np.cov(fit_part, rowvar=False))
    cov = _nearest_pd(cov)
    rng = np.random.default_rng([seed, 15])
    chol = np.linalg.cholesky(cov)
    proposal = mean + rng.standard_normal((n_post, D)) @ chol.T

    def mvn_logpdf(x: np.ndarray) -> np.ndarray:
        z = np.linalg.solve(chol, (x - mean).T)
        return -0.5 * (z**2).sum(axis=0) - np.log(np.diag(chol)).sum() - 0.5 * D * math.log(2 * math.pi)

    q12, q22 = mvn_logpdf(post), mvn_logpdf(proposal)
    with np.errstate(all="ignore"):
        q11 = np.array([density.logp(x) for x in post])
        q21 = np.array([density.logp(x) for x in proposal])
    q11 = np.where(np.isnan(q11), -np.inf, q11)
    q21 = np.where(np.isnan(q21), -np.inf, q21)
    if not np.isfinite(q11).all():
        raise FitError(f"bridge_sampler: the log posterior is not finite at {int((~np.isfinite(q11)).sum())} of the "
                       "fit's own draws, which points to a bug; please report it with the model.")
    neff = min(_neff(iter_part), float(n_post)) if use_neff else float(n_post)
    res = iterative_scheme(q11, q12, q21, q22, neff, tol=tol, maxiter=maxiter)
    if not res.converged and math.isfinite(res.logml):
        # bridgesampling's fallback: a looser criterion on logml itself
        again = iterative_scheme(q11, q12, q21, q22, neff, r0=math.exp(res.logml - float(np.median(q11 - q12))),
                                 tol=1e-4, maxiter=maxiter)
        res = SchemeResult(again.logml, maxiter + again.niter, again.converged)
    if not (res.converged and math.isfinite(res.logml)):
        raise FitError(f"bridge_sampler: the iterative scheme did not converge in {maxiter} steps; the proposal "
                       "fits the posterior poorly. Refit with more draws, or check the fit's convergence.")
    re2, cv = error_measures(q11, q12, q21, q22, res.logml)
    return BridgeResult(res.logml, res.niter, "normal", re2, cv, f"{100 * cv:.2g}%", D, n_post,
                        density.integrated, time.perf_counter() - t0)


def _nearest_pd(cov: np.ndarray) -> np.ndarray:
    """``cov`` made positive definite where rounding left it short (bridgesampling uses Matrix's nearPD)."""
    cov = 0.5 * (cov + cov.T)
    w, V = np.linalg.eigh(cov)
    floor = 1e-10 * max(float(w.max()), 1e-300)
    if w.min() > floor:
        return cov
    return (V * np.maximum(w, floor)) @ V.T


def bayes_factor(fit1: FitResult, fit2: FitResult, *, log: bool = False, names: tuple[str, str] | None = None,
                 seed: int | None = None, maxiter: int = MAXITER, tol: float = TOL,
                 use_neff: bool = True) -> BayesFactor:
    """The Bayes factor of ``fit1`` over ``fit2`` from bridge-sampling marginal likelihoods (brms's ``bayes_factor``).

    Parameters
    ----------
    fit1, fit2 : Fit
        Two fits of the same response values, every parameter under a proper prior.
    log : bool
        Print the log Bayes factor (both are fields of the result).
    names : (str, str), optional
        How the printout names the models; ``("fit1", "fit2")`` by default.
    seed, maxiter, tol, use_neff
        As `bridge_sampler`.

    Returns
    -------
    BayesFactor
        Prints as brms: ``Estimated Bayes factor in favor of fit1 over fit2: 12.34000``; fields
        ``bf``, ``log_bf`` and both `BridgeResult`.

    Raises
    ------
    DataError
        The fits are of different response values (brms only warns; a Bayes
        factor of different data compares nothing).
    PriorError, FitError
        As `bridge_sampler`.
    """

    log = check.flag(log, "log", error=FitError)
    if names is None:
        names = ("fit1", "fit2")
    elif not (isinstance(names, (tuple, list)) and len(names) == 2 and all(isinstance(n, str) for n in names)):
        raise FitError(f"bayes_factor: names must be two strings, got {names!r}.")
    if not same_data(fit1, fit2):
        raise DataError("bayes_factor needs two fits of the same response values (the same observations in the "
                        f"same order): '{fit1.formula}' ({fit1.nobs} observations) and '{fit2.formula}' "
                        f"({fit2.nobs}) were fitted to different ones, and marginal likelihoods of different data "
                        "are not comparable.")
    kw: dict[str, Any] = {"seed": seed, "maxiter": maxiter, "tol": tol, "use_neff": use_neff}
    b1, b2 = bridge_sampler(fit1, **kw), bridge_sampler(fit2, **kw)
    log_bf = b1.logml - b2.logml
    with np.errstate(over="ignore"):
        bf = float(np.exp(log_bf))
    return BayesFactor(bf, log_bf, b1, b2, (str(names[0]), str(names[1])), log)

