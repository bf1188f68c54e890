"""Sampler diagnostics with advice in words. Never imports pymc.

Works on the sampler statistics stored in a Fit's DataTree (ArviZ names:
``diverging``, ``reached_max_treedepth``, ``energy``, ``step_size``) and on
the flat brms-named draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

RHAT_LIMIT = 1.05
EBFMI_LIMIT = 0.3


@dataclass(frozen=True)
class SamplerReport:
    """Counts and per-chain statistics from the sampler."""

    n_draws: int
    divergences: int
    max_treedepth_hits: int
    ebfmi: tuple[float, ...]
    step_size: tuple[float, ...]

    @property
    def divergence_share(self) -> float:
        return self.divergences / self.n_draws if self.n_draws else 0.0


def _stat(stats: xr.Dataset, name: str) -> np.ndarray | None:
    return np.asarray(stats[name].values) if name in stats else None


def ebfmi(energy: np.ndarray) -> np.ndarray:
    """E-BFMI per chain: mean squared energy change over energy variance."""
    diff = np.diff(energy, axis=1)
    return (diff**2).mean(axis=1) / energy.var(axis=1)


def sampler_report(stats: xr.Dataset) -> SamplerReport:
    """Summarise the sampler statistics of a fit."""
    div = _stat(stats, "diverging")
    depth = _stat(stats, "reached_max_treedepth")
    energy = _stat(stats, "energy")
    step = _stat(stats, "step_size")
    n = int(div.size) if div is not None else 0
    return SamplerReport(
        n_draws=n,
        divergences=int(div.sum()) if div is not None else 0,
        max_treedepth_hits=int(depth.sum()) if depth is not None else 0,
        ebfmi=tuple(float(v) for v in ebfmi(energy)) if energy is not None else (),
        step_size=tuple(float(v) for v in step.mean(axis=1)) if step is not None else (),
    )


def advice(report: SamplerReport, rhat_max: float, target_accept: float) -> tuple[str, ...]:
    """brms's warnings, worded for lmmbayes's options."""
    out = []
    if report.divergences:
        out.append(
            f"There were {report.divergences} divergent transitions after warmup. Increasing "
            f"target_accept above {target_accept:g} may help; if they persist, reparameterise "
            "or use more informative priors."
        )
    if np.isfinite(rhat_max) and rhat_max > RHAT_LIMIT:
        out.append(
            f"Parts of the model have not converged (some Rhats are > {RHAT_LIMIT}). Be careful "
            "when analysing the results! We recommend running more iterations and/or setting "
            "stronger priors."
        )
    if report.max_treedepth_hits:
        out.append(
            f"{report.max_treedepth_hits} transitions hit the maximum tree depth; the sampler "
            "is inefficient here. Consider reparameterising or more informative priors."
        )
    low = [i for i, v in enumerate(report.ebfmi) if v < EBFMI_LIMIT]
    if low:
        out.append(
            f"E-BFMI below {EBFMI_LIMIT} in chain(s) {low}: the posterior may have heavy tails "
            "the sampler explores poorly; consider reparameterising."
        )
    return tuple(out)
