"""PyMC building blocks of the engines' PyTensor models: the planned parameters and their priors.

Every sampled parameter ``u`` is a flat variable on the interval its prior and
class allow (PyMC's interval transform adds the Jacobian); its prior is a
Potential evaluated at the user's value ``a + b u`` (see `.plan`). Both
the joint engine and the collapsed engine's PyTensor route build their models
from here, with the same starting values as the C kernel.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..design import Design
from ..priors.distributions import logp_pt
from .plan import Plan


@dataclass(frozen=True, eq=False)
class Hyper:
    """The planned parameters as PyTensor tensors in standardised-data units."""

    std: Any  # (K,) tensor: every parameter of the plan
    lcorr: dict[str, Any]  # per factor (q, q) Cholesky factor of the correlation matrix
    start: dict[str, np.ndarray]  # initial values by PyMC variable name

    def take(self, plan: Plan, kind: str, factor: str | None = None) -> Any:
        import pytensor.tensor as pt

        idx = plan.indices(kind, factor)
        return self.std[np.array(idx, dtype=np.int64)] if idx else pt.zeros(0)

    def one(self, plan: Plan, name: str) -> Any:
        k = [p.name for p in plan.params].index(name)
        return self.std[k]

    def scale(self, plan: Plan, factor: str) -> Any:
        """(q, q) Cholesky factor of the factor's covariance in standardised units: diag(sd) @ Lcorr."""
        return self.take(plan, "sd", factor)[:, None] * self.lcorr[factor]


def _group_key(p: Any) -> tuple[Any, ...]:
    prior = p.prior
    return (prior.family.name, prior.args, prior.lb, prior.ub, id(prior.family.factory), np.isfinite(p.lo),
            np.isfinite(p.hi), p.kind == "sd" or p.kind == "dpar")


def param_groups(plan: Plan, ks: list[int] | None = None) -> list[list[int]]:
    """The plan's parameters (or those at ``ks``) grouped by prior: one PyMC vector each (``u0``, ``u1``, ...)."""
    groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for k in range(len(plan.params)) if ks is None else ks:
        groups[_group_key(plan.params[k])].append(k)
    return list(groups.values())


def _priors(plan: Plan, idx: list[int], u: Any, name: str) -> None:
    """The prior of the parameters at ``idx`` (one prior), whose sampled values are ``u``, as a Potential."""
    import pymc as pm

    ps = [plan.params[k] for k in idx]
    prior = ps[0].prior
    if not prior.is_flat:
        a, b = np.array([p.a for p in ps]), np.array([p.b for p in ps])
        pm.Potential(f"{name}_prior", logp_pt(prior.family, prior.args, a + b * u, prior.describe()).sum())


def _std(plan: Plan, std: Any, idx: list[int], u: Any) -> Any:
    import pytensor.tensor as pt

    alpha = np.array([plan.params[k].alpha for k in idx])
    beta = np.array([plan.params[k].beta for k in idx])
    return pt.set_subtensor(std[np.array(idx)], alpha + beta * u)


def _thresholds(plan: Plan, std: Any, start: dict[str, np.ndarray]) -> Any:
    """An ordinal model's thresholds: one vector under PyMC's ordered transform (its Jacobian included).

    The plan gives them one shared map ``user = u`` (see `.plan`), so
    ordering ``u`` orders the thresholds; each keeps its own prior.
    """
    import pymc as pm
    from pymc.distributions.transforms import ordered

    idx = plan.indices("Intercept")
    init = np.array([plan.params[k].start for k in idx])
    u = pm.Flat("thresholds", shape=(len(idx),), initval=init, default_transform=ordered)
    start["thresholds"] = init
    pos = {k: j for j, k in enumerate(idx)}
    for g, group in enumerate(param_groups(plan, idx)):
        _priors(plan, group, u[np.array([pos[k] for k in group])], f"thresholds{g}")
    return _std(plan, std, idx, u)


def build_hyper(plan: Plan, design: Design) -> Hyper:
    """Declare the plan's parameters, their priors and the LKJ correlations in the current model."""
    import pymc as pm
    import pytensor.tensor as pt
    from pymc.distributions.transforms import Interval

    K = len(plan.params)
    std = pt.zeros(K) if K else pt.zeros(0)
    start: dict[str, np.ndarray] = {}
    ordinal = bool(design.n_thresholds)
    rest = [k for k, p in enumerate(plan.params) if not (ordinal and p.kind == "Intercept")]
    for g, idx in enumerate(param_groups(plan, rest)):
        ps = [plan.params[k] for k in idx]
        lo, hi = np.array([p.lo for p in ps]), np.array([p.hi for p in ps])
        name = f"u{g}"
        kwargs: dict[str, Any] = {"shape": (len(idx),), "initval": np.array([p.start for p in ps])}
        if np.isfinite(lo).all() or np.isfinite(hi).all():
            bounds = (lo if np.isfinite(lo).all() else None, hi if np.isfinite(hi).all() else None)
            kwargs["default_transform"] = Interval(bounds_fn=lambda *_, b=bounds: b)
        u = pm.Flat(name, **kwargs)
        start[name] = kwargs["initval"]
        _priors(plan, idx, u, name)
        std = _std(plan, std, idx, u)
    if ordinal:
        std = _thresholds(plan, std, start)
    std = pm.Deterministic("u_std", std) if K else std
    lcorr = {}
    for f in design.factors:
        L = pt.eye(f.q)
        for j, block in enumerate(b for b in plan.cor if b.factor == f.name):
            Lb = _lkj(f"cor{j}__{f.name}", len(block.terms), block.eta)
            terms = np.array(block.terms)
            L = pt.set_subtensor(L[terms[:, None], terms[None, :]], Lb)
        lcorr[f.name] = pm.Deterministic(f"Lcorr__{f.name}", L)
    return Hyper(std, lcorr, start)


def _lkj(name: str, n: int, eta: float) -> Any:
    """Lower Cholesky factor of an LKJ(eta) correlation matrix of size n.

    For n = 2, LKJ(eta) is rho = 2u - 1 with u ~ Beta(eta, eta): the same
    distribution as PyMC's general LKJCorr (used for n > 2), several times
    faster to compile.
    """
    import pymc as pm
    import pytensor.tensor as pt

    if n == 2:
        rho = 2.0 * pm.Beta(f"{name}_u", eta, eta) - 1.0
        return pt.stack([pt.stack([1.0, 0.0]), pt.stack([rho, pt.sqrt(1.0 - rho**2)])])
    return pm.LKJCorr(name, n=n, eta=eta)


def u_from_std(plan: Plan, std: np.ndarray) -> np.ndarray:
    """The sampled ``u`` from draws of the standardised values (inverse of ``alpha + beta u``)."""
    alpha = np.array([p.alpha for p in plan.params])
    beta = np.array([p.beta for p in plan.params])
    return (std - alpha) / beta
