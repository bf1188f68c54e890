"""Marginal summaries after the fit: marginaleffects's ``avg_*`` functions and emmeans's marginal means.

marginaleffects (for brms models)
    `avg_predictions`, `avg_comparisons` and `avg_slopes` average, per
    posterior draw, the expected response (``posterior_epred``, the response
    scale) over the rows of ``newdata`` (by default the fitted rows), within
    the groups of ``by``; the table reports the posterior median and
    equal-tailed interval, as marginaleffects does for Bayesian models.
    Group-level effects are included by default (brms's ``re_formula =
    NULL``). Comparisons set a categorical variable to each level against its
    reference level, and move a numeric one from its value ``x`` to ``x + 1``
    (marginaleffects's default forward contrast); ``comparison="ratio"``
    divides the averages (marginaleffects's ``ratioavg``). Slopes are forward
    finite differences with marginaleffects's default step, ``1e-4`` times the
    range of the variable in the fitted data. Rows are predicted in chunks, so
    no more than `CHUNK_CELLS` draws-times-rows are held at once.
    ``variables=None`` contrasts every population-level predictor. Grouping
    levels absent from the fitted data need ``allow_new_levels=True``; their
    effects are simulated by `posterior_epred`'s code, with one seed for every
    chunk and counterfactual frame. `plot_predictions`, `plot_comparisons`
    and `plot_slopes` draw these tables on a grid (``condition``) or by groups
    (``by``).

emmeans
    `emmeans` builds the reference grid (every combination of the levels of
    the model's categorical predictors, numeric ones at their mean or at the
    values given by ``at``), computes the population-level linear predictor
    of each grid row per draw, and averages it with equal weights over the
    variables not in ``specs``. ``type="response"`` applies the inverse link to
    each draw's average (emmeans's ``regrid``). Summaries are the posterior
    median and the HPD interval (arviz-stats's ``hdi``), as emmeans reports
    Bayesian fits; ``pairs()`` gives every pairwise contrast, as ratios (log
    link) or odds ratios (logit link) on the response scale. ``by`` gives the
    means of ``specs`` within each level of other factors, and ``pairs()``
    contrasts within those levels. ``contrast(method)`` gives emmeans's
    families (``pairwise``, ``revpairwise``, ``trt.vs.ctrl``, ``consec``,
    ``eff``) per draw, back-transformed as ``pairs()`` on the response scale;
    ``specs`` may be emmeans's formula (``"pairwise ~ f1 | f2"``), read by a
    closed grammar of names and ``~ | + * :``.

Variable names given by users are only looked up among the design's known
variables (or newdata's columns, for ``by``): nothing is evaluated.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .. import _validate as check
from ..design.frame import as_frame
from ..design.predictors import Predictor, Predictors
from ..errors import DataError, FitError, LmmbayesError
from ..results.model import FitResult
from .display import pre_html
from .effects import (_values, column, defaults, dodge, draw_line, draw_points, lookup, predictors_of,
                      valid_variables)
from .linpred import SAMPLE_NEW_LEVELS
from .predict import epred_chunks, groups, posterior_linpred

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Most draws-times-rows predicted at once by the averages.
CHUNK_CELLS = 1 << 22
#: marginaleffects's default finite-difference step, as a fraction of the variable's range.
EPS_FRACTION = 1e-4
#: Values along a numeric first ``condition`` variable of the plots.
PLOT_RESOLUTION = 50
COMPARISONS = ("difference", "ratio")
TYPES = ("link", "response")
#: emmeans's contrast families (``contrast(emm, method)``, or the left side of a formula ``specs``).
CONTRASTS = ("pairwise", "revpairwise", "trt.vs.ctrl", "consec", "eff")


# -- the rows and their groups ------------------------------------------------------------------


def _rows(fit: FitResult, newdata: Any, what: str) -> pd.DataFrame:
    """The rows to average over: newdata, or the fitted rows' raw prediction columns."""
    if newdata is not None:
        frame = as_frame(newdata, "newdata")
        if len(frame) == 0:
            raise DataError("newdata has no rows.")
        return frame
    rows = fit.design.predictor_rows
    if rows is None:
        why = "was fitted on a Dask DataFrame" if not fit.design.rows_in_memory else \
            "was loaded from a file written by an older lmmbayes"
        raise FitError(f"{what} with newdata=None averages over the fitted rows' raw values, which this fit does "
                       f"not keep (it {why}); pass newdata= a data frame with the model's columns (e.g. the data "
                       "it was fitted on, or a sample of it).")
    return rows


def _by(frame: pd.DataFrame, by: Any) -> tuple[list[str], np.ndarray, pd.DataFrame]:
    """The ``by`` columns, each row's group number and the groups' values (sorted)."""
    if by is None:
        return [], np.zeros(len(frame), dtype=np.int64), pd.DataFrame(index=[0])
    names = [by] if isinstance(by, str) else list(by) if isinstance(by, (list, tuple)) else None
    if not names or not all(isinstance(n, str) for n in names):
        raise DataError(f"by must be None, a column name or a list of column names, got {by!r}.")
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise DataError(f"by names column(s) {missing} absent from the rows averaged over; their columns are "
                        f"{list(map(str, frame.columns))}.")
    grouped = frame.groupby(names, sort=True, observed=True, dropna=False)
    codes = grouped.ngroup().to_numpy().astype(np.int64)
    keys = grouped.size().reset_index()[names]
    return names, codes, keys


@dataclass(frozen=True)
class _Predict:
    """How the averages predict: posterior_epred's options, with one seed shared by every counterfactual frame."""

    include_groups: Any
    allow_new_levels: bool
    sample_new_levels: str
    seed: int


def _predict_options(fit: FitResult, include_groups: Any, allow_new_levels: Any, sample_new_levels: Any,
                     seed: Any) -> _Predict:
    groups(fit, include_groups)
    allow = check.flag(allow_new_levels, "allow_new_levels")
    how = check.choice(sample_new_levels, "sample_new_levels", SAMPLE_NEW_LEVELS)
    # one seed for all frames: a new level gets the same simulated effects in "hi" and "lo" and in every chunk
    return _Predict(include_groups, allow, how, check.seed(seed, "seed"))


def _chunked_means(fit: FitResult, frame: pd.DataFrame, codes: np.ndarray, n_groups: int,
                   how: _Predict) -> np.ndarray:
    """(draws, groups) per-draw means of posterior_epred over the rows of each group, in bounded chunks."""
    S = fit.n_draws
    sums = np.zeros((S, n_groups))
    for part, pred in epred_chunks(fit, frame, max(1, CHUNK_CELLS // S), include_groups=how.include_groups,
                                   allow_new_levels=how.allow_new_levels,
                                   sample_new_levels=how.sample_new_levels, seed=how.seed):
        if pred.ndim != 2:
            raise LmmbayesError(f"Averages of a categorical response (family {fit.family.name!r}) are not "
                                "supported yet.")
        onehot = np.zeros((pred.shape[1], n_groups))
        onehot[np.arange(pred.shape[1]), codes[part]] = 1.0
        sums += pred @ onehot
    counts = np.bincount(codes, minlength=n_groups).astype(float)
    return sums / counts


def _eti(draws: np.ndarray, prob: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lo, hi = np.quantile(draws, [(1 - prob) / 2, (1 + prob) / 2], axis=0)
    return np.median(draws, axis=0), lo, hi


def _table(head: pd.DataFrame, draws: np.ndarray, prob: float) -> pd.DataFrame:
    est, lo, hi = _eti(draws, prob)
    out = head.reset_index(drop=True).copy()
    out["estimate"], out["conf.low"], out["conf.high"] = est, lo, hi
    return out


def _variables(fit: FitResult, pr: Predictors, variables: Any) -> list[Predictor]:
    if variables is None:  # marginaleffects's default: every population-level predictor
        found = pr.of_role("predictor")
        if not found:
            raise DataError(f"variables=None uses every population-level predictor, and the model {fit.formula!r} "
                            "has none.")
        return list(found)
    items = [variables] if isinstance(variables, str) else list(variables) \
        if isinstance(variables, (list, tuple)) else None
    if not items:
        raise DataError(f"variables must be a predictor name or a list of them, got {variables!r}; the model's "
                        f"predictors are {valid_variables(pr)}.")
    return [lookup(fit, pr, v, "variables") for v in dict.fromkeys(items)]


def _set(frame: pd.DataFrame, p: Predictor, value: Any) -> pd.DataFrame:
    """A copy of ``frame`` with ``p``'s column replaced (never the user's frame)."""
    out = frame.copy()
    out[p.name] = column([value] * len(frame), p) if p.levels is not None else value
    return out


def _prob(prob: Any) -> float:
    level = check.probability(prob, "prob")
    assert level is not None
    return level


# -- marginaleffects ----------------------------------------------------------------------------


def avg_predictions(fit: FitResult, *, by: str | Sequence[str] | None = None, newdata: Any = None,
                    include_groups: bool | str | Sequence[str] = True, prob: float = 0.95,
                    allow_new_levels: bool = False, sample_new_levels: str = "uncertainty",
                    seed: int | None = None) -> pd.DataFrame:
    """marginaleffects's ``avg_predictions``: the expected response averaged over rows, per draw.

    Parameters
    ----------
    fit : Fit
    by : str or list of str, optional
        Average within the groups of these columns' values (sorted); None: over all rows.
    newdata : pandas.DataFrame, optional
        The rows to average over (never modified); default the fitted rows.
    include_groups : bool, str or list of str
        Group-level effects to include (default all, marginaleffects's default for brms).
    prob : float
        Mass of the equal-tailed interval.
    allow_new_levels : bool
        Allow grouping levels absent from the fitted data (otherwise a
        DataError naming them); their effects are simulated per draw, as
        `posterior_epred` does.
    sample_new_levels : {"uncertainty", "gaussian"}
        How new levels get effects, as `posterior_epred` (brms's ``sample_new_levels``).
    seed : int, optional
        Seeds the simulation of new levels. One seed serves every row and
        every counterfactual copy of the rows, so a new level keeps its
        simulated effects across them; with the same seed the draws are those
        of ``posterior_epred(newdata, allow_new_levels=True, seed=seed)``.

    Returns
    -------
    pandas.DataFrame
        The ``by`` columns, ``estimate`` (posterior median), ``conf.low``, ``conf.high``.
    """
    level = _prob(prob)
    how = _predict_options(fit, include_groups, allow_new_levels, sample_new_levels, seed)
    frame = _rows(fit, newdata, "avg_predictions")
    names, codes, keys = _by(frame, by)
    means = _chunked_means(fit, frame, codes, len(keys), how)
    return _table(keys[names], means, level)


def _contrast_draws(fit: FitResult, frame: pd.DataFrame, codes: np.ndarray, n: int, how: _Predict,
                    p: Predictor, step: float, kind: str) -> list[tuple[str, np.ndarray]]:
    """(label, (draws, groups)) per contrast of one variable: levels vs the reference, or ``x + step`` vs ``x``."""
    if p.levels is not None:
        ref = p.levels.values[0]
        lo = _chunked_means(fit, _set(frame, p, ref), codes, n, how)
        out = []
        for value, label in zip(p.levels.values[1:], p.levels.labels[1:]):
            hi = _chunked_means(fit, _set(frame, p, value), codes, n, how)
            if kind == "ratio":
                out.append((f"mean({label}) / mean({p.levels.labels[0]})", hi / lo))
            else:
                out.append((f"{label} - {p.levels.labels[0]}", hi - lo))
        return out
    if p.name not in frame.columns:
        raise DataError(f"newdata lacks the column '{p.name}'.")
    x = pd.to_numeric(frame[p.name], errors="coerce").to_numpy(dtype=float)
    lo = _chunked_means(fit, frame, codes, n, how)
    hi = _chunked_means(fit, _set(frame, p, x + step), codes, n, how)
    if kind == "ratio":
        return [(f"mean(+{step:g})", hi / lo)]
    if kind == "slope":
        return [("dY/dX", (hi - lo) / step)]
    return [(f"+{step:g}", hi - lo)]


def _comparisons(fit: FitResult, variables: Any, by: Any, newdata: Any, how: _Predict, prob: Any,
                 kind: str, eps: float | None, what: str) -> pd.DataFrame:
    level = _prob(prob)
    pr = predictors_of(fit, what)
    chosen = _variables(fit, pr, variables)
    frame = _rows(fit, newdata, what)
    names, codes, keys = _by(frame, by)
    parts = []
    for p in chosen:
        if kind == "slope" and p.levels is None:
            step = eps if eps is not None else EPS_FRACTION * (p.max - p.min)
            if not step > 0:
                raise DataError(f"avg_slopes: '{p.name}' takes a single value in the fitted data, so its default "
                                "step (1e-4 times its range) is zero; pass eps= a positive step.")
        else:
            step = 1.0
        for label, draws in _contrast_draws(fit, frame, codes, len(keys), how, p, step,
                                            "difference" if kind == "slope" and p.levels is not None else kind):
            head = keys[names].copy()
            head.insert(0, "contrast", label)
            head.insert(0, "term", p.name)
            parts.append(_table(head, draws, level))
    return pd.concat(parts, ignore_index=True)


def avg_comparisons(fit: FitResult, variables: str | Sequence[str] | None = None, *,
                    by: str | Sequence[str] | None = None, newdata: Any = None, comparison: str = "difference",
                    include_groups: bool | str | Sequence[str] = True, prob: float = 0.95,
                    allow_new_levels: bool = False, sample_new_levels: str = "uncertainty",
                    seed: int | None = None) -> pd.DataFrame:
    """marginaleffects's ``avg_comparisons``: average contrasts of the expected response, per draw.

    Parameters
    ----------
    fit : Fit
    variables : str or list of str, optional
        Predictors to contrast. A categorical one: every level against the
        reference level (``"b - a"``). A numeric one: ``x + 1`` against the
        observed ``x`` (``"+1"``), marginaleffects's default forward contrast.
        None (marginaleffects's default): every population-level predictor,
        in the formula's order, one block of rows per term.
    by, newdata, include_groups, prob, allow_new_levels, sample_new_levels, seed
        As `avg_predictions`.
    comparison : {"difference", "ratio"}
        ``"difference"``: mean(hi) - mean(lo); ``"ratio"``: mean(hi) / mean(lo)
        (marginaleffects's ``ratioavg``, labelled ``"mean(b) / mean(a)"``), per draw.

    Returns
    -------
    pandas.DataFrame
        ``term``, ``contrast``, the ``by`` columns, ``estimate`` (median), ``conf.low``, ``conf.high``.
    """
    kind = check.choice(comparison, "comparison", COMPARISONS)
    how = _predict_options(fit, include_groups, allow_new_levels, sample_new_levels, seed)
    return _comparisons(fit, variables, by, newdata, how, prob, kind, None, "avg_comparisons")


def avg_slopes(fit: FitResult, variables: str | Sequence[str] | None = None, *,
               by: str | Sequence[str] | None = None, newdata: Any = None, eps: float | None = None,
               include_groups: bool | str | Sequence[str] = True, prob: float = 0.95,
               allow_new_levels: bool = False, sample_new_levels: str = "uncertainty",
               seed: int | None = None) -> pd.DataFrame:
    """marginaleffects's ``avg_slopes``: average derivative of the expected response, per draw.

    Parameters
    ----------
    fit : Fit
    variables : str or list of str, optional
        Numeric predictors get forward finite differences ``(f(x + eps) - f(x)) / eps``
        (contrast ``"dY/dX"``); categorical ones their contrasts against the reference level, as
        marginaleffects does. None (marginaleffects's default): every population-level predictor, in
        the formula's order, one block of rows per term.
    eps : float, optional
        The step; default ``1e-4`` times the variable's range in the fitted data (marginaleffects's default).
    by, newdata, include_groups, prob, allow_new_levels, sample_new_levels, seed
        As `avg_predictions`.

    Returns
    -------
    pandas.DataFrame
        ``term``, ``contrast``, the ``by`` columns, ``estimate`` (median), ``conf.low``, ``conf.high``.
    """
    if eps is not None:
        eps = check.real(eps, "eps", positive=True)
    how = _predict_options(fit, include_groups, allow_new_levels, sample_new_levels, seed)
    return _comparisons(fit, variables, by, newdata, how, prob, "slope", eps, "avg_slopes")


# -- marginaleffects's plots --------------------------------------------------------------------


def _plot_names(fit: FitResult, pr: Predictors, condition: Any, by: Any, newdata: Any,
                what: str) -> tuple[list[Predictor], list[str]]:
    """The ``condition`` predictors (x axis, colour) or the ``by`` columns; exactly one of them is given."""
    if (condition is None) == (by is None):
        raise DataError(f"{what} needs exactly one of condition= (predictions on a grid: one or two predictor "
                        f"names, among {valid_variables(pr)}) and by= (averages over the rows by groups: one or "
                        "two column names).")
    given = condition if condition is not None else by
    argument = "condition" if condition is not None else "by"
    names = [given] if isinstance(given, str) else list(given) if isinstance(given, (list, tuple)) else None
    if not names or len(names) > 2 or not all(isinstance(n, str) for n in names):
        raise DataError(f"{argument} must be a column name or a list of one or two (x axis, then colour), "
                        f"got {given!r}.")
    if condition is None:
        return [], list(dict.fromkeys(names))
    if newdata is not None:
        raise DataError(f"{what}: newdata= goes with by= (averages over its rows); condition= predicts on its "
                        "own grid of the model's predictors.")
    return [lookup(fit, pr, n, "condition") for n in dict.fromkeys(names)], []


def _mode(fit: FitResult, name: str) -> Any:
    rows = fit.design.predictor_rows
    if rows is None or name not in rows.columns:
        raise FitError(f"condition= sets the grouping column '{name}' to its most frequent level in the fitted "
                       "rows, which this fit does not keep; pass include_groups=False for population-level "
                       "predictions.")
    counts = rows[name].value_counts(sort=False)
    return counts.index[int(np.argmax(counts.to_numpy()))]  # the first of the most frequent, in data order


def condition_grid(fit: FitResult, pr: Predictors, chosen: Sequence[Predictor],
                   include_groups: Any) -> pd.DataFrame:
    """marginaleffects's grid for ``condition``: the first predictor over `PLOT_RESOLUTION` values (or its
    levels), the second at mean − SD, mean, mean + SD (or its levels), every other predictor at its mean or
    reference level, and included grouping columns at their most frequent level in the fitted rows."""
    values = [_values(p, k == 0, PLOT_RESOLUTION) for k, p in enumerate(chosen)]
    combos = list(itertools.product(*values))
    block: dict[str, list[Any]] = {p.name: [c[k] for c in combos] for k, p in enumerate(chosen)}
    for name, value in defaults(pr).items():
        block.setdefault(name, [value] * len(combos))
    for f in groups(fit, include_groups):
        for name in f.variables:
            block.setdefault(name, [_mode(fit, name)] * len(combos))
    return pd.DataFrame({c: column(v, pr.get(c)) for c, v in block.items()})


def _draw(table: pd.DataFrame, x: str, series: list[str], categories: list[Any] | None, xlabel: str,
          ylabel: str) -> Figure:
    """One Axes: per series (a combination of the ``series`` columns, by colour), a line with a ribbon
    against a numeric ``x`` (``categories`` None), or points with error bars at each category."""
    import matplotlib.pyplot as plt

    from .plots import _colours

    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    keys = list(table[series].drop_duplicates().itertuples(index=False, name=None)) if series else [()]
    colours = _colours(len(keys)) if series else [(0.12, 0.47, 0.71, 1.0)]
    for j, (key, colour) in enumerate(zip(keys, colours)):
        part = table[(table[series] == pd.Series(key, index=series)).all(axis=1)] if series else table
        y, lo, hi = (part[c].to_numpy(dtype=float) for c in ("estimate", "conf.low", "conf.high"))
        label = ", ".join(map(str, key)) if series else None
        if categories is None:
            draw_line(ax, part[x].to_numpy(dtype=float), y, lo, hi, colour, label)
        else:
            pos = np.asarray([categories.index(v) for v in part[x]], dtype=float) + dodge(j, len(keys))
            draw_points(ax, pos, y, lo, hi, colour, label)
    if categories is not None:
        ax.set_xticks(range(len(categories)), [str(c) for c in categories])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if series:
        ax.legend(title=", ".join(series), fontsize=8, title_fontsize=8)
    return fig


def _plot(fit: FitResult, table: pd.DataFrame, chosen: list[Predictor], by: list[str], extra: list[str],
          ylabel: str) -> Figure:
    """Draw a table of `avg_predictions`, `avg_comparisons` or `avg_slopes` against condition or by."""
    if chosen:
        x, rest = chosen[0].name, [p.name for p in chosen[1:]]
        categories = None if chosen[0].levels is None else list(chosen[0].levels.values)
    else:
        x, rest = by[0], by[1:]
        categories = sorted(table[x].unique().tolist())  # by groups are the data's sorted values
    # a factor's several contrasts are told apart by colour, as the second variable is
    series = [c for c in extra if table[c].nunique() > 1] + rest
    return _draw(table, x, series, categories, x, ylabel)


def _one_variable(fit: FitResult, pr: Predictors, variables: Any, what: str) -> str:
    if not isinstance(variables, str):
        raise DataError(f"{what}: variables must name one predictor (a string), got {variables!r}; the model's "
                        f"predictors are {valid_variables(pr)}.")
    return lookup(fit, pr, variables, "variables").name


def plot_predictions(fit: FitResult, condition: str | Sequence[str] | None = None,
                     by: str | Sequence[str] | None = None, *, newdata: Any = None,
                     include_groups: bool | str | Sequence[str] = True, prob: float = 0.95,
                     allow_new_levels: bool = False, sample_new_levels: str = "uncertainty",
                     seed: int | None = None) -> Figure:
    """marginaleffects's ``plot_predictions``: expected responses on a grid (``condition``) or averaged by groups.

    Parameters
    ----------
    fit : Fit
    condition : str or list of str, optional
        One or two predictors: conditional predictions on a grid
        (`condition_grid`), the first on the x axis (a line with its interval
        ribbon when numeric, points with error bars when categorical), the
        second by colour.
    by : str or list of str, optional
        One or two columns: `avg_predictions` with this ``by`` (averages over
        the rows of ``newdata``, default the fitted rows), the first on the x
        axis as points with error bars, the second by colour. Give exactly one
        of ``condition`` and ``by``.
    newdata, include_groups, prob, allow_new_levels, sample_new_levels, seed
        As `avg_predictions` (``newdata`` with ``by`` only).

    Returns
    -------
    matplotlib.figure.Figure
        One Axes; its series' y data are the table's ``estimate`` column.
    """
    pr = predictors_of(fit, "plot_predictions")
    chosen, by_names = _plot_names(fit, pr, condition, by, newdata, "plot_predictions")
    rows = condition_grid(fit, pr, chosen, include_groups) if chosen else newdata
    table = avg_predictions(fit, by=[p.name for p in chosen] or by_names, newdata=rows,
                            include_groups=include_groups, prob=prob, allow_new_levels=allow_new_levels,
                            sample_new_levels=sample_new_levels, seed=seed)
    return _plot(fit, table, chosen, by_names, [], fit.design.spec.response_name)


def plot_comparisons(fit: FitResult, variables: str, *, condition: str | Sequence[str] | None = None,
                     by: str | Sequence[str] | None = None, newdata: Any = None, comparison: str = "difference",
                     include_groups: bool | str | Sequence[str] = True, prob: float = 0.95,
                     allow_new_levels: bool = False, sample_new_levels: str = "uncertainty",
                     seed: int | None = None) -> Figure:
    """marginaleffects's ``plot_comparisons``: `avg_comparisons` of one variable on a grid or by groups.

    Parameters
    ----------
    fit : Fit
    variables : str
        The one predictor to contrast, as `avg_comparisons` (a factor's several
        contrasts against its reference level are told apart by colour).
    condition, by
        As `plot_predictions`: contrasts at each point of the grid, or averaged over the rows by groups.
    newdata, comparison, include_groups, prob, allow_new_levels, sample_new_levels, seed
        As `avg_comparisons` (``newdata`` with ``by`` only).

    Returns
    -------
    matplotlib.figure.Figure
    """
    pr = predictors_of(fit, "plot_comparisons")
    name = _one_variable(fit, pr, variables, "plot_comparisons")
    chosen, by_names = _plot_names(fit, pr, condition, by, newdata, "plot_comparisons")
    rows = condition_grid(fit, pr, chosen, include_groups) if chosen else newdata
    table = avg_comparisons(fit, name, by=[p.name for p in chosen] or by_names, newdata=rows,
                            comparison=comparison, include_groups=include_groups, prob=prob,
                            allow_new_levels=allow_new_levels, sample_new_levels=sample_new_levels, seed=seed)
    contrasts = list(dict.fromkeys(table["contrast"]))
    # one contrast names itself on the axis; several are in the legend
    ylabel = f"{name}: {contrasts[0]}" if len(contrasts) == 1 else f"Comparison of {name} ({comparison})"
    return _plot(fit, table, chosen, by_names, ["contrast"], ylabel)


def plot_slopes(fit: FitResult, variables: str, *, condition: str | Sequence[str] | None = None,
                by: str | Sequence[str] | None = None, newdata: Any = None, eps: float | None = None,
                include_groups: bool | str | Sequence[str] = True, prob: float = 0.95,
                allow_new_levels: bool = False, sample_new_levels: str = "uncertainty",
                seed: int | None = None) -> Figure:
    """marginaleffects's ``plot_slopes``: `avg_slopes` of one variable on a grid or by groups.

    Parameters
    ----------
    fit : Fit
    variables : str
        The one predictor whose slope (numeric) or level contrasts (categorical) are drawn, as `avg_slopes`.
    condition, by
        As `plot_predictions`: slopes at each point of the grid, or averaged over the rows by groups.
    newdata, eps, include_groups, prob, allow_new_levels, sample_new_levels, seed
        As `avg_slopes` (``newdata`` with ``by`` only).

    Returns
    -------
    matplotlib.figure.Figure
    """
    pr = predictors_of(fit, "plot_slopes")
    name = _one_variable(fit, pr, variables, "plot_slopes")
    chosen, by_names = _plot_names(fit, pr, condition, by, newdata, "plot_slopes")
    rows = condition_grid(fit, pr, chosen, include_groups) if chosen else newdata
    table = avg_slopes(fit, name, by=[p.name for p in chosen] or by_names, newdata=rows, eps=eps,
                       include_groups=include_groups, prob=prob, allow_new_levels=allow_new_levels,
                       sample_new_levels=sample_new_levels, seed=seed)
    return _plot(fit, table, chosen, by_names, ["contrast"], f"Slope of {name}")


# -- emmeans ------------------------------------------------------------------------------------


def hpd(draws: np.ndarray, prob: float) -> tuple[np.ndarray, np.ndarray]:
    """Per column of (draws, k): the highest posterior density interval (arviz-stats's ``hdi``)."""
    from arviz_stats import hdi

    bounds = np.asarray([np.asarray(hdi(draws[:, k], prob=prob), dtype=float) for k in range(draws.shape[1])])
    return bounds[:, 0], bounds[:, 1]


def _pair_name(fit: FitResult, type_: str) -> tuple[str, str]:
    """(column name, operator) of pairwise contrasts on the chosen scale, as emmeans names them."""
    link = fit.family.link
    if type_ == "response" and link == "log":
        return "ratio", "/"
    if type_ == "response" and link == "logit":
        return "odds.ratio", "/"
    return "estimate", "-"


@dataclass(frozen=True, eq=False)
class Emmeans:
    """emmeans's ``emmGrid`` summary for a Bayesian fit.

    Attributes
    ----------
    table : pandas.DataFrame
        The ``specs`` columns, the estimate (``emmean`` on the link scale; the
        family's response-scale name, e.g. ``rate`` or ``prob``, with
        ``type="response"``), ``lower.HPD``, ``upper.HPD``.
    draws : numpy.ndarray
        (draws, rows of ``table``) draws of the marginal means on the link scale.
    specs : tuple of str
    type : str
    prob : float
    link : str
    pair_column, pair_operator : str
        How `contrast` and `pairs` name their estimate and joins the labels: ``estimate`` and
        ``-`` (link scale), ``ratio`` or ``odds.ratio`` and ``/`` (response scale, log or logit link).
    by : tuple of str
        emmeans's ``by`` variables: the table has a column for each (after the
        ``specs`` columns) and contrasts are taken within each of their level
        combinations.
    method : str or None
        The contrast family asked for with ``contrast=`` or the left side of a
        formula ``specs`` (``"pairwise ~ f"``); `contrasts` gives its table.
    ref : str or None
        The reference level of ``"trt.vs.ctrl"`` contrasts (None: the first).
    """

    table: pd.DataFrame
    draws: np.ndarray
    specs: tuple[str, ...]
    type: str
    prob: float
    link: str
    pair_column: str
    pair_operator: str
    by: tuple[str, ...] = ()
    method: str | None = None
    ref: str | None = None

    @property
    def labels(self) -> list[str]:
        """Each row's label, its ``specs`` levels joined by spaces (emmeans's contrast labels)."""
        return [" ".join(str(v) for v in row) for row in self.table[list(self.specs)].itertuples(index=False)]

    def _by_groups(self) -> list[tuple[tuple[Any, ...], np.ndarray]]:
        """(the ``by`` levels, the table's rows at them) per ``by`` combination, in the table's order."""
        if not self.by:
            return [((), np.arange(len(self.table)))]
        keys = list(self.table[list(self.by)].itertuples(index=False, name=None))
        return [(key, np.flatnonzero([k == key for k in keys])) for key in dict.fromkeys(keys)]

    def pairs(self) -> pd.DataFrame:
        """Every pairwise contrast ``a - b`` in emmeans's order (first against the later ones).

        On the link scale; with ``type="response"``, ratios ``a / b`` for a log
        link (column ``ratio``) and odds ratios for a logit link
        (``odds.ratio``), as emmeans back-transforms contrasts. With ``by``,
        the contrasts are taken within each ``by`` level (as emmeans's
        ``pairs()`` of a grid with ``by`` groups).

        Returns
        -------
        pandas.DataFrame
            ``contrast``, the ``by`` columns, the estimate column (posterior
            median), ``lower.HPD``, ``upper.HPD``.
        """
        return self.contrast("pairwise")

    def contrast(self, method: str = "pairwise", *, ref: str | None = None) -> pd.DataFrame:
        """emmeans's ``contrast(emm, method)``: contrasts of the marginal means, per draw.

        Parameters
        ----------
        method : {"pairwise", "revpairwise", "trt.vs.ctrl", "consec", "eff"}
            As emmeans names and orders them, for levels ``a, b, c``:
            ``"pairwise"``: ``a - b, a - c, b - c``; ``"revpairwise"``:
            ``b - a, c - a, c - b``; ``"trt.vs.ctrl"``: every level against
            the reference, ``b - a, c - a``; ``"consec"``: each level minus the
            previous one, ``b - a, c - b``; ``"eff"``: each level minus the
            average of all the levels, ``a effect, b effect, c effect``.
        ref : str, optional
            ``"trt.vs.ctrl"`` only: the label of the reference level (as in
            `labels`, e.g. ``"b"``, or ``"b C"`` for two ``specs``); default the first.

        Returns
        -------
        pandas.DataFrame
            ``contrast``, the ``by`` columns, the estimate column (posterior
            median), ``lower.HPD``, ``upper.HPD``. On the link scale the
            estimate is ``estimate``; with ``type="response"`` and a log link
            every contrast is back-transformed with ``exp`` to a ratio (column
            ``ratio``, labels ``b / a``), with a logit link to an odds ratio
            (``odds.ratio``), as emmeans does for contrasts whose coefficients
            sum to zero (all of these; ``"eff"`` keeps its ``a effect`` labels).
            Contrasts are taken within each ``by`` level.

        Raises
        ------
        LmmbayesError
            An unknown ``method``; ``ref`` that is not a level label, or given with another method;
            fewer than two means (within a ``by`` level).
        """
        method = check.choice(method, "contrast method", CONTRASTS, error=DataError)
        labels = self.labels
        if ref is not None:
            if method != "trt.vs.ctrl":
                raise DataError(f"ref= chooses the reference level of 'trt.vs.ctrl' contrasts; method {method!r} "
                                "takes no ref.")
            valid = list(dict.fromkeys(labels))
            if not isinstance(ref, str) or ref not in valid:
                raise DataError(f"ref must be the label of one of the means, one of {valid}; got {ref!r}.")
        names: list[str] = []
        cols: list[np.ndarray] = []
        keys: list[tuple[Any, ...]] = []
        op = self.pair_operator
        for key, rows in self._by_groups():
            if len(rows) < 2:
                where = f" within each level of {list(self.by)}" if self.by else ""
                raise LmmbayesError(f"contrast({method!r}) needs at least two marginal means{where}; "
                                    f"{list(self.specs)} has one level.")
            for label, plus, minus in _contrast_terms(method, [labels[r] for r in rows], ref, op):
                # minus None: the average of all the means in the group (emmeans's "eff")
                base = self.draws[:, rows].mean(axis=1) if minus is None else self.draws[:, rows[minus]]
                diff = self.draws[:, rows[plus]] - base
                cols.append(np.exp(diff) if op == "/" else diff)
                names.append(label)
                keys.append(key)
        draws = np.column_stack(cols)
        lo, hi = hpd(draws, self.prob)
        out = pd.DataFrame({"contrast": names})
        for k, name in enumerate(self.by):
            out[name] = pd.Categorical([key[k] for key in keys], categories=self.table[name].cat.categories) \
                if isinstance(self.table[name].dtype, pd.CategoricalDtype) else [key[k] for key in keys]
        out[self.pair_column] = np.median(draws, axis=0)
        out["lower.HPD"], out["upper.HPD"] = lo, hi
        return out

    @property
    def contrasts(self) -> pd.DataFrame | None:
        """The contrasts asked for with ``contrast=`` (or a formula's left side), or None.

        emmeans's ``$contrasts`` of ``emmeans(fit, pairwise ~ f)``; the same table as
        ``contrast(method, ref=ref)``.
        """
        return None if self.method is None else self.contrast(self.method, ref=self.ref)

    def __str__(self) -> str:
        scale = "" if self.type == "link" or self.link == "identity" else \
            f"\nResults are back-transformed from the {self.link} scale"
        means = self._blocks(self.table)
        foot = f"\n\nPoint estimate displayed: median\nHPD interval probability: {self.prob:g}"
        if self.method is None:
            return f"{means}{foot}{scale}"
        # emmeans prints emmeans(fit, pairwise ~ f) as an emm_list: $emmeans, then $contrasts
        contrasts = self.contrasts
        assert contrasts is not None
        ratio = "" if self.pair_operator == "-" else \
            f"\nResults are back-transformed from the {self.link} scale (contrasts: {self.pair_column}s)"
        return f"$emmeans\n{means}{foot}{scale}\n\n$contrasts\n{self._blocks(contrasts)}{foot}{ratio}"

    def _blocks(self, table: pd.DataFrame) -> str:
        """``table`` as emmeans prints it: one block per ``by`` level, headed ``f2 = a:``."""
        if not self.by:
            return table.to_string(index=False)
        shown = table.drop(columns=list(self.by))
        keys = list(table[list(self.by)].itertuples(index=False, name=None))
        blocks = []
        for key in dict.fromkeys(keys):
            rows = np.flatnonzero([k == key for k in keys])
            head = ", ".join(f"{n} = {v}" for n, v in zip(self.by, key))
            blocks.append(f"{head}:\n{shown.iloc[rows].to_string(index=False)}")
        return "\n\n".join(blocks)

    def _repr_html_(self) -> str:
        return pre_html(self)

    def plot(self) -> Figure:
        """emmeans's ``plot(emm)``: each marginal mean as a point with its HPD interval, one row per level.

        The estimates are on the table's scale (``type``); with ``by``, one panel per ``by`` level.

        Returns
        -------
        matplotlib.figure.Figure
        """
        import matplotlib.pyplot as plt

        groups = self._by_groups()
        estimate = self.table.columns[len(self.specs) + len(self.by)]
        fig, axes = plt.subplots(len(groups), 1, figsize=(6, 0.5 + 0.45 * len(self.table) + 0.6 * len(groups)),
                                 squeeze=False, sharex=True, layout="constrained")
        labels = self.labels
        for ax, (key, rows) in zip(axes[:, 0], groups):
            sub = self.table.iloc[rows]
            est, lo, hi = (sub[c].to_numpy(dtype=float) for c in (estimate, "lower.HPD", "upper.HPD"))
            pos = np.arange(len(rows))
            ax.errorbar(est, pos, xerr=np.vstack([est - lo, hi - est]), fmt="o", capsize=4)
            ax.set_yticks(pos, [labels[i] for i in rows])
            if key:
                ax.set_title(", ".join(f"{n} = {v}" for n, v in zip(self.by, key)))
        axes[-1, 0].set_xlabel(f"{estimate} ({self.prob:.0%} HPD)")
        return fig


def _contrast_terms(method: str, labels: list[str], ref: str | None,
                    op: str) -> list[tuple[str, int, int | None]]:
    """(label, index added, index subtracted or None for the mean of all) of each contrast, emmeans's order."""
    k = len(labels)
    if method == "pairwise":
        return [(f"{labels[i]} {op} {labels[j]}", i, j) for i, j in itertools.combinations(range(k), 2)]
    if method == "revpairwise":
        return [(f"{labels[i]} {op} {labels[j]}", i, j) for i in range(1, k) for j in range(i)]
    if method == "trt.vs.ctrl":
        r = 0 if ref is None else labels.index(ref)
        return [(f"{labels[i]} {op} {labels[r]}", i, r) for i in range(k) if i != r]
    if method == "consec":
        return [(f"{labels[i]} {op} {labels[i - 1]}", i, i - 1) for i in range(1, k)]
    return [(f"{labels[i]} effect", i, None) for i in range(k)]  # "eff"


#: The tokens of a formula ``specs``: R names (dots allowed), ``~``, ``|`` and the separators ``+ * :``.
_SPEC_TOKEN = re.compile(r"\s*(?:(?P<name>[A-Za-z_.][A-Za-z0-9_.]*)|(?P<op>[~|+*:]))")
_SPEC_FORMS = ("'f1', '~ f1', '~ f1 + f2' (or * or :), '~ f1 | f2', 'pairwise ~ f1', 'pairwise ~ f1 | f2' with "
               f"one of {list(CONTRASTS)} on the left")


def parse_specs(text: str) -> tuple[str | None, list[str], list[str]]:
    """emmeans's formula ``specs``: ``[method] ~ f1 [+ f2 ...] [| g1 [+ g2 ...]]`` (never evaluated).

    As emmeans reads the formula's variables (``all.vars``), ``+``, ``*`` and
    ``:`` all just list names. Returns (contrast method or None, specs, by).

    Raises
    ------
    DataError
        Naming the spec and the valid forms.
    """
    def bad(why: str) -> DataError:
        return DataError(f"specs {text!r}: {why}. Valid forms: {_SPEC_FORMS}.")

    tokens: list[tuple[str, str]] = []
    pos, stripped = 0, text.rstrip()
    while pos < len(stripped):
        m = _SPEC_TOKEN.match(stripped, pos)
        if m is None:
            raise bad(f"{stripped[pos:].lstrip()[:1]!r} at position {pos} is not allowed")
        kind = m.lastgroup
        assert kind is not None
        tokens.append((kind, m.group(kind)))
        pos = m.end()
    tildes = [i for i, t in enumerate(tokens) if t == ("op", "~")]
    if len(tildes) != 1:
        raise bad(f"a formula has exactly one '~', this has {len(tildes)}")
    left, right = tokens[:tildes[0]], tokens[tildes[0] + 1:]
    method = None
    if left:
        if len(left) != 1 or left[0][0] != "name" or left[0][1] not in CONTRASTS:
            raise bad(f"the left side must be one of {list(CONTRASTS)} or nothing")
        method = left[0][1]
    bars = [i for i, t in enumerate(right) if t == ("op", "|")]
    if len(bars) > 1:
        raise bad("it has more than one '|'")
    parts = [right] if not bars else [right[:bars[0]], right[bars[0] + 1:]]
    lists: list[list[str]] = []
    for part in parts:  # name (sep name)*
        if not part or len(part) % 2 == 0 or any(
                (t[0] != "name") if i % 2 == 0 else (t[1] not in "+*:") for i, t in enumerate(part)):
            raise bad("each side of '|' must be predictor names joined by + * or :")
        lists.append([t[1] for t in part[::2]])
    return method, lists[0], lists[1] if len(lists) > 1 else []


def _grid_values(pr: Predictors, at: dict[str, Any]) -> dict[str, list[Any]]:
    """Each summarised column's values on the reference grid: levels, the mean, or ``at``'s values."""
    out: dict[str, list[Any]] = {}
    base = defaults(pr)
    for p in pr.items:
        if p.name in at:
            given = at[p.name]
            values = list(given) if isinstance(given, (list, tuple, np.ndarray, pd.Series)) else [given]
            if not values:
                raise DataError(f"at['{p.name}'] holds no value.")
            if p.levels is not None:
                unknown = [v for v in values if v not in p.levels.values]
                if unknown:
                    raise DataError(f"at['{p.name}'] has level(s) {unknown} the model does not have; its levels "
                                    f"are {list(p.levels.values)}.")
            else:
                values = [check.real(v, f"at['{p.name}']") for v in values]
            out[p.name] = values
        elif p.levels is not None and p.role == "predictor":
            out[p.name] = list(p.levels.values)
        else:
            out[p.name] = [base[p.name]]
    return out


def emmeans(fit: FitResult, specs: str | Sequence[str], *, by: str | Sequence[str] | None = None,
            type: str = "link", prob: float = 0.95, at: dict[str, Any] | None = None,
            contrast: str | None = None, ref: str | None = None) -> Emmeans:
    """emmeans's estimated marginal means of a Bayesian fit.

    Parameters
    ----------
    fit : Fit
    specs : str or list of str
        The categorical predictor(s) whose levels (or level combinations) get a
        marginal mean; or emmeans's formula, a string holding ``~``:
        ``"~ f1"``, ``"~ f1 + f2"`` (``*`` and ``:`` the same: emmeans reads
        only the names), ``"~ f1 | f2"`` (the same as ``by="f2"``) and, with a
        contrast family on the left, ``"pairwise ~ f1"`` (the same as
        ``contrast="pairwise"``). The formula is parsed by a closed grammar of
        names and these symbols, never evaluated.
    by : str or list of str, optional
        emmeans's ``by``: categorical predictor(s) within each of whose levels
        the means of ``specs`` are given (``emmeans(fit, ~ f1 | f2)``). The
        table gets a column for each, ``pairs()`` contrasts within their levels.
    type : {"link", "response"}
        ``"link"``: means of the linear predictor (column ``emmean``);
        ``"response"``: each draw's mean back-transformed by the inverse link
        (column named as emmeans does: ``rate``, ``prob``, ``response``...).
    prob : float
        Mass of the HPD intervals.
    at : dict, optional
        Values of grid variables: a numeric predictor's value(s) instead of its
        mean, or a subset of a categorical predictor's levels.
    contrast : {"pairwise", "revpairwise", "trt.vs.ctrl", "consec", "eff"}, optional
        emmeans's ``emmeans(fit, specs, contr = ...)``: the result then carries
        the contrasts too, as emmeans's list of ``$emmeans`` and ``$contrasts``:
        ``.table`` the means, ``.contrasts`` the contrast table (that of
        ``Emmeans.contrast(contrast, ref=ref)``), and it prints both.
    ref : str, optional
        The reference level's label for ``contrast="trt.vs.ctrl"`` (default the first level).

    Returns
    -------
    Emmeans
        ``table`` as emmeans prints it; ``contrasts`` the contrasts asked for
        (None if none were); ``pairs()`` and ``contrast(method)`` for any family.

    Raises
    ------
    DataError
        ``specs`` or ``at`` naming something that is not a categorical predictor of the model; a formula
        ``specs`` outside the grammar (the message lists the valid forms); ``by`` given both in the formula
        and as an argument; two different contrast families (``contrast=`` and a formula's left side);
        ``ref`` without ``"trt.vs.ctrl"`` or naming no level.
    """
    pr = predictors_of(fit, "emmeans")
    type_ = check.choice(type, "type", TYPES)
    level = _prob(prob)
    if at is None:
        at = {}
    if not isinstance(at, dict):
        raise DataError(f"at must be a dict of predictor names to values, got {at!r}.")
    for name in at:
        lookup(fit, pr, name, "at")
    if contrast is not None:
        contrast = check.choice(contrast, "contrast", CONTRASTS, error=DataError)
    names: list[Any] | None
    if isinstance(specs, str) and any(c in specs for c in "~|"):
        method, names, formula_by = parse_specs(specs)
        if formula_by:
            if by is not None:
                raise DataError(f"specs {specs!r} gives by variables after '|' and by={by!r} gives them too; "
                                "give them one way.")
            by = formula_by
        if method is not None:
            if contrast is not None and contrast != method:
                raise DataError(f"specs {specs!r} asks for {method!r} contrasts and contrast={contrast!r} for "
                                "others; give one.")
            contrast = method
    else:
        names = [specs] if isinstance(specs, str) else list(specs) if isinstance(specs, (list, tuple)) else None
    if ref is not None and contrast != "trt.vs.ctrl":
        raise DataError(f"ref= chooses the reference level of contrast='trt.vs.ctrl'; with contrast={contrast!r} "
                        "it has no use.")
    if not names:
        raise DataError(f"specs must be a predictor name or a list of them, got {specs!r}; the model's "
                        f"categorical predictors are {[p.name for p in pr.of_role('predictor') if p.levels]}.")
    chosen = [lookup(fit, pr, n, "specs") for n in dict.fromkeys(names)]
    by_names = [] if by is None else [by] if isinstance(by, str) else list(by) if isinstance(by, (list, tuple)) \
        else None
    if by_names is None or not all(isinstance(n, str) for n in by_names):
        raise DataError(f"by must be None, a predictor name or a list of them, got {by!r}.")
    by_chosen = [lookup(fit, pr, n, "by") for n in dict.fromkeys(by_names)]
    overlap = [p.name for p in by_chosen if p.name in {q.name for q in chosen}]
    if overlap:
        raise DataError(f"by names {overlap}, which specs names too; a variable is either given means or grouped by.")
    for p, what in [(p, "specs") for p in chosen] + [(p, "by") for p in by_chosen]:
        if p.levels is None and not (p.name in at and len(np.atleast_1d(at[p.name])) > 1):
            raise DataError(f"{what}: '{p.name}' is numeric; emmeans gives marginal means of categorical predictors "
                            "(or of numeric ones given several values in at=). For its slope use avg_slopes.")
    values = _grid_values(pr, at)
    grid = pd.DataFrame(list(itertools.product(*values.values())), columns=list(values))
    grid = pd.DataFrame({c: column(grid[c].tolist(), pr.get(c)) for c in grid.columns})
    eta = np.asarray(posterior_linpred(fit, grid, include_groups=False))
    spec_names = [p.name for p in chosen]
    cells = spec_names + [p.name for p in by_chosen]
    # emmeans's order: the first of the specs varies fastest, the by variables slowest
    order = [tuple(reversed(t)) for t in itertools.product(*(values[n] for n in reversed(cells)))]
    keys = list(zip(*(grid[n].tolist() for n in cells)))
    means = np.column_stack([eta[:, np.asarray([k == combo for k in keys])].mean(axis=1) for combo in order])
    link = fit.family.link
    shown = fit.family.link_function.inverse(means) if type_ == "response" else means
    lo, hi = hpd(shown, level)
    name = "emmean" if type_ == "link" or link == "identity" else fit.family.mean_name
    table = pd.DataFrame(order, columns=cells)
    for p in chosen + by_chosen:
        if p.levels is not None:
            table[p.name] = pd.Categorical(table[p.name], categories=list(p.levels.values))
    table[name] = np.median(shown, axis=0)
    table["lower.HPD"], table["upper.HPD"] = lo, hi
    column_name, operator = _pair_name(fit, type_)
    out = Emmeans(table, means, tuple(spec_names), type_, level, link, column_name, operator,
                  tuple(p.name for p in by_chosen), contrast, ref)
    if contrast is not None:
        out.contrast(contrast, ref=ref)  # a bad ref or too few levels fail here, not when printed
    return out
