"""Draws from the prior (brms's ``sample_prior = "only"``): no sampler, exact and independent draws.

Every parameter is drawn from its prior truncated to where it lives (a
standard deviation's prior is cut at 0), correlations from LKJ(eta) by the
onion method (Lewandowski, Kurowicka and Joe 2009), and the random effects
from their normal distribution given each draw's SDs and correlations. The
result has the same blocks as a posterior (`Draws`).
Flat priors cannot be drawn from and are an error, as in brms.
"""

from __future__ import annotations

import math

import numpy as np

from ..design import Design
from ..errors import PriorError
from ..priors import ResolvedPriors, Slot
from ..priors.distributions import draws as prior_draws
from .base import Draws, population_effects
from .plan import Plan


def _parameter_name(slot: Slot, design: Design) -> str:
    if slot.class_ == "Intercept":
        return f"b_Intercept[{slot.coef}]" if slot.coef else "b_Intercept"
    if slot.class_ == "b":
        return f"b_{slot.coef}"
    if slot.class_ == "sd":
        return f"sd_{slot.group}__{slot.coef}"
    if slot.class_ == "cor":
        return f"cor_{slot.group}"
    return slot.class_


def _prior_call(slot: Slot) -> str:
    args = [f"class_={slot.class_!r}"]
    if slot.coef:
        args.append(f"coef={slot.coef!r}")
    if slot.group:
        args.append(f"group={slot.group!r}")
    example = "normal(0, 10)" if slot.class_ in ("b", "Intercept") else "student_t(3, 0, 10)"
    return f"lb.prior({example!r}, {', '.join(args)})"


def check_proper(design: Design, resolved: ResolvedPriors, what: str = "Cannot sample from the prior") -> None:
    """PriorError naming every parameter whose prior is flat (improper), with a fix for each."""
    flat = resolved.flat()
    if not flat:
        return
    names = [_parameter_name(s, design) for s in flat]
    fixes = "\n".join(f"  {_prior_call(s)}" for s in flat)
    raise PriorError(f"{what}: parameter(s) {names} have flat (improper) priors, from which nothing can be "
                     f"simulated (brms refuses too). Set a proper prior on each, for example:\n{fixes}")


def lkj_cholesky(n: int, eta: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, n, n) Cholesky factors of correlation matrices drawn from LKJ(eta) (onion method)."""
    out = np.empty((size, n, n))
    for s in range(size):
        beta = eta + (n - 2) / 2.0
        r12 = 2.0 * rng.beta(beta, beta) - 1.0
        R = np.array([[1.0, r12], [r12, 1.0]]) if n >= 2 else np.ones((1, 1))
        for k in range(2, n):
            beta -= 0.5
            y = rng.beta(k / 2.0, beta)
            u = rng.standard_normal(k)
            u /= np.linalg.norm(u)
            z = np.linalg.cholesky(R) @ (math.sqrt(y) * u)
            R = np.block([[R, z[:, None]], [z[None, :], np.ones((1, 1))]])
        out[s] = np.linalg.cholesky(R)
    return out


def _ordered(plan: Plan, idx: list[int], values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draws of ordered thresholds: independent priors restricted to ``tau_1 < ... < tau_{K−1}``.

    With one prior for all (brms's default), sorting independent draws is
    exact (the order statistics have that density); with different priors,
    draws are redrawn until ordered.
    """
    priors = [plan.params[k].prior for k in idx]
    if all(p.same_distribution(priors[0]) for p in priors):
        return np.sort(values, axis=1)
    out = values.copy()
    bad = np.flatnonzero((np.diff(out, axis=1) <= 0).any(axis=1))
    for _ in range(1000):
        if not bad.size:
            return out
        for j, p in enumerate(priors):
            out[bad, j] = prior_draws(p.family, p.args, -math.inf, math.inf, bad.size, 1, rng, p.describe())[:, 0]
        bad = bad[(np.diff(out[bad], axis=1) <= 0).any(axis=1)]
    raise PriorError("The priors of the thresholds (class 'Intercept') almost never draw them in increasing order, "
                     "so the prior cannot be simulated; give the thresholds priors that allow their order, e.g. "
                     "one prior for the whole class.")


def draw(design: Design, resolved: ResolvedPriors, plan: Plan, n: int, seed: int, *,
         proper_only: bool = False) -> Draws:
    """``n`` independent draws of every parameter from its prior, as one chain.

    ``proper_only=True`` (brms's ``sample_prior = "yes"``) leaves parameters
    with flat priors, and whatever depends on them, NaN instead of refusing.
    """
    if not proper_only:
        check_proper(design, resolved)
    rng = np.random.default_rng([seed, 7])
    user = np.empty((n, len(plan.params)))
    for k, p in enumerate(plan.params):
        lo, hi = p.a + p.b * p.lo, p.a + p.b * p.hi
        if p.prior.is_flat:
            user[:, k] = np.nan
            continue
        user[:, k] = prior_draws(p.prior.family, p.prior.args, lo, hi, n, 1, rng, p.prior.describe())[:, 0]
    if design.n_thresholds:
        thr = plan.indices("Intercept")
        user[:, thr] = _ordered(plan, thr, user[:, thr], rng)
    b = population_effects(plan, design, user)
    dpars = {p.name: user[None, :, k] for k, p in enumerate(plan.params) if p.kind == "dpar"}
    sd, lcorr, r = {}, {}, {}
    for f in design.factors:
        s = user[:, plan.indices("sd", f.name)]
        L = np.broadcast_to(np.eye(f.q), (n, f.q, f.q)).copy()
        for block in (blk for blk in plan.cor if blk.factor == f.name):
            idx = np.array(block.terms)
            L[:, idx[:, None], idx[None, :]] = lkj_cholesky(len(idx), block.eta, n, rng)
        z = rng.standard_normal((n, f.n_levels, f.q))
        r[f.name] = np.einsum("slk,sjk->slj", z, s[:, :, None] * L)[None]
        sd[f.name], lcorr[f.name] = s[None], L[None]
    return Draws(b[None], dpars, sd, lcorr, r)
