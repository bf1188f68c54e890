"""brms-style tables from posterior draws: pure functions, with printing kept separate.

Estimate is the posterior mean, Est.Error the posterior SD, the interval
bounds equal-tailed quantiles; Rhat, Bulk_ESS and Tail_ESS come from
arviz-stats (`lmmbayes.workflow.diagnostics.convergence`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from .. import _validate as check
from ..design import Design
from ..results.model import ENGINE_LABELS, FitResult
from ..results.posterior import dpar_names, flat_draws, pair_label
from .diagnostics import convergence, fit_warnings, format_table
from .display import pre_html


def quantile_label(p: float) -> str:
    """brms's column name for a quantile: 0.025 -> 'Q2.5'."""
    return f"Q{100 * p:.10g}"


def describe(names: list[str], draws: np.ndarray, probs: tuple[float, ...] = (0.025, 0.975)) -> pd.DataFrame:
    """Estimate, Est.Error and quantiles of (chain, draw, K) draws."""
    probs = check.probabilities(probs)
    if draws.shape[-1] == 0:
        return pd.DataFrame(columns=["Estimate", "Est.Error", *map(quantile_label, probs)], dtype=float)
    flat = draws.reshape(-1, draws.shape[-1])
    table = {"Estimate": flat.mean(axis=0), "Est.Error": flat.std(axis=0, ddof=1) if flat.shape[0] > 1
             else np.full(flat.shape[1], np.nan)}
    for p, q in zip(probs, np.quantile(flat, probs, axis=0)):
        table[quantile_label(p)] = q
    return pd.DataFrame(table, index=pd.Index(names, name=None))


def posterior_summary(posterior: xr.Dataset, design: Design,
                      probs: tuple[float, ...] = (0.025, 0.975)) -> pd.DataFrame:
    """One row per brms parameter: Estimate, Est.Error and the quantiles."""
    names, draws = flat_draws(posterior, design)
    return describe(names, draws, probs)


def _stat_columns(prob: float) -> list[str]:
    pct = f"{100 * prob:.10g}"
    return ["Estimate", "Est.Error", f"l-{pct}% CI", f"u-{pct}% CI", "Rhat", "Bulk_ESS", "Tail_ESS"]


@dataclass(frozen=True)
class Summary:
    """What brms's ``summary()`` shows; ``str()`` prints brms's 2.21+ layout.

    Attributes
    ----------
    header : tuple of (str, str)
        The Family/Links/Formula/Data/Draws/Engine lines.
    group_blocks : tuple of (str, int, DataFrame)
        Per grouping factor: name, number of levels, sd and cor rows.
    fixed : DataFrame
        Regression coefficients.
    spec : DataFrame
        Further distributional parameters (empty for families without them).
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
        if not self.spec.empty:
            lines += ["", "Further Distributional Parameters:", _format(self.spec)]
        lines += ["", self.footer]
        lines += [f"Warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def _repr_pretty_(self, p: object, cycle: bool) -> None:  # IPython
        p.text(str(self))  # type: ignore[attr-defined]

    def _repr_html_(self) -> str:
        return pre_html(self)

    def to_frame(self) -> pd.DataFrame:
        """Every row of the summary in one DataFrame."""
        parts = [t for _, _, t in self.group_blocks] + [self.fixed, self.spec]
        return pd.concat([p for p in parts if not p.empty])


def _format(table: pd.DataFrame) -> str:
    if table.empty:
        return "(none)"
    return format_table(table, "{:.2f}").to_string()


def _stat_table(labels: list[str], draws: np.ndarray, prob: float) -> pd.DataFrame:
    lo, hi = (1 - prob) / 2, 1 - (1 - prob) / 2
    if not labels:
        return pd.DataFrame(columns=_stat_columns(prob), dtype=float)
    desc = describe(labels, draws, (lo, hi))
    conv = convergence(draws)
    conv.index = desc.index
    table = pd.concat([desc, conv], axis=1)
    table.columns = _stat_columns(prob)
    return table


def engine_label(fit: FitResult) -> str:
    """The engine that ran; for crossed factors on the collapsed engine, which were integrated out."""
    integrated, sampled = fit.info.get("integrated"), fit.info.get("sampled")
    if fit.engine == "collapsed" and isinstance(integrated, str) and isinstance(sampled, str):
        return f"collapsed ({integrated} integrated out, then drawn exactly; {sampled} sampled by NUTS)"
    rule = fit.info.get("quadrature_rule")
    if fit.engine == "collapsed" and isinstance(rule, str):
        how = "Gauss-Hermite quadrature" if "precomputed" in rule else "adaptive Gauss-Hermite quadrature"
        return f"collapsed (random effects integrated out by {how}, {rule}, then drawn from their exact conditional)"
    if "fallback" in fit.info:
        return f"{ENGINE_LABELS.get(fit.engine, fit.engine)}; {fit.info['fallback']}"
    return ENGINE_LABELS.get(fit.engine, fit.engine)


def header(fit: FitResult) -> tuple[tuple[str, str], ...]:
    """brms's header lines, with the engine that ran."""
    c, design = fit.config, fit.design
    add = design.spec.additions
    family = design.family
    lines = [("Family", family.name), ("Links", family.links_text(add.present, add.se_sigma)),
             ("Formula", fit.formula),
             ("Data", f"{fit.data_name} (Number of observations: {fit.nobs})"),
             ("Draws", f"{c.chains} chains, each with iter = {c.tune + c.draws}; warmup = {c.tune}; thin = 1;\n"
                       f"         total post-warmup draws = {c.chains * c.draws}"),
             ("Engine", engine_label(fit))]
    if "quadrature_check" in fit.info and fit.engine == "collapsed":
        lines.append(("Check", str(fit.info["quadrature_check"]).split("; ", 1)[-1]))
    levels = design.encoder.coding.levels
    if levels and family.ordinal and levels != tuple(str(k) for k in range(1, len(levels) + 1)):
        lines.insert(3, ("Categories", ", ".join(f"{k} = '{lab}'" for k, lab in enumerate(levels, start=1))))
    elif levels and family.factor_like and not family.ordinal:
        lines.insert(3, ("Success", f"'{levels[1]}' (coded 1; '{levels[0]}' coded 0)"))
    return tuple(lines)


def build_summary(fit: FitResult, prob: float = 0.95) -> Summary:
    """Compute the summary tables of a fit (no printing)."""
    prob = check.probability(prob, "prob")  # type: ignore[assignment]
    posterior, design = fit.posterior, fit.design
    groups = []
    for f in design.factors:
        labels = [f"sd({t})" for t in f.terms]
        arrays = [posterior[f"sd_{f.name}"].values]
        if f.cor_pairs:
            labels += [f"cor({f.terms[i]},{f.terms[j]})" for i, j in f.cor_pairs]
            arrays.append(posterior[f"cor_{f.name}"].values)
        groups.append((f.name, f.n_levels, _stat_table(labels, np.concatenate(arrays, axis=-1), prob)))
    fixed = _stat_table(list(design.b_names), posterior["b"].values, prob)
    names = list(dpar_names(design))
    spec = _stat_table(names, np.stack([posterior[n].values for n in names], axis=-1), prob) if names \
        else pd.DataFrame(columns=_stat_columns(prob))
    source = "drawn from the prior" if fit.prior_only else f"sampled using {fit.config.sampler} (NUTS)"
    footer = (f"Draws were {source}. For each parameter, Bulk_ESS\n"
              "and Tail_ESS are effective sample size measures, and Rhat is the potential\n"
              "scale reduction factor on split chains (at convergence, Rhat = 1).")
    return Summary(header(fit), tuple(groups), fixed, spec, fit_warnings(fit), footer)


def fixef(posterior: xr.Dataset, design: Design, probs: tuple[float, ...]) -> pd.DataFrame:
    """Population-level effects, one row per coefficient."""
    return describe(list(design.b_names), posterior["b"].values, probs)


def ranef(posterior: xr.Dataset, design: Design, probs: tuple[float, ...]) -> dict[str, pd.DataFrame]:
    """Per grouping factor, each level's deviations; rows indexed by (level, term)."""
    out = {}
    for f in design.factors:
        r = posterior[f"r_{f.name}"].values
        index = pd.MultiIndex.from_product([list(f.levels), list(f.terms)], names=[f.name, "term"])
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
        index = pd.MultiIndex.from_product([list(f.levels), names], names=[f.name, "coef"])
        table = describe([""] * len(index), total.reshape(n_chain, n_draw, -1), probs)
        table.index = index
        out[f.name] = table
    return out


def varcorr(posterior: xr.Dataset, design: Design, probs: tuple[float, ...]) -> dict[str, dict[str, pd.DataFrame]]:
    """Standard deviations and correlations per grouping factor, plus the residual SD where the family has one."""
    out: dict[str, dict[str, pd.DataFrame]] = {}
    for f in design.factors:
        entry = {"sd": describe(list(f.terms), posterior[f"sd_{f.name}"].values, probs)}
        if f.cor_pairs:
            labels = [pair_label(f.terms, i, j) for i, j in f.cor_pairs]
            entry["cor"] = describe(labels, posterior[f"cor_{f.name}"].values, probs)
        out[f.name] = entry
    if "sigma" in dpar_names(design):
        out["residual__"] = {"sd": describe(["sigma"], posterior["sigma"].values[..., None], probs)}
    return out
