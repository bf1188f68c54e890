"""PyMC building blocks both engines share: prior variables and hyperparameters.

Every engine exposes the same named quantities as PyMC Deterministics, so
that :mod:`lmmbayes.posterior` can turn any engine's trace into brms
parameters: ``Intercept_c`` (the centred intercept, if any), ``b_c``
(coefficients of the centred columns), ``sigma``, and per grouping factor
``sd__<factor>`` (q,) and ``Lcorr__<factor>`` (q, q), the lower Cholesky
factor of its correlation matrix (identity outside correlated blocks).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from ..design import Design, Factor
from ..errors import PriorError
from ..priors import Prior, ResolvedPriors, Slot


def prior_variable(p: Prior, name: str, size: int) -> pt.TensorVariable:
    """A (size,) PyMC variable with prior ``p``, bounds applied, in the current model."""
    fam, args, lb, ub = p.family, p.args, p.lb, p.ub
    shape = (size,)
    s_lo, s_hi = fam.support_bounds(args)
    needs_lo = lb is not None and lb > s_lo
    needs_hi = ub is not None and ub < s_hi
    if not fam.builtin:
        if needs_lo or needs_hi:
            raise PriorError(
                f"{p.describe()}: the custom distribution has support '{fam.support}' and cannot "
                f"be truncated to [{lb}, {ub}]; register it with support='positive' to use it "
                "on class sd or sigma."
            )
        try:
            return fam.factory(name, *args, shape=shape)
        except Exception as exc:  # the user's code: say whose it is
            raise PriorError(f"{p.describe()}: the custom distribution's factory failed: {exc}") from exc
    if fam.name == "flat":
        if not needs_lo and not needs_hi:
            return pm.Flat(name, shape=shape)
        if lb == 0 and not needs_hi:
            return pm.HalfFlat(name, shape=shape)
        raise PriorError(f"{p.describe()}: a flat prior can only be bounded below at 0; give a proper prior.")
    if not needs_lo and not needs_hi:
        return fam.make(name, *args, shape=shape)
    if fam.half is not None and lb == 0 and not needs_hi and args[fam.location] == 0:
        return fam.half(name, *args, shape=shape)
    return pm.Truncated(
        name, fam.make(None, *args), lower=lb if needs_lo else None, upper=ub if needs_hi else None,
        shape=shape,
    )


def support(p: Prior) -> tuple[float, float]:
    """The interval a parameter with prior ``p`` lives on: its family's support cut by the bounds."""
    s_lo, s_hi = p.family.support_bounds(p.args)
    lo = s_lo if p.lb is None else max(s_lo, p.lb)
    hi = s_hi if p.ub is None else min(s_hi, p.ub)
    return lo, hi


def start_value(p: Prior, default: float) -> float:
    """A starting value strictly inside the prior's support, near ``default``."""
    lo, hi = support(p)
    if lo < default < hi:
        return default
    if np.isfinite(lo) and np.isfinite(hi):
        return 0.5 * (lo + hi)
    return lo + 1.0 if np.isfinite(lo) else hi - 1.0


def _vector(resolved: ResolvedPriors, slots: list[Slot], name: str,
            start: dict[str, np.ndarray] | None = None, default: float = 0.5) -> pt.TensorVariable:
    """One vector over ``slots``, with one PyMC variable per distinct prior.

    With ``start`` given, record a starting value for each variable there.
    """
    groups: dict[int, list[int]] = defaultdict(list)
    priors: list[Prior] = []
    for i, s in enumerate(slots):
        p = resolved.get(s.class_, s.coef, s.group)
        for k, q in enumerate(priors):
            if q.same_distribution(p):
                groups[k].append(i)
                break
        else:
            priors.append(p)
            groups[len(priors) - 1].append(i)
    names = [name] if len(priors) == 1 else [f"{name}_{k}" for k in range(len(priors))]
    variables = [prior_variable(p, n, len(groups[k])) for k, (p, n) in enumerate(zip(priors, names))]
    if start is not None:
        for k, (p, n) in enumerate(zip(priors, names)):
            if p.family.builtin:
                start[n] = np.full(len(groups[k]), start_value(p, default))
    if len(priors) == 1:
        return variables[0]
    out = pt.zeros(len(slots))
    for k, var in enumerate(variables):
        out = pt.set_subtensor(out[np.array(groups[k])], var)
    return out


def _lkj(p: Prior, name: str, n: int) -> pt.TensorVariable:
    """Lower Cholesky factor of an LKJ(eta) correlation matrix of size n.

    For n = 2, LKJ(eta) is rho = 2u - 1 with u ~ Beta(eta, eta); building it
    that way compiles several times faster than PyMC's general LKJCorr (which
    is used for n > 2) and samples the same distribution.
    """
    if not p.family.builtin:
        raise PriorError(f"{p.describe()}: class 'cor' needs the built-in lkj(eta) prior.")
    eta = p.args[0]
    if n == 2:
        rho = 2.0 * pm.Beta(f"{name}_u", eta, eta) - 1.0
        return pt.stack([pt.stack([1.0, 0.0]), pt.stack([rho, pt.sqrt(1.0 - rho**2)])])
    return pm.LKJCorr(name, n=n, eta=eta)


@dataclass(frozen=True, eq=False)
class Hyper:
    """Population-level and variance parameters as PyMC tensors."""

    intercept: pt.TensorVariable | None
    b: pt.TensorVariable
    sigma: pt.TensorVariable
    sd: dict[str, pt.TensorVariable]
    lcorr: dict[str, pt.TensorVariable]
    start: dict[str, np.ndarray]

    def fixed_mean(self, Xc: np.ndarray | pt.TensorVariable) -> pt.TensorVariable:
        """Intercept + centred columns times coefficients, (N,)."""
        mu = pt.dot(Xc, self.b)
        return mu if self.intercept is None else mu + self.intercept

    def scale(self, factor: str) -> pt.TensorVariable:
        """Cholesky factor of the factor's covariance: diag(sd) @ Lcorr, (q, q)."""
        return self.sd[factor][:, None] * self.lcorr[factor]


def factor_lcorr(resolved: ResolvedPriors, f: Factor) -> pt.TensorVariable:
    """Block-diagonal Cholesky factor of the factor's correlation matrix."""
    q = len(f.terms)
    L = pt.eye(q)
    k = 0
    for block in f.blocks:
        if len(block) < 2:
            continue
        idx = np.array(block)
        Lb = _lkj(resolved.get("cor", "", f.name), f"cor__{f.name}__{k}", len(block))
        L = pt.set_subtensor(L[idx[:, None], idx[None, :]], Lb)
        k += 1
    return pm.Deterministic(f"Lcorr__{f.name}", L)


def build_hyper(design: Design, resolved: ResolvedPriors) -> Hyper:
    """Declare β, σ, sd and correlations in the current model context.

    ``Hyper.start`` holds starting values for σ and the sd's at half the
    response's scale (engines sample a standardised response, see
    :mod:`lmmbayes.scaling`): starting at a vague prior's support point, far
    out in its tail, left chains stuck for hundreds of iterations.
    """
    start: dict[str, np.ndarray] = {}
    intercept = None
    if design.centred_intercept:
        raw = prior_variable(resolved.get("Intercept"), "Intercept_raw", 1)
        intercept = pm.Deterministic("Intercept_c", raw[0])
    b_slots = [Slot("b", c) for c in design.coef_names]
    b = _vector(resolved, b_slots, "b_raw") if b_slots else pt.zeros(0)
    b = pm.Deterministic("b_c", b)
    sigma = _vector(resolved, [Slot("sigma")], "sigma_raw", start)
    sigma = pm.Deterministic("sigma", sigma[0])
    sd, lcorr = {}, {}
    for f in design.factors:
        vec = _vector(resolved, [Slot("sd", t, f.name) for t in f.terms], f"sd_raw__{f.name}", start)
        sd[f.name] = pm.Deterministic(f"sd__{f.name}", vec)
        lcorr[f.name] = factor_lcorr(resolved, f)
    return Hyper(intercept, b, sigma, sd, lcorr, start)


def centred_X(design: Design) -> np.ndarray:
    """X with its column means removed when the intercept is centred."""
    return design.X - design.x_means


@dataclass(frozen=True, eq=False)
class EngineResult:
    """What every engine hands back to :func:`lmmbayes.fit`.

    Attributes
    ----------
    raw : dict
        (chain, draw, ...) draws of the shared Deterministics: ``Intercept_c``
        (if centred), ``b_c``, ``sigma``, ``sd__<factor>``, ``Lcorr__<factor>``.
    effects : dict
        Per factor, (chain, draw, levels, q) draws of the random effects.
    sample_stats : dict
        Sampler statistics by ArviZ name.
    timings : dict
        Seconds per stage (build, compile, sample, ...).
    """

    raw: dict[str, np.ndarray]
    effects: dict[str, np.ndarray]
    sample_stats: dict[str, np.ndarray]
    timings: dict[str, float]


def hyper_names(design: Design, model: pm.Model) -> list[str]:
    """Names of the shared Deterministics present in ``model``."""
    names = [n for n in ("Intercept_c", "b_c", "sigma") if n in model.named_vars]
    for f in design.factors:
        names += [f"sd__{f.name}", f"Lcorr__{f.name}"]
    return names
