"""The joint engine: every random effect is a parameter (non-centred), any family, any structure.

For grouping factor f with q terms, ``z__f`` is a (levels, q) array of
standard normals and the effects are ``r = z @ (diag(sd) Lcorr)'`` in
standardised units; the linear predictor gathers ``r[index]`` per row, so no
dense N x (levels x q) matrix is ever built. Every data array is a PyMC data
container, not a constant: the compiled code then depends on the model's
structure only, so PyTensor's numba cache serves any data set of the same
shape of model, and a new response can be swapped in without compiling
(simulation-based calibration).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..design import Design
from ..families import THRESHOLDS, Extra
from .base import EngineResult, finish
from .plan import Plan
from .pymc_model import Hyper, build_hyper, u_from_std
from .sampling import SamplerConfig, sample

NAME = "joint"
LABEL = "joint (all random effects sampled by NUTS)"


def applies(design: Design) -> tuple[bool, str]:
    """Whether the joint engine can fit ``design``."""
    if not design.rows_in_memory:
        return False, ("a Dask DataFrame is reduced to cross-products, and the joint engine needs the rows; "
                       'use method="collapsed" (or "auto"), or fit a pandas frame (ddf.compute())')
    if NAME not in design.family.engines:
        return False, f"family {design.family.name!r} is not fitted by the joint engine"
    return True, ""


def standardised_response(design: Design, plan: Plan, y: np.ndarray | None = None) -> np.ndarray:
    """The response as the model sees it: ``(y − offset − shift) / scale`` where it is standardised."""
    rows = design.require_rows("The joint engine", "")
    y = np.asarray(rows.y if y is None else y, dtype=float)
    if design.family.location_scale and design.family.link == "identity":
        offset = rows.offset if rows.offset is not None else 0.0
        return (y - offset - plan.std.y_shift) / plan.std.y_scale
    return y


def build_model(design: Design, plan: Plan) -> tuple[Any, Hyper]:
    """The joint PyMC model of ``design`` under the planned parameters."""
    import pymc as pm
    import pytensor.tensor as pt

    rows = design.require_rows("The joint engine", "")
    std, fam = plan.std, design.family
    folded = fam.location_scale and fam.link == "identity"  # offsets folded into the standardised response
    with pm.Model() as model:
        hyper = build_hyper(plan, design)
        X = pm.Data("X", (rows.X - std.x_centre) / std.x_scale)
        eta = pt.dot(X, hyper.take(plan, "b"))
        if design.intercept_in_eta:
            eta = eta + hyper.one(plan, "Intercept")
        if rows.offset is not None and not folded:
            eta = eta + pm.Data("offset", rows.offset)
        for f, fr, z_scale in zip(design.factors, rows.factors, std.z_scale):
            index = pm.Data(f"index__{f.name}", fr.index)
            Z = pm.Data(f"Z__{f.name}", fr.Z / z_scale)
            n_levels = pm.Data(f"n_levels__{f.name}", np.int64(f.n_levels))
            z = pm.Normal(f"z__{f.name}", 0.0, 1.0, shape=(n_levels, f.q))
            r = pt.dot(z, hyper.scale(plan, f.name).T)
            eta = eta + (r[index] * Z).sum(axis=1)
        y = pm.Data("y_obs", standardised_response(design, plan))
        extra = Extra(None if rows.extra.trials is None else pm.Data("trials", rows.extra.trials),
                      None if rows.extra.se is None else pm.Data("se", rows.extra.se / std.y_scale))
        dp = {name: hyper.one(plan, name) for name in plan.dpars}
        if design.n_thresholds:
            dp[THRESHOLDS] = hyper.take(plan, "Intercept")
        loglik = fam.logp_pt(y, eta, dp, extra)
        if rows.weights is not None:
            loglik = loglik * pm.Data("weights", rows.weights)
        pm.Potential("loglik", loglik.sum())
    return model, hyper


def run(design: Design, plan: Plan, config: SamplerConfig) -> EngineResult:
    """Build, sample and turn the non-centred draws into random effects."""
    t0 = time.perf_counter()
    model, hyper = build_model(design, plan)
    names = ["u_std"] + [f"Lcorr__{f.name}" for f in design.factors] + [f"z__{f.name}" for f in design.factors]
    t1 = time.perf_counter()
    trace = sample(model, config, names, hyper.start)
    return result(design, plan, trace.posterior, trace.sample_stats, {"build": t1 - t0, **trace.timings})


def result(design: Design, plan: Plan, posterior: dict[str, np.ndarray], stats: dict[str, np.ndarray],
           timings: dict[str, float]) -> EngineResult:
    """The user-scale draws of a joint-engine trace."""
    C, D = posterior["u_std"].shape[:2] if "u_std" in posterior else next(iter(posterior.values())).shape[:2]
    u_std = posterior["u_std"] if "u_std" in posterior else np.zeros((C, D, 0))
    lcorr = {f.name: posterior[f"Lcorr__{f.name}"] for f in design.factors}
    r_std = {}
    idx = {f.name: plan.indices("sd", f.name) for f in design.factors}
    for f in design.factors:
        scale = u_std[..., idx[f.name]][..., :, None] * lcorr[f.name]  # diag(sd*) @ Lcorr
        r_std[f.name] = np.einsum("cdlk,cdjk->cdlj", posterior[f"z__{f.name}"], scale)
    draws = finish(plan, design, u_from_std(plan, u_std), lcorr, r_std)
    return EngineResult(draws, stats, timings, {"route": "PyMC model compiled for " + ("nutpie" if "compile" in timings
                                                                                    else "PyMC")})
