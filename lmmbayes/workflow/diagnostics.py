"""Convergence and sampler diagnostics with advice in words, from arviz-stats.

R-hat (rank-normalised, split), bulk and tail ESS (Vehtari et al. 2021),
MCSE and E-BFMI all come from arviz-stats; this module chooses what to warn
about and words it as brms and rstan do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from ..results.model import FitResult
from ..results.posterior import flat_draws

RHAT_LIMIT = 1.05
EBFMI_LIMIT = 0.3
#: Bulk and tail ESS below this many per chain draw a warning (rstan's and brms's rule).
ESS_PER_CHAIN_LIMIT = 100
DIAGNOSTIC_COLUMNS = ["Rhat", "Bulk_ESS", "Tail_ESS", "MCSE_mean", "MCSE_sd"]


def convergence(draws: np.ndarray, *, mcse: bool = False) -> pd.DataFrame:
    """Rhat, Bulk_ESS and Tail_ESS (and MCSE_mean, MCSE_sd) of (chain, draw, K) draws."""
    from arviz_stats.base import array_stats

    kw = {"chain_axis": 0, "draw_axis": 1}
    with np.errstate(invalid="ignore", divide="ignore"):
        table = {"Rhat": array_stats.rhat(draws, method="rank", **kw),
                 "Bulk_ESS": array_stats.ess(draws, method="bulk", **kw),
                 "Tail_ESS": array_stats.ess(draws, method="tail", prob=(0.05, 0.95), **kw)}
        if mcse:
            table["MCSE_mean"] = array_stats.mcse(draws, method="mean", **kw)
            table["MCSE_sd"] = array_stats.mcse(draws, method="sd", **kw)
    return pd.DataFrame(table)


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


def sampler_report(stats: xr.Dataset) -> SamplerReport:
    """Summarise the sampler statistics of a fit."""
    from arviz_stats.base import array_stats

    div = _stat(stats, "diverging")
    depth = _stat(stats, "reached_max_treedepth")
    energy = _stat(stats, "energy")
    step = _stat(stats, "step_size")
    bfmi: tuple[float, ...] = ()
    if energy is not None and energy.ndim == 2 and energy.shape[1] > 1:
        with np.errstate(all="ignore"):
            bfmi = tuple(float(v) for v in array_stats.bfmi(energy, chain_axis=0, draw_axis=1))
    return SamplerReport(
        n_draws=int(div.size) if div is not None else 0,
        divergences=int(div.sum()) if div is not None else 0,
        max_treedepth_hits=int(depth.sum()) if depth is not None else 0,
        ebfmi=bfmi,
        step_size=tuple(float(v) for v in step.mean(axis=1)) if step is not None else (),
    )


def advice(report: SamplerReport, rhat_max: float, target_accept: float | None) -> tuple[str, ...]:
    """brms's warnings, worded for lmmbayes's options; chains counted from 1."""
    out = []
    if report.divergences:
        out.append(f"There were {report.divergences} divergent transitions after warmup. Increasing target_accept "
                   f"above {target_accept or 0.8:g} may help; if they persist, reparameterise or use more informative "
                   "priors.")
    if np.isfinite(rhat_max) and rhat_max > RHAT_LIMIT:
        out.append(f"Parts of the model have not converged (some Rhats are > {RHAT_LIMIT}). Be careful when "
                   "analysing the results! We recommend running more iterations and/or setting stronger priors.")
    if report.max_treedepth_hits:
        out.append(f"{report.max_treedepth_hits} transitions hit the maximum tree depth; the sampler is inefficient "
                   "here. Consider reparameterising or more informative priors.")
    low = [i + 1 for i, v in enumerate(report.ebfmi) if v < EBFMI_LIMIT]
    if low:
        out.append(f"E-BFMI below {EBFMI_LIMIT} in chain(s) {low}: the posterior may have heavy tails the sampler "
                   "explores poorly; consider reparameterising.")
    return tuple(out)


def ess_advice(table: pd.DataFrame, n_chains: int) -> tuple[str, ...]:
    """Warnings for low bulk and tail ESS, worded as rstan does (below 100 per chain)."""
    limit = ESS_PER_CHAIN_LIMIT * n_chains
    out = []
    for column, what in (("Bulk_ESS", "posterior means and medians"),
                         ("Tail_ESS", "posterior variances and tail quantiles")):
        values = table[column].to_numpy(dtype=float)
        low = table.index[np.isfinite(values) & (values < limit)].tolist()
        if low:
            shown = ", ".join(low[:5]) + (f" and {len(low) - 5} more" if len(low) > 5 else "")
            out.append(f"{column} is below {limit} ({ESS_PER_CHAIN_LIMIT} per chain) for {shown}: {what} may be "
                       "unreliable. Running more draws may help.")
    return tuple(out)


def fit_warnings(fit: FitResult) -> tuple[str, ...]:
    """Every sampler and convergence warning of a fit (none for draws from the prior)."""
    if fit.prior_only:
        return ()
    names, draws = flat_draws(fit.posterior, fit.design, random=False)
    if not names:
        return ()
    table = convergence(draws)
    table.index = names
    report = sampler_report(fit.idata["sample_stats"].to_dataset())
    rhat = table["Rhat"].to_numpy(dtype=float)
    rhat_max = float(np.nanmax(rhat)) if np.isfinite(rhat).any() else float("nan")
    return (advice(report, rhat_max, fit.config.target_accept) + ess_advice(table, fit.n_chains)
            + integration_advice(fit))


def integration_advice(fit: FitResult) -> tuple[str, ...]:
    """Warnings from the collapsed engine's own accuracy check of its quadrature (see
    `lmmbayes.engines.collapsed.glmm`): a forced fit that failed it, or an ``auto`` fit refitted on the joint
    engine because of it."""
    if "fallback" in fit.info:
        return (f"method='auto' {fit.info['fallback']}.",)
    if fit.info.get("quadrature_ok") is False:
        return (f"The collapsed engine's integration of the random effects is not accurate enough here: "
                f"{fit.info.get('quadrature_check')}. The posterior may be off; refit with method='joint' (or "
                "method='auto', which does so when this check fails).",)
    return ()


def format_sampler_report(report: SamplerReport) -> str:
    """The sampler report as a few lines of text."""
    if report.n_draws == 0:
        return "No sampler statistics (the draws were not made by NUTS, e.g. sample_prior='only')."
    fmt = lambda values: ", ".join(f"{v:.3g}" for v in values) or "NA"
    return "\n".join([
        f"Divergent transitions: {report.divergences} of {report.n_draws} ({100 * report.divergence_share:.1f}%)",
        f"Max tree depth hits:   {report.max_treedepth_hits}",
        f"E-BFMI per chain:      {fmt(report.ebfmi)}",
        f"Step size per chain:   {fmt(report.step_size)}",
    ])


def format_table(table: pd.DataFrame, number: str = "{:.3g}") -> pd.DataFrame:
    """A table as printed: ESS as integers, the rest with ``number`` (three significant digits), NA for
    non-finite values. The summary prints its tables through here too (``"{:.2f}"``)."""
    shown = table.copy().astype(object)
    for col in shown.columns:
        values = table[col].to_numpy(dtype=float)
        ess = col in ("Bulk_ESS", "Tail_ESS")
        shown[col] = ["NA" if not np.isfinite(v) else str(int(round(v))) if ess else number.format(v)
                      for v in values]
    return shown


@dataclass(frozen=True)
class Diagnostics:
    """Convergence diagnostics of a fit: what ``Fit.diagnostics()`` returns.

    Attributes
    ----------
    parameters : pandas.DataFrame
        Indexed by brms parameter names (random effects included); columns
        Rhat, Bulk_ESS, Tail_ESS, MCSE_mean, MCSE_sd.
    sampler : SamplerReport
        Divergences, max-tree-depth hits, E-BFMI and step size per chain.
    warnings : tuple of str
        Advice in words, empty when nothing looks wrong.
    integration : str
        For a non-Gaussian fit on the collapsed engine, how the random effects
        were integrated out and how accurately (quadrature at K against 2K
        nodes over posterior draws, with the rule it passed or failed); empty otherwise.
    """

    parameters: pd.DataFrame
    sampler: SamplerReport
    warnings: tuple[str, ...]
    integration: str = ""

    def __str__(self) -> str:
        lines = ["Parameters:", format_table(self.parameters).to_string(), "", "Sampler:",
                 format_sampler_report(self.sampler)]
        if self.integration:
            lines += ["", f"Integration: {self.integration}"]
        lines += [f"Warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def _repr_pretty_(self, p: object, cycle: bool) -> None:  # IPython
        p.text(str(self))  # type: ignore[attr-defined]

    def _repr_html_(self) -> str:
        return format_table(self.parameters).to_html(border=0) + f"<pre>{format_sampler_report(self.sampler)}</pre>"


def diagnostics_table(fit: FitResult, *, include_random: bool = True) -> Diagnostics:
    """Per-parameter R-hat, ESS and MCSE plus the sampler report of a fit.

    Parameters
    ----------
    fit : lmmbayes.Fit
    include_random : bool
        Include the random effects ``r_<g>[level,term]`` (default, as brms's
        ``rhat()`` and ``neff_ratio()`` do).
    """
    names, draws = flat_draws(fit.posterior, fit.design, random=include_random)
    table = convergence(draws, mcse=True)
    table.index = pd.Index(names)
    report = sampler_report(fit.idata["sample_stats"].to_dataset())
    rhat = table["Rhat"].to_numpy(dtype=float)
    rhat_max = float(np.nanmax(rhat)) if np.isfinite(rhat).any() else float("nan")
    warns = () if fit.prior_only else advice(report, rhat_max, fit.config.target_accept) + \
        ess_advice(table, draws.shape[0]) + integration_advice(fit)
    return Diagnostics(table[DIAGNOSTIC_COLUMNS], report, warns, str(fit.info.get("integration", "")))
