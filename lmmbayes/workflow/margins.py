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
    contrasts within those levels.

Variable names given by users are only looked up among the design's known
variables (or newdata's columns, for ``by``): nothing is evaluated.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .. import _validate as check
from ..design.frame import as_frame
from ..design.predictors import Predictor, Predictors
from ..errors import DataError, FitError, LmmbayesError
from ..results.model import FitResult
from .display import pre_html
from .effects import column, defaults, lookup, predictors_of, valid_variables
from .predict import groups, posterior_epred, posterior_linpred

#: Most draws-times-rows predicted at once by the averages.
CHUNK_CELLS = 1 << 22
#: marginaleffects's default finite-difference step, as a fraction of the variable's range.
EPS_FRACTION = 1e-4
COMPARISONS = ("difference", "ratio")
TYPES = ("link", "response")


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


def _chunked_means(fit: FitResult, frame: pd.DataFrame, codes: np.ndarray, n_groups: int,
                   include_groups: Any) -> np.ndarray:
    """(draws, groups) per-draw means of posterior_epred over the rows of each group, in bounded chunks."""
    S = fit.n_draws
    step = max(1, CHUNK_CELLS // S)
    sums = np.zeros((S, n_groups))
    for start in range(0, len(frame), step):
        part = frame.iloc[start:start + step]
        pred = np.asarray(posterior_epred(fit, part, include_groups=include_groups))
        if pred.ndim != 2:
            raise LmmbayesError(f"Averages of a categorical response (family {fit.family.name!r}) are not "
                                "supported yet.")
        onehot = np.zeros((len(part), n_groups))
        onehot[np.arange(len(part)), codes[start:start + step]] = 1.0
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
                    include_groups: bool | str | Sequence[str] = True, prob: float = 0.95) -> pd.DataFrame:
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

    Returns
    -------
    pandas.DataFrame
        The ``by`` columns, ``estimate`` (posterior median), ``conf.low``, ``conf.high``.
    """
    level = _prob(prob)
    frame = _rows(fit, newdata, "avg_predictions")
    groups(fit, include_groups)
    names, codes, keys = _by(frame, by)
    means = _chunked_means(fit, frame, codes, len(keys), include_groups)
    return _table(keys[names], means, level)


def _contrast_draws(fit: FitResult, frame: pd.DataFrame, codes: np.ndarray, n: int, include_groups: Any,
                    p: Predictor, step: float, kind: str) -> list[tuple[str, np.ndarray]]:
    """(label, (draws, groups)) per contrast of one variable: levels vs the reference, or ``x + step`` vs ``x``."""
    if p.levels is not None:
        ref = p.levels.values[0]
        lo = _chunked_means(fit, _set(frame, p, ref), codes, n, include_groups)
        out = []
        for value, label in zip(p.levels.values[1:], p.levels.labels[1:]):
            hi = _chunked_means(fit, _set(frame, p, value), codes, n, include_groups)
            if kind == "ratio":
                out.append((f"mean({label}) / mean({p.levels.labels[0]})", hi / lo))
            else:
                out.append((f"{label} - {p.levels.labels[0]}", hi - lo))
        return out
    if p.name not in frame.columns:
        raise DataError(f"newdata lacks the column '{p.name}'.")
    x = pd.to_numeric(frame[p.name], errors="coerce").to_numpy(dtype=float)
    lo = _chunked_means(fit, frame, codes, n, include_groups)
    hi = _chunked_means(fit, _set(frame, p, x + step), codes, n, include_groups)
    if kind == "ratio":
        return [(f"mean(+{step:g})", hi / lo)]
    if kind == "slope":
        return [("dY/dX", (hi - lo) / step)]
    return [(f"+{step:g}", hi - lo)]


def _comparisons(fit: FitResult, variables: Any, by: Any, newdata: Any, include_groups: Any, prob: Any,
                 kind: str, eps: float | None, what: str) -> pd.DataFrame:
    level = _prob(prob)
    pr = predictors_of(fit, what)
    chosen = _variables(fit, pr, variables)
    groups(fit, include_groups)
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
        for label, draws in _contrast_draws(fit, frame, codes, len(keys), include_groups, p, step,
                                            "difference" if kind == "slope" and p.levels is not None else kind):
            head = keys[names].copy()
            head.insert(0, "contrast", label)
            head.insert(0, "term", p.name)
            parts.append(_table(head, draws, level))
    return pd.concat(parts, ignore_index=True)


def avg_comparisons(fit: FitResult, variables: str | Sequence[str], *, by: str | Sequence[str] | None = None,
                    newdata: Any = None, comparison: str = "difference",
                    include_groups: bool | str | Sequence[str] = True, prob: float = 0.95) -> pd.DataFrame:
    """marginaleffects's ``avg_comparisons``: average contrasts of the expected response, per draw.

    Parameters
    ----------
    fit : Fit
    variables : str or list of str
        Predictors to contrast. A categorical one: every level against the
        reference level (``"b - a"``). A numeric one: ``x + 1`` against the
        observed ``x`` (``"+1"``), marginaleffects's default forward contrast.
    by, newdata, include_groups, prob
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
    return _comparisons(fit, variables, by, newdata, include_groups, prob, kind, None, "avg_comparisons")


def avg_slopes(fit: FitResult, variables: str | Sequence[str], *, by: str | Sequence[str] | None = None,
               newdata: Any = None, eps: float | None = None, include_groups: bool | str | Sequence[str] = True,
               prob: float = 0.95) -> pd.DataFrame:
    """marginaleffects's ``avg_slopes``: average derivative of the expected response, per draw.

    Parameters
    ----------
    fit : Fit
    variables : str or list of str
        Numeric predictors get forward finite differences ``(f(x + eps) - f(x)) / eps``
        (contrast ``"dY/dX"``); categorical ones their contrasts against the reference level, as
        marginaleffects does.
    eps : float, optional
        The step; default ``1e-4`` times the variable's range in the fitted data (marginaleffects's default).
    by, newdata, include_groups, prob
        As `avg_predictions`.

    Returns
    -------
    pandas.DataFrame
        ``term``, ``contrast``, the ``by`` columns, ``estimate`` (median), ``conf.low``, ``conf.high``.
    """
    if eps is not None:
        eps = check.real(eps, "eps", positive=True)
    return _comparisons(fit, variables, by, newdata, include_groups, prob, "slope", eps, "avg_slopes")


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
        How `pairs` names its estimate and joins the labels: ``estimate`` and
        ``-`` (link scale), ``ratio`` or ``odds.ratio`` and ``/`` (response scale, log or logit link).
    by : tuple of str
        emmeans's ``by`` variables: the table has a column for each (after the
        ``specs`` columns) and contrasts are taken within each of their level
        combinations.
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
        labels = self.labels
        names: list[str] = []
        cols: list[np.ndarray] = []
        keys: list[tuple[Any, ...]] = []
        for key, rows in self._by_groups():
            for i, j in itertools.combinations(rows, 2):
                diff = self.draws[:, i] - self.draws[:, j]
                cols.append(np.exp(diff) if self.pair_operator == "/" else diff)
                names.append(f"{labels[i]} {self.pair_operator} {labels[j]}")
                keys.append(key)
        if not cols:
            where = f" within each level of {list(self.by)}" if self.by else ""
            raise LmmbayesError(f"pairs() needs at least two marginal means{where}; {list(self.specs)} has one level.")
        draws = np.column_stack(cols)
        lo, hi = hpd(draws, self.prob)
        out = pd.DataFrame({"contrast": names})
        for k, name in enumerate(self.by):
            out[name] = pd.Categorical([key[k] for key in keys], categories=self.table[name].cat.categories) \
                if isinstance(self.table[name].dtype, pd.CategoricalDtype) else [key[k] for key in keys]
        out[self.pair_column] = np.median(draws, axis=0)
        out["lower.HPD"], out["upper.HPD"] = lo, hi
        return out

    def contrast(self, method: str = "pairwise") -> pd.DataFrame:
        """emmeans's ``contrast(emm, method)``; only ``"pairwise"`` (the same as `pairs`) for now."""
        check.choice(method, "method", ("pairwise",))
        return self.pairs()

    def __str__(self) -> str:
        scale = "" if self.type == "link" or self.link == "identity" else \
            f"\nResults are back-transformed from the {self.link} scale"
        if self.by:  # emmeans prints one block per by level, headed "f2 = a:"
            shown = self.table.drop(columns=list(self.by))
            blocks = []
            for key, rows in self._by_groups():
                head = ", ".join(f"{n} = {v}" for n, v in zip(self.by, key))
                blocks.append(f"{head}:\n{shown.iloc[rows].to_string(index=False)}")
            body = "\n\n".join(blocks)
        else:
            body = self.table.to_string(index=False)
        return (f"{body}\n\nPoint estimate displayed: median\n"
                f"HPD interval probability: {self.prob:g}{scale}")

    def _repr_html_(self) -> str:
        return pre_html(self)


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
            type: str = "link", prob: float = 0.95, at: dict[str, Any] | None = None) -> Emmeans:
    """emmeans's estimated marginal means of a Bayesian fit.

    Parameters
    ----------
    fit : Fit
    specs : str or list of str
        The categorical predictor(s) whose levels (or level combinations) get a marginal mean.
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

    Returns
    -------
    Emmeans
        ``table`` as emmeans prints it; ``pairs()`` for the pairwise contrasts.

    Raises
    ------
    DataError
        ``specs`` or ``at`` naming something that is not a categorical predictor of the model.
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
    names = [specs] if isinstance(specs, str) else list(specs) if isinstance(specs, (list, tuple)) else None
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
    return Emmeans(table, means, tuple(spec_names), type_, level, link, column_name, operator,
                   tuple(p.name for p in by_chosen))
