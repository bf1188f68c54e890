"""What every engine takes and gives back, and the map of its draws to the user's scale.

An engine takes a `Design`, the
`Plan` of its parameters and a
`SamplerConfig`, and returns an
`EngineResult` whose draws are already on the user's scale with
brms's blocks (`Draws`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..design import Design
from .plan import Plan
from .sampling import RawTrace, SamplerConfig


@dataclass(frozen=True, eq=False)
class Draws:
    """Posterior draws in brms's blocks, on the user's scale, all (chain, draw, ...).

    Attributes
    ----------
    b : (C, D, P) array
        Population-level effects in brms's order, ``Intercept`` first and on the
        original (uncentred) scale where the model has a centred intercept.
    dpars : dict of (C, D) arrays
        Distributional parameters by brms name (``sigma``, ``shape``...).
    sd : dict of (C, D, q) arrays
        Per grouping factor, the SDs of its terms.
    lcorr : dict of (C, D, q, q) arrays
        Per grouping factor, the Cholesky factor of its terms' correlation
        matrix (identity outside correlated blocks).
    r : dict of (C, D, levels, q) arrays
        Per grouping factor, the random effects.
    """

    b: np.ndarray
    dpars: dict[str, np.ndarray]
    sd: dict[str, np.ndarray]
    lcorr: dict[str, np.ndarray]
    r: dict[str, np.ndarray]

    @property
    def shape(self) -> tuple[int, int]:
        return self.b.shape[0], self.b.shape[1]


@dataclass(frozen=True, eq=False)
class EngineResult:
    """Draws on the user's scale, sampler statistics by ArviZ name, seconds per stage, and notes."""

    draws: Draws
    sample_stats: dict[str, np.ndarray]
    timings: dict[str, float]
    info: dict[str, Any] = field(default_factory=dict)


class Engine(Protocol):
    """An engine: checks it applies, then fits."""

    name: str
    label: str

    def applies(self, design: Design) -> tuple[bool, str]: ...

    def run(self, design: Design, plan: Plan, config: SamplerConfig) -> EngineResult: ...


def population_effects(plan: Plan, design: Design, user: np.ndarray) -> np.ndarray:
    """(..., P) population-level effects in brms's order from the plan's parameters on the user's scale.

    A centred intercept is moved to the original scale: ``b_Intercept =
    Intercept − x̄'b``; an ordinal model's thresholds, which the linear
    predictor is subtracted from, become ``b_Intercept[k] = Intercept[k] + x̄'b``.
    """
    b = user[..., plan.indices("b")]
    if not design.centred_intercept:
        return b
    shift = (b @ plan.std.x_centre)[..., None]
    intercepts = user[..., plan.indices("Intercept")]
    intercepts = intercepts + shift if design.n_thresholds else intercepts - shift
    return np.concatenate([intercepts, b], axis=-1)


def finish(plan: Plan, design: Design, u: np.ndarray, lcorr: dict[str, np.ndarray],
           r_std: dict[str, np.ndarray]) -> Draws:
    """Map an engine's draws to the user's scale.

    Parameters
    ----------
    u : (C, D, K) array
        The sampled parameters in the plan's order.
    lcorr : dict of (C, D, q, q) arrays
        Per factor, the Cholesky factor of the correlation matrix.
    r_std : dict of (C, D, levels, q) arrays
        Per factor, the random effects in standardised-data units.
    """
    user = plan.to_user(u)
    std = plan.std
    b = population_effects(plan, design, user)
    dpars = {p.name: user[..., k] for k, p in enumerate(plan.params) if p.kind == "dpar"}
    sd, r, lc = {}, {}, {}
    for f, z in zip(design.factors, std.z_scale):
        sd[f.name] = user[..., plan.indices("sd", f.name)]
        r[f.name] = r_std[f.name] * (std.y_scale / z)
        L = lcorr.get(f.name)
        lc[f.name] = L if L is not None else np.broadcast_to(np.eye(f.q), u.shape[:2] + (f.q, f.q)).copy()
    return Draws(b, dpars, sd, lc, r)


def flat(a: np.ndarray) -> np.ndarray:
    """(C, D, ...) -> (C * D, ...), chains one after the other."""
    return a.reshape((a.shape[0] * a.shape[1],) + a.shape[2:])


def unflat(a: np.ndarray, chains: int) -> np.ndarray:
    """(C * D, ...) -> (C, D, ...)."""
    return a.reshape((chains, a.shape[0] // chains) + a.shape[1:])


def trace_timings(trace: RawTrace, **extra: float) -> dict[str, float]:
    return {**extra, **trace.timings}
