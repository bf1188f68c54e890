"""The collapsed engine: integrate the random effects out, sample the rest, draw them exactly.

The data are reduced once to the cross-products of the marginal likelihood
(`lmmbayes.design.crossprod`), standardised with the plan's maps, and
handed to one of the structures of `.algebra`. For the model most users
fit, the log density and its gradient are hand-written C (`.kernel`):
no compile at all (a registered prior family is added by PyTensor: `.kernel.PythonPriors`). PyMC's
sampler, and installations without the C kernel, use a PyTensor graph of the same density, started at
the same point.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ...design import Design
from ...design.crossprod import Layout, RowSums, gaussian_response, gaussian_weights, layout_of, reduce_rows
from ...errors import FitError
from ..base import EngineResult, finish, flat, unflat
from ..plan import Plan
from ..sampling import RawTrace, SamplerConfig, sample, sample_compiled
from . import glmm, kernel
from .algebra import Collapsed, PartlyCollapsed, draw_effects, from_sums

NAME = "collapsed"
LABEL = "collapsed (random effects integrated out, then drawn exactly)"


def layout(design: Design) -> tuple[Layout | None, str]:
    """The structure of the random effects, or None and why the collapsed engine does not apply."""
    if NAME not in design.family.engines:
        if design.family.quadrature_codes:  # integrated group by group by adaptive quadrature (.glmm)
            ok, why = glmm.applies(design)
            return (Layout("quadrature", tuple(f.n_levels for f in design.factors)) if ok else None), why
        return None, f"family {design.family.name!r} has no exact marginal likelihood"
    add = design.spec.additions
    others = [a for a in add.present if a not in ("weights", "se")]
    if others:
        return None, (f"the addition term(s) {', '.join(a + '()' for a in others)} are fitted by the joint engine")
    if add.se is not None and add.se_sigma:
        # per-row variance s² + σ²: no longer a weighted sum of squares
        return None, "se(..., sigma = TRUE) is fitted by the joint engine"
    if design.reduced is not None:
        return design.reduced.sums.layout, ""
    rows = design.require_rows("The collapsed engine", "")
    return layout_of([f.name for f in design.factors], [f.index for f in rows.factors],
                     [f.n_levels for f in design.factors], [f.q for f in design.factors])


def applies(design: Design) -> tuple[bool, str]:
    """Whether ``method="collapsed"`` can fit ``design``."""
    lay, why = layout(design)
    return lay is not None, why


#: Fewest rows for which ``auto`` fits crossed factors with more effects by `PartlyCollapsed` (the largest
#: factor integrated out) where the C kernel does not apply and its PyTensor graph compiles. Measured end to
#: end, min-ESS/s against the joint engine: 0.47x at 5,000 rows (its 35 s compile dominates), 1.4x at 20,000
#: (200 x 100 crossed intercepts), 1.75x on lme4's InstEval (73,421 rows; 106 s against 182 s). Through
#: the C kernel (no compile) it wins at every size measured, so there ``auto`` takes it whatever the rows.
PARTIAL_AUTO_MIN_ROWS = 20_000


def preferred(design: Design, plan: Plan | None = None, sampler: str = "nutpie") -> bool:
    """Whether ``method="auto"`` should pick the collapsed engine.

    True for one grouping factor and for two nested ones, where an evaluation
    costs O(levels × q³) whatever N is; for crossed factors with at most
    `DENSE_MAX` random effects in all (a dense Cholesky per gradient);
    and for crossed factors with more (the largest factor integrated out,
    the others sampled) where the C kernel runs them (nutpie, σ the only
    distributional parameter: ``plan``, where known), else from `PARTIAL_AUTO_MIN_ROWS` rows. For
    non-Gaussian families with one grouping factor or two nested ones (adaptive quadrature,
    `.glmm`) where nutpie runs; the pipeline refits on the joint engine if its accuracy
    check fails.
    """
    lay = layout(design)[0]
    if lay is None:
        return False
    if lay.kind == "quadrature":
        return sampler == "nutpie"
    if lay.kind == "partial":
        return design.n_obs >= PARTIAL_AUTO_MIN_ROWS or (sampler == "nutpie" and plan is not None
                                                         and kernel.factors_kernel_applies(design, plan))
    return lay.kind in ("one", "nested", "dense")


def sums(design: Design) -> RowSums:
    """The cross-products of ``[X, t(y) − offset]`` and Z (reduced here for rows in memory; ``t`` is the
    family's normal scale: `Family.normal_response`)."""
    if design.reduced is not None:
        return design.reduced.sums
    lay, why = layout(design)
    if lay is None:
        raise FitError(f"The collapsed engine does not apply to {design.spec.formula!r}: {why}. Use method=\"joint\".")
    rows = design.require_rows("The collapsed engine", "")
    assert rows.y is not None
    y = gaussian_response(design.family.normal_response(rows.y), rows.y, rows.offset)
    shift = np.append(design.stats.x_mean, design.stats.y_mean) if design.centred_intercept \
        else np.zeros(rows.X.shape[1] + 1)
    return reduce_rows(lay, rows.X, y, [f.index for f in rows.factors], [f.Z for f in rows.factors], shift,
                       gaussian_weights(rows.weights, rows.extra.se))


def fixed_sigma(design: Design, plan: Plan) -> float | None:
    """The residual SD in the plan's standardised units where ``se()`` fixes it (1 in data units, the
    known SDs being in the weights; see `gaussian_weights`), else None (σ is sampled)."""
    return 1.0 / plan.std.y_scale if design.spec.additions.se is not None else None


def collapse(design: Design, plan: Plan) -> Collapsed:
    """The marginal likelihood's cross-products of ``design`` in the plan's standardised units.

    Raises
    ------
    FitError
        If the collapsed engine does not apply to the design.
    """
    std = plan.std
    scaled = sums(design).standardised(np.append(std.x_centre, std.y_shift), np.append(std.x_scale, std.y_scale),
                                       std.z_scale)
    # standardised by the plan's centre, so the intercept's centre is 0 here (not the weighted means)
    return from_sums(scaled, tuple(f.name for f in design.factors), design.centred_intercept,
                     np.zeros(scaled.shift.size - 1))


def _sampled_effects(collapsed: Collapsed, hyper_scales: dict[str, Any]) -> dict[str, Any]:
    """The non-centred effects of the factors a `PartlyCollapsed` samples: b = z (diag(sd) Lcorr)'."""
    import pymc as pm
    import pytensor.tensor as pt

    if not isinstance(collapsed, PartlyCollapsed):
        return {}
    out = {}
    for o in collapsed.others:
        # non-centred, as the joint engine: centring measured no better (min ESS 214 vs 218, 50 items x 100 rows)
        z = pm.Normal(f"z__{o.name}", 0.0, 1.0, shape=(o.n_levels, o.q))
        out[o.name] = pt.dot(z, hyper_scales[o.name].T)
    return out


def build_model(design: Design, plan: Plan, collapsed: Collapsed | None = None):  # type: ignore[no-untyped-def]
    """The collapsed PyMC model: the planned parameters plus the marginal likelihood as a Potential."""
    import pymc as pm
    import pytensor.tensor as pt

    from ..pymc_model import build_hyper

    collapsed = collapse(design, plan) if collapsed is None else collapsed
    with pm.Model() as model:
        hyper = build_hyper(plan, design)
        beta = hyper.take(plan, "b")
        if design.centred_intercept:
            beta = pt.concatenate([hyper.one(plan, "Intercept")[None], beta])
        scales = {f.name: hyper.scale(plan, f.name) for f in design.factors}
        known = fixed_sigma(design, plan)
        sigma = hyper.one(plan, "sigma") if known is None else pt.constant(known)
        effects = _sampled_effects(collapsed, scales)
        if effects:
            assert isinstance(collapsed, PartlyCollapsed)
            pm.Potential("marginal_loglik", collapsed.loglik(beta, sigma, scales, effects))
        else:
            pm.Potential("marginal_loglik", collapsed.loglik(beta, sigma, scales))
    return model, hyper


def run(design: Design, plan: Plan, config: SamplerConfig, refuse_inaccurate: bool = False) -> EngineResult:
    """Reduce, build, sample the hyperparameters and draw the random effects exactly.

    Raises
    ------
    FitError
        If the design is not one the collapsed engine handles, or sampling fails.
    InaccurateIntegration
        With ``refuse_inaccurate`` (``method="auto"``), where the GLMM engine measured before sampling that its
        approximation would fail its accuracy check.
    """
    from ..pymc_model import u_from_std

    lay = layout(design)[0]
    if lay is not None and lay.kind == "quadrature":
        return glmm.run(design, plan, config, refuse_inaccurate)
    t0 = time.perf_counter()
    collapsed = collapse(design, plan)
    fast = kernel.build(design, plan, collapsed) if config.sampler == "nutpie" else None
    compiled: dict[str, float] = {}
    if fast is not None:
        # No compile at all: the log density is C built at install time (see .kernel).
        # "load" is nutpie's import (which pulls in numba and ArviZ) and the model's wrapper.
        compiled = kernel.build_priors(fast.params)
        t1 = time.perf_counter()
        model = kernel.nutpie_model(fast)
        t_load = time.perf_counter() - t1
        trace = sample_compiled(model, config, ["x"])
        x = trace.posterior["x"]
        u, L = fast.constrained(x)
        offsets = kernel.sd_offsets(plan)
        lcorr = {f.name: L[..., offsets[f.name]:offsets[f.name] + f.q, offsets[f.name]:offsets[f.name] + f.q]
                 for f in design.factors}
        z = {f"z__{name}": v for name, v in fast.effects(x).items()} if isinstance(fast, kernel.FactorsKernel) else {}
        trace = RawTrace(z, trace.sample_stats, {**compiled, "load": t_load, **trace.timings})
        route = kernel.route(fast.params)
        if isinstance(collapsed, PartlyCollapsed):
            route += "; " + ", ".join(o.name for o in collapsed.others) + " sampled, " + collapsed.big.name \
                + " integrated out"
    else:
        model, hyper = build_model(design, plan, collapsed)
        t1 = time.perf_counter()
        sampled = [o.name for o in collapsed.others] if isinstance(collapsed, PartlyCollapsed) else []
        names = ["u_std"] + [f"Lcorr__{f.name}" for f in design.factors] + [f"z__{g}" for g in sampled]
        trace = sample(model, config, names, hyper.start)
        u = u_from_std(plan, trace.posterior["u_std"])
        lcorr = {f.name: trace.posterior[f"Lcorr__{f.name}"] for f in design.factors}
        route = ("PyTensor graph; " + ", ".join(sampled) + " sampled, " + collapsed.big.name + " integrated out"
                 if isinstance(collapsed, PartlyCollapsed) else "PyTensor graph")
    t2 = time.perf_counter()
    C = u.shape[0]
    std_vals = flat(plan.to_std(u))
    kinds = [p.kind for p in plan.params]
    beta = std_vals[:, [k for k, kind in enumerate(kinds) if kind == "b"]]
    if design.centred_intercept:
        beta = np.concatenate([std_vals[:, [kinds.index("Intercept")]], beta], axis=1)
    known = fixed_sigma(design, plan)
    sigma = std_vals[:, [p.name for p in plan.params].index("sigma")] if known is None \
        else np.full(std_vals.shape[0], known)
    scales = {f.name: std_vals[:, plan.indices("sd", f.name)][:, :, None] * flat(lcorr[f.name])
              for f in design.factors}
    rng = np.random.default_rng([config.seed, 1])
    if isinstance(collapsed, PartlyCollapsed):
        sampled_r = {o.name: np.einsum("slk,sjk->slj", flat(trace.posterior[f"z__{o.name}"]), scales[o.name])
                     for o in collapsed.others}
        drawn = {**sampled_r, **collapsed.draw(beta, sigma, scales, rng, sampled_r)}
    else:
        drawn = draw_effects(collapsed, beta, sigma, scales, rng)
    r_std = {f.name: unflat(drawn[f.name], C) for f in design.factors}
    draws = finish(plan, design, u, lcorr, r_std)
    timings = {"build": t1 - t0 - compiled.get("compile", 0.0), **trace.timings, "effects": time.perf_counter() - t2}
    info = {"route": route}
    if isinstance(collapsed, PartlyCollapsed):
        info.update(integrated=collapsed.big.name, sampled=", ".join(o.name for o in collapsed.others))
    return EngineResult(draws, trace.sample_stats, timings, info)
