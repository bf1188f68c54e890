"""Sample on a standardised response, report on the user's scale.

A Gaussian LMM is equivariant under y -> (y - m) / s: intercepts shift and
scale, slopes, standard deviations and random effects scale, correlations do
not change. Sampling on the standardised scale lets NUTS start and adapt near
unit scale whether the response is in micrograms or in dollars (responses of
10^-6 failed to converge without it). Priors are mapped exactly onto the
standardised scale, so the posterior is the one the user asked for.

Families whose shape is not closed under the map (beta, custom priors, a
positive-support prior on a shifted intercept) switch standardisation off for
the fit (m = 0, s = 1) rather than approximate it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .design import Design
from .priors import Prior, ResolvedPriors, Slot

_LOCATION_SCALE = {"normal": (0, 1), "cauchy": (0, 1), "double_exponential": (0, 1),
                   "logistic": (0, 1), "student_t": (1, 2)}


@dataclass(frozen=True)
class Scale:
    """The affine map between the user's response and the sampled one."""

    shift: float = 0.0
    scale: float = 1.0

    @property
    def identity(self) -> bool:
        return self.shift == 0.0 and self.scale == 1.0


def _slot_shift(slot: Slot, scale: Scale) -> float:
    is_intercept = slot.class_ == "Intercept" or (slot.class_ == "b" and slot.coef == "Intercept")
    return scale.shift if is_intercept else 0.0


def _map_prior(p: Prior, shift: float, s: float) -> Prior | None:
    """``p`` for theta* = (theta - shift) / s, or None if the family is not closed."""
    name, args = p.family.name, p.args
    if not p.family.builtin or name == "beta":
        return None
    if name in ("flat", "lkj", "lkj_corr_cholesky"):
        new = args
    elif name in _LOCATION_SCALE:
        loc, sc = _LOCATION_SCALE[name]
        new = list(args)
        new[loc] = (args[loc] - shift) / s
        new[sc] = args[sc] / s
        new = tuple(new)
    elif name == "uniform":
        new = ((args[0] - shift) / s, (args[1] - shift) / s)
    elif shift != 0.0:
        return None  # positive-support families do not survive a shift
    elif name == "exponential":
        new = (args[0] * s,)
    elif name == "gamma":
        new = (args[0], args[1] * s)
    elif name in ("inv_gamma", "weibull"):
        new = (args[0], args[1] / s)
    elif name == "lognormal":
        new = (args[0] - math.log(s), args[1])
    else:
        return None
    bound = lambda v: None if v is None else (v - shift) / s  # noqa: E731
    return replace(p, args=new, lb=bound(p.lb), ub=bound(p.ub))


def standardise(design: Design, resolved: ResolvedPriors) -> tuple[Design, ResolvedPriors, Scale]:
    """The design and priors on the standardised scale, and the map back.

    Without an intercept the response is only scaled (a shift could not be
    absorbed by any coefficient).
    """
    spread = design.y_sd
    s = spread if spread > 0 and np.isfinite(spread) else 1.0
    m = design.y_mean if design.spec.intercept != "none" else 0.0
    scale = Scale(m, s)
    mapped = []
    for slot, p in resolved.table:
        q = _map_prior(p, _slot_shift(slot, scale), s)
        if q is None:
            return design, resolved, Scale()
        mapped.append((slot, q))
    return design.rescaled_response(m, s), ResolvedPriors(tuple(mapped)), scale


def unscale(raw: dict[str, np.ndarray], effects: dict[str, np.ndarray], design: Design,
            scale: Scale) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Map engine draws from the standardised scale back to the user's."""
    if scale.identity:
        return raw, effects
    s, m = scale.scale, scale.shift
    out = dict(raw)
    if "Intercept_c" in raw:
        out["Intercept_c"] = m + s * raw["Intercept_c"]
    b = s * raw["b_c"]
    if design.spec.intercept == "explicit":
        k = design.coef_names.index("Intercept")
        b[..., k] += m
    out["b_c"] = b
    out["sigma"] = s * raw["sigma"]
    for f in design.factors:
        out[f"sd__{f.name}"] = s * raw[f"sd__{f.name}"]
    return out, {name: s * r for name, r in effects.items()}
