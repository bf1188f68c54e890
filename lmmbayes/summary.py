"""brms-style tables from posterior draws: pure functions, printing kept separate.

Estimate is the posterior mean, Est.Error the posterior SD, the interval
bounds equal-tailed quantiles; Rhat is the rank-normalised split R-hat and
Bulk_ESS / Tail_ESS are those of Vehtari et al. (2021), from arviz-stats.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr
from arviz_stats.base import array_stats

from .design import Design
from .posterior import flat_draws, pair_label

STAT_COLUMNS = ["Estimate", "Est.Error", "l-95% CI", "u-95% CI", "Rhat", "Bulk_ESS", "Tail_ESS"]


def _check_probs(probs: tuple[float, ...]) -> tuple[float, ...]:
    from .errors import LmmbayesError

    try:
        values = tuple(float(p) for p in probs)
    except (TypeError, ValueError):
        raise LmmbayesError(f"probs must be a sequence of numbers in (0, 1), got {probs!r}.") from None
    if not values or any(not 0 < p < 1 for p in values):
        raise LmmbayesError(f"probs must be numbers strictly between 0 and 1, got {probs!r}.")
    return values


def quantile_label(p: float) -> str:
    """brms's column name for a quantile: 0.025 -> 'Q2.5'."""
    return f"Q{100 * p:.10g}"


def describe(names: list[str], draws: np.ndarray, probs: tuple[float, ...] = (0.025, 0.975)) -> pd.DataFrame:
    """Estimate, Est.Error and quantiles of (chain, draw, K) draws."""
    probs = _check_probs(probs)
    flat = draws.reshape(-1, draws.shape[-1])
    table = {"Estimate": flat.mean(axis=0), "Est.Error": flat.std(axis=0, ddof=1)}
    qs = np.quantile(flat, probs, axis=0)
    for p, q in zip(probs, qs):
        table[quantile_label(p)] = q
    return pd.DataFrame(table, index=pd.Index(names, name=None))


def convergence(draws: np.ndarray) -> pd.DataFrame:
    """Rhat, Bulk_ESS and Tail_ESS of (chain, draw, K) draws (columns of the summary)."""
    kw = {"chain_axis": 0, "draw_axis": 1}
    with np.errstate(invalid="ignore", divide="ignore"):
        rhat = array_stats.rhat(draws, method="rank", **kw)
        bulk = array_stats.ess(draws, method="bulk", **kw)
        tail = _tail_ess(draws)
    return pd.DataFrame({"Rhat": rhat, "Bulk_ESS": bulk, "Tail_ESS": tail})


def _tail_ess(draws: np.ndarray) -> np.ndarray:
    # Tail ESS is the smaller of the ESS of the 5% and 95% quantile indicators.
    kw = {"chain_axis": 0, "draw_axis": 1}
    lo = array_stats.ess(draws, method="quantile", prob=0.05, **kw)
    hi = array_stats.ess(draws, method="quantile", prob=0.95, **kw)
    return np.minimum(lo, hi)


def posterior_summary(posterior: xr.Dataset, design: Design,
                      probs: tuple[float, ...] = (0.025, 0.975)) -> pd.DataFrame:
    """One row per brms parameter: Estimate, Est.Error and the quantiles."""
    names, draws = flat_draws(posterior, design)
    return describe(names, draws, probs)


@dataclass(frozen=True)
class SummaryBlock:
    title: str
    table: pd.DataFrame


@dataclass(frozen=True)
class Summary:
    """What brms's ``summary()`` shows; ``str()`` prints brms's 2.21+ layout.

    Attributes
    ----------
    header : tuple of (str, str)
        The Family/Links/Formula/Data/Draws lines.
    group_blocks : tuple of (str, int, DataFrame)
        Per grouping factor: name, number of levels, sd and cor rows.
    fixed : DataFrame
        Regression coefficients.
    spec : DataFrame
        Further distributional parameters (sigma).
    warnings : tuple of str
    footer : str
    """

    header: tuple[tuple[str, str], ...]
    group_blocks: tuple[tuple[str, int, pd.DataFrame], ...]
    fixed: pd.DataFrame
    spec: pd.DataFrame
    warnings: tuple[str, ...]
    footer: str

    def __str__(self) -> str:
        lines = [f"{key:>7}: {value}" for key, value in self.header]
        if self.group_blocks:
            lines += ["", "Multilevel Hyperparameters:"]
            for name, n_levels, table in self.group_blocks:
                lines.append(f"~{name} (Number of levels: {n_levels})")
                lines.append(_format(table))
                lines.append("")
            lines.pop()
        lines += ["", "Regression Coefficients:", _format(self.fixed)]
        lines += ["", "Further Distributional Parameters:", _format(self.spec), "", self.footer]
        lines += [f"Warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def _repr_pretty_(self, p: object, cycle: bool) -> None:  # IPython
        p.text(str(self))  # type: ignore[attr-defined]

    def to_frame(self) -> pd.DataFrame:
        """Every row of the summary in one DataFrame."""
        parts = [t for _, _, t in self.group_blocks] + [self.fixed, self.spec]
        return pd.concat(parts)


def _format(table: pd.DataFrame) -> str:
    if table.empty:
        return "(none)"
    shown = table.copy()
    for col in ("Estimate", "Est.Error", "l-95% CI", "u-95% CI", "Rhat"):
        shown[col] = shown[col].map(lambda v: "NA" if not np.isfinite(v) else f"{v:.2f}")
    for col in ("Bulk_ESS", "Tail_ESS"):
        shown[col] = shown[col].map(lambda v: "NA" if not np.isfinite(v) else f"{int(round(v))}")
    return shown.to_string()


def _stat_table(labels: list[str], draws: np.ndarray) -> pd.DataFrame:
    desc = describe(labels, draws, (0.025, 0.975))
    conv = convergence(draws)
    conv.index = desc.index
    table = pd.concat([desc, conv], axis=1)
    table.columns = STAT_COLUMNS
    return table


def build_summary(posterior: xr.Dataset, design: Design, header: tuple[tuple[str, str], ...],
                  warnings: tuple[str, ...], footer: str) -> Summary:
    """Compute the summary tables (no printing)."""
    groups = []
    for f in design.factors:
        labels = [f"sd({t})" for t in f.terms]
        arrays = [posterior[f"sd_{f.name}"].values]
        if f.cor_pairs:
            labels += [f"cor({f.terms[i]},{f.terms[j]})" for i, j in f.cor_pairs]
            arrays.append(posterior[f"cor_{f.name}"].values)
        groups.append((f.name, f.n_levels, _stat_table(labels, np.concatenate(arrays, axis=-1))))
    fixed = _stat_table(list(design.b_names), posterior["b"].values)
    spec = _stat_table(["sigma"], posterior["sigma"].values[..., None])
    return Summary(header, tuple(groups), fixed, spec, warnings, footer)


def fixef(posterior: xr.Dataset, design: Design, probs: tuple[float, ...]) -> pd.DataFrame:
    """Population-level effects, one row per coefficient."""
    return describe(list(design.b_names), posterior["b"].values, probs)


def ranef(posterior: xr.Dataset, design: Design, probs: tuple[float, ...]) -> dict[str, pd.DataFrame]:
    """Per grouping factor, each level's deviations; rows indexed by (level, term)."""
    out = {}
    for f in design.factors:
        r = posterior[f"r_{f.name}"].values
        index = pd.MultiIndex.from_product([f.levels, f.terms], names=[f.name, "term"])
        table = describe([""] * len(index), r.reshape(r.shape[:2] + (-1,)), probs)
        table.index = index
        out[f.name] = table
    return out


def coef(posterior: xr.Dataset, design: Design, probs: tuple[float, ...]) -> dict[str, pd.DataFrame]:
    """Per grouping factor, population plus group-level effect for every level.

    Rows are indexed by (level, coefficient); coefficients without a group
    term are the population-level value for every level, as in brms.
    """
    b = posterior["b"].values
    out = {}
    for f in design.factors:
        r = posterior[f"r_{f.name}"].values
        names = list(design.b_names) + [t for t in f.terms if t not in design.b_names]
        n_chain, n_draw = b.shape[:2]
        total = np.zeros((n_chain, n_draw, f.n_levels, len(names)))
        for k, name in enumerate(names):
            if name in design.b_names:
                total[..., k] += b[..., design.b_names.index(name)][..., None]
            if name in f.terms:
                total[..., k] += r[..., f.terms.index(name)]
        index = pd.MultiIndex.from_product([f.levels, names], names=[f.name, "coef"])
        table = describe([""] * len(index), total.reshape(n_chain, n_draw, -1), probs)
        table.index = index
        out[f.name] = table
    return out


def varcorr(posterior: xr.Dataset, design: Design, probs: tuple[float, ...]) -> dict[str, dict[str, pd.DataFrame]]:
    """Standard deviations and correlations per grouping factor, plus the residual."""
    out: dict[str, dict[str, pd.DataFrame]] = {}
    for f in design.factors:
        entry = {"sd": describe(list(f.terms), posterior[f"sd_{f.name}"].values, probs)}
        if f.cor_pairs:
            labels = [pair_label(f.terms, i, j) for i, j in f.cor_pairs]
            entry["cor"] = describe(labels, posterior[f"cor_{f.name}"].values, probs)
        out[f.name] = entry
    out["residual__"] = {"sd": describe(["sigma"], posterior["sigma"].values[..., None], probs)}
    return out
