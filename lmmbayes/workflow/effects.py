"""brms's ``conditional_effects``: predictions along one predictor (or two), the others held fixed.

For each effect (a raw predictor, or a two-way interaction ``a:b``), a grid
of predictor values is built from what the design remembers about the raw
predictors (`lmmbayes.design.predictors`): a numeric effect runs over
``resolution`` evenly spaced values from its minimum to its maximum, a
categorical one over its levels; the second variable of an interaction takes
its mean and mean ± SD when numeric (brms's default ``int_conditions``), each
level when categorical. Every other predictor is held at its mean (numeric) or
reference level (categorical), or at the values of a row of ``conditions``
(one facet per row). ``trials()`` columns are set to 1, as brms does.
Group-level effects are left out unless ``include_groups`` asks for them
(brms's ``re_formula = NA``); a grouping column that ``conditions`` does not
give is then a new level, whose effects are simulated per draw (brms leaves it
NA, a new level under ``allow_new_levels = TRUE``).

The draws of the grid's predictions are summarised as brms does with
``robust = TRUE``: ``estimate__`` the median, ``se__`` the MAD (R's ``mad``),
``lower__``/``upper__`` the equal-tailed quantiles at ``prob``. Effect names,
``conditions`` columns and level values are only ever looked up among the
design's known variables: nothing is evaluated.
"""

from __future__ import annotations

import html
import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .. import _validate as check
from ..design.frame import as_frame
from ..design.predictors import Predictor, Predictors
from ..errors import DataError, FitError, LmmbayesError, LmmbayesWarning, warn
from ..results.model import FitResult
from .display import table_html
from .predict import groups, posterior_epred, posterior_linpred, posterior_predict

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: The prediction functions conditional_effects can summarise (brms's ``method``).
METHODS = ("posterior_epred", "posterior_linpred", "posterior_predict")
#: R's ``mad()`` constant: the MAD of a normal sample estimates its SD.
MAD_CONSTANT = 1.4826
SUMMARY_COLUMNS = ("estimate__", "se__", "lower__", "upper__")
#: Rows of a table a notebook shows (its first and last half); a numeric effect has `resolution` rows.
HTML_ROWS = 20


def predictors_of(fit: FitResult, what: str) -> Predictors:
    """The design's predictor summaries; FitError for a fit file written before they were stored."""
    pr = fit.design.predictors
    if pr is None:
        raise FitError(f"{what} needs the summaries of the raw predictors (means, ranges, levels), which this fit "
                       "does not hold: it was loaded from a file written by an older lmmbayes. Refit the model.")
    return pr


def valid_variables(pr: Predictors) -> list[str]:
    return [p.name for p in pr.of_role("predictor")]


def lookup(fit: FitResult, pr: Predictors, name: Any, argument: str) -> Predictor:
    """The predictor called ``name`` (a plain lookup); DataError naming ``argument`` and the valid names otherwise."""
    valid = valid_variables(pr)
    if not isinstance(name, str):
        raise DataError(f"{argument} must name predictor columns as strings, got {name!r}; the model's predictors "
                        f"are {valid}.")
    p = pr.get(name)
    if p is not None and p.role == "predictor":
        return p
    grouping = {v for f in fit.design.factors for v in f.variables}
    if name in grouping:
        raise DataError(f"{argument}: '{name}' is a grouping factor's column, not a population-level predictor; "
                        f"choose among {valid} (include_groups and conditions set the grouping levels).")
    raise DataError(f"{argument}: the model has no predictor '{name}'; its predictors are {valid}.")


# -- the effects ----------------------------------------------------------------------------


def _numeric_first(effect: tuple[Predictor, ...]) -> tuple[Predictor, ...]:
    return tuple(sorted(effect, key=lambda p: not p.numeric))  # stable: brms's order(types, decreasing = TRUE)


def default_effects(fit: FitResult, pr: Predictors) -> list[tuple[Predictor, ...]]:
    """brms's ``get_all_effects``: the raw variables of each population-level term, terms of one or two variables."""
    out: list[tuple[Predictor, ...]] = []
    seen: set[frozenset[str]] = set()
    for t in fit.design.spec.fixed:
        names = [c for c in t.columns if c in pr and pr.get(c).role == "predictor"]  # type: ignore[union-attr]
        key = frozenset(names)
        if 1 <= len(names) <= 2 and key not in seen:
            seen.add(key)
            out.append(_numeric_first(tuple(pr.get(n) for n in names)))  # type: ignore[misc]
    return sorted(out, key=len)  # main effects before interactions, as R's terms() orders them


def parse_effects(fit: FitResult, pr: Predictors, effects: Any) -> list[tuple[Predictor, ...]]:
    """The effects a user named (``"x"``, ``"a:b"`` or a list of them), each variable looked up in the design."""
    if effects is None:
        found = default_effects(fit, pr)
        if not found:
            raise DataError(f"The model {fit.formula!r} has no population-level predictor to show; "
                            "conditional_effects needs one.")
        return found
    items = [effects] if isinstance(effects, str) else list(effects) if isinstance(effects, (list, tuple)) else None
    if not items or not all(isinstance(e, str) for e in items):
        raise DataError(f"effects must be None, a string such as 'x' or 'x:z', or a list of them, got {effects!r}; "
                        f"the model's predictors are {valid_variables(pr)}.")
    out: list[tuple[Predictor, ...]] = []
    for text in items:
        names = [n.strip() for n in text.split(":")]
        if len(names) > 2:
            raise DataError(f"effects: {text!r} has more than two variables; show higher-order interactions with "
                            "conditions= (one facet per row).")
        if len(set(names)) != len(names):
            raise DataError(f"effects: {text!r} names a variable twice.")
        effect = tuple(lookup(fit, pr, n, "effects") for n in names)
        if effect not in out:
            out.append(effect)
    return out


def effect_name(effect: tuple[Predictor, ...]) -> str:
    return ":".join(p.name for p in effect)


# -- conditions -----------------------------------------------------------------------------


def _conditions(fit: FitResult, pr: Predictors, conditions: Any) -> tuple[pd.DataFrame, list[str]]:
    """The rows of conditions (without ``cond__``) and their labels."""
    if conditions is None:
        return pd.DataFrame(index=[0]), ["1"]
    frame = as_frame(conditions, "conditions")
    if len(frame) == 0:
        raise DataError("conditions must have at least one row.")
    allowed = set(fit.design.spec.variables(response=False)) | set(pr.names)
    unknown = [c for c in frame.columns if c != "cond__" and c not in allowed]
    if unknown:
        raise DataError(f"conditions has column(s) {unknown} that the model does not use; use the model's "
                        f"variables {sorted(allowed)} (and optionally 'cond__' for the facet labels).")
    frame = frame.drop_duplicates()
    if "cond__" in frame.columns:
        labels = [str(v) for v in frame["cond__"]]
        frame = frame.drop(columns="cond__")
    else:
        labels = [str(k + 1) for k in range(len(frame))]
    if len(set(labels)) != len(labels):
        raise DataError(f"conditions: the facet labels (cond__) must be unique, got {labels}.")
    return frame.reset_index(drop=True), labels


def _values(p: Predictor, first: bool, resolution: int) -> list[Any]:
    """An effect variable's grid values: its range or levels (first), mean ± SD or levels (second)."""
    if p.levels is not None:
        return list(p.levels.values)
    if first:
        return list(dict.fromkeys(np.linspace(p.min, p.max, resolution).tolist()))
    sd = 0.0 if math.isnan(p.sd) else p.sd
    return list(dict.fromkeys([p.mean - sd, p.mean, p.mean + sd]))


def defaults(pr: Predictors) -> dict[str, Any]:
    """Every summarised column at its default: mean or reference level; ``trials`` 1 (brms)."""
    return {p.name: (1 if p.role == "trials" else p.reference) for p in pr.items}


def column(values: Sequence[Any], p: Predictor | None) -> Any:
    """A grid column as the encoder reads it (numbers as floats, levels as their values)."""
    if p is None:
        return pd.Series(list(values)).to_numpy()
    if p.levels is None:
        return np.asarray(values, dtype=float)
    if p.levels.kind == "str":
        return np.asarray(list(values), dtype=object)
    return np.asarray(list(values))


def effect_grid(fit: FitResult, pr: Predictors, effect: tuple[Predictor, ...], cond: pd.DataFrame,
                labels: list[str], resolution: int, include: tuple[Any, ...]) -> pd.DataFrame:
    """The rows to predict for one effect: the effect's values crossed with each condition row."""
    values = [_values(p, k == 0, resolution) for k, p in enumerate(effect)]
    combos = list(itertools.product(*values))
    names = [p.name for p in effect]
    needed_groups = [v for f in include for v in f.variables]
    missing = [v for v in needed_groups if v not in cond.columns and v not in names]
    base = defaults(pr)
    if missing:  # as brms: a grouping column left unset is a new level, its effects drawn per draw
        base.update(dict.fromkeys(missing, new_level(include)))
    blocks = []
    for j in range(len(cond)):
        row = dict(base)
        row.update({c: cond[c].iloc[j] for c in cond.columns if c not in names})
        block = {n: [c[k] for c in combos] for k, n in enumerate(names)}
        for c, v in row.items():
            if c not in block:
                block[c] = [v] * len(combos)
        frame = pd.DataFrame({c: column(v, pr.get(c)) for c, v in block.items()})
        frame["cond__"] = labels[j]
        blocks.append(frame)
    return pd.concat(blocks, ignore_index=True)


def new_level(include: tuple[Any, ...]) -> str:
    """A grouping value no factor in ``include`` has (nor holds within a joined label): a new level.

    brms's ``prepare_conditions`` gives grouping variables no default, and their NA is a new
    level (``allow_new_levels = TRUE``); the encoder refuses missing values, so a label stands in.
    """
    label = "new__"
    while any(label in str(level) for f in include for level in f.levels):
        label += "_"
    return label


# -- summaries ------------------------------------------------------------------------------


def summarise(draws: np.ndarray, prob: float) -> dict[str, np.ndarray]:
    """brms's ``posterior_summary(robust = TRUE)`` of (draws, rows): median, MAD and equal-tailed bounds."""
    med = np.median(draws, axis=0)
    mad = MAD_CONSTANT * np.median(np.abs(draws - med), axis=0)
    lo, hi = np.quantile(draws, [(1 - prob) / 2, (1 + prob) / 2], axis=0)
    return {"estimate__": med, "se__": mad, "lower__": lo, "upper__": hi}


def _label2(x: float) -> str:
    """brms's label of a numeric second effect: the value rounded to 2 decimals, as R prints it."""
    return f"{round(x, 2) + 0.0:.15g}"


def _table(grid: pd.DataFrame, effect: tuple[Predictor, ...], pr: Predictors, labels: list[str],
           summary: dict[str, np.ndarray]) -> pd.DataFrame:
    out = grid.copy()
    for p in pr.items:
        if p.levels is not None and p.name in out.columns:
            out[p.name] = pd.Categorical(out[p.name], categories=list(p.levels.values))
    out["cond__"] = pd.Categorical(out["cond__"], categories=labels)
    out["effect1__"] = out[effect[0].name]
    if len(effect) == 2:
        second = effect[1]
        if second.levels is not None:
            out["effect2__"] = out[second.name]
        else:
            text = [_label2(v) for v in out[second.name]]
            order = sorted(set(text), key=float, reverse=True)
            out["effect2__"] = pd.Categorical(text, categories=order)
    for name in SUMMARY_COLUMNS:
        out[name] = summary[name]
    return out


@dataclass(frozen=True, eq=False)
class ConditionalEffects(Mapping[str, pd.DataFrame]):
    """brms's ``brms_conditional_effects``: one table per effect, keyed by its name (``"x"``, ``"x:z"``).

    Attributes
    ----------
    tables : dict of str to pandas.DataFrame
        Per effect: the effect's columns, the other predictors' values, ``cond__``,
        ``effect1__`` (and ``effect2__``), ``estimate__``, ``se__``, ``lower__``, ``upper__``.
    effects : dict of str to tuple of str
        Each effect's variables, in plotting order.
    numeric : dict of str to tuple of bool
        Whether each of those variables is numeric.
    response : str
        The response's name (the y axis label).
    method : str
    prob : float
    """

    tables: dict[str, pd.DataFrame]
    effects: dict[str, tuple[str, ...]]
    numeric: dict[str, tuple[bool, ...]]
    response: str
    method: str
    prob: float

    def __getitem__(self, key: str) -> pd.DataFrame:
        if key not in self.tables:
            raise KeyError(f"{key!r}: the effects are {list(self.tables)}")
        return self.tables[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.tables)

    def __len__(self) -> int:
        return len(self.tables)

    def __repr__(self) -> str:
        return f"<ConditionalEffects of {list(self.tables)} ({self.method}, {self.prob:g} intervals)>"

    def _repr_html_(self) -> str:
        # one table per effect, long ones (a numeric effect's 100 grid points) cut to their ends
        return "".join(f"<h4>{html.escape(name)}</h4>{table_html(table, max_rows=HTML_ROWS)}"
                       for name, table in self.tables.items())

    def plot(self, *, ncol: int | None = None) -> dict[str, Figure]:
        """One figure per effect, as brms's ``plot(conditional_effects(...))``.

        A numeric effect is a line (the median) with a ribbon (the interval), a
        categorical one points with error bars; the second variable of an
        interaction is shown by colour; each row of ``conditions`` is a facet
        titled by its ``cond__`` label.

        Parameters
        ----------
        ncol : int, optional
            Facets per row (default as brms: at least 3, about the square root of the number of facets).

        Returns
        -------
        dict of str to matplotlib.figure.Figure
        """
        return {name: _plot_one(self, name, ncol) for name in self.tables}


def draw_line(ax: Any, x: np.ndarray, y: np.ndarray, lo: np.ndarray, hi: np.ndarray, colour: Any,
              label: str | None) -> None:
    """A numeric effect: the estimate as a line over an interval ribbon (the line is the Axes' next line)."""
    ax.fill_between(x, lo, hi, color=colour, alpha=0.2, lw=0)
    ax.plot(x, y, color=colour, lw=2, label=label)


def draw_points(ax: Any, pos: np.ndarray, y: np.ndarray, lo: np.ndarray, hi: np.ndarray, colour: Any,
                label: str | None) -> None:
    """A categorical effect: points with interval error bars (the Axes' next container)."""
    ax.errorbar(pos, y, yerr=np.vstack([y - lo, hi - y]), fmt="o", color=colour, capsize=4, label=label)


def dodge(j: int, n: int, width: float = 0.4) -> float:
    """Horizontal offset of series ``j`` of ``n`` drawn side by side at each category."""
    return (j - (n - 1) / 2) * width / max(n, 1)


def _plot_one(ce: ConditionalEffects, name: str, ncol: int | None) -> Figure:
    import matplotlib.pyplot as plt

    from .plots import _colours

    table = ce.tables[name]
    conds = list(table["cond__"].cat.categories)
    n = len(conds)
    cols = min(n, check.count(ncol, "ncol") if ncol is not None else max(math.floor(math.sqrt(n)), 3))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False, layout="constrained")
    variables = ce.effects[name]
    numeric1 = ce.numeric[name][0]
    has2 = len(variables) == 2
    levels2 = list(table["effect2__"].cat.categories) if has2 else [None]
    colours = _colours(len(levels2)) if has2 else [(0.12, 0.47, 0.71, 1.0)]
    for k, ax in enumerate(axes.ravel()):
        if k >= n:
            ax.set_visible(False)
            continue
        sub = table[table["cond__"] == conds[k]]
        width = 0.4
        for j, (lev, colour) in enumerate(zip(levels2, colours)):
            part = sub if lev is None else sub[sub["effect2__"] == lev]
            label = None if lev is None else str(lev)
            y = part["estimate__"].to_numpy()
            lo, hi = part["lower__"].to_numpy(), part["upper__"].to_numpy()
            if numeric1:
                draw_line(ax, part["effect1__"].to_numpy(dtype=float), y, lo, hi, colour, label)
            else:
                cats = list(table["effect1__"].cat.categories)
                pos = np.asarray([cats.index(v) for v in part["effect1__"]], dtype=float)
                if has2:
                    pos = pos + dodge(j, len(levels2), width)
                draw_points(ax, pos, y, lo, hi, colour, label)
                ax.set_xticks(range(len(cats)), [str(c) for c in cats])
        ax.set_xlabel(variables[0])
        ax.set_ylabel(ce.response)
        if n > 1:
            ax.set_title(conds[k], fontsize=10)
        if has2:
            ax.legend(title=variables[1], fontsize=8, title_fontsize=8)
    return fig


# -- public ---------------------------------------------------------------------------------


def _categorical_table(grid: pd.DataFrame, effect: tuple[Predictor, ...], pr: Predictors, labels: list[str],
                       draws: np.ndarray, prob: float, cats: list[str]) -> pd.DataFrame:
    """brms's table with ``categorical = TRUE``: the grid once per category (``cats__``, also ``effect2__``)."""
    blocks = []
    for k, cat in enumerate(cats):
        block = _table(grid, effect, pr, labels, summarise(draws[:, :, k], prob))
        block.insert(list(block.columns).index("cond__") + 1, "cats__", cat)
        blocks.append(block)
    out = pd.concat(blocks, ignore_index=True)
    out["cats__"] = pd.Categorical(out["cats__"], categories=cats)
    # brms makes the categories the second effect: the plot colours by them
    out.insert(list(out.columns).index("effect1__") + 1, "effect2__", out["cats__"])
    return out


def conditional_effects(fit: FitResult, effects: str | Sequence[str] | None = None, *, conditions: Any = None,
                        include_groups: bool | str | Sequence[str] = False, prob: float = 0.95,
                        method: str = "posterior_epred", resolution: int = 100,
                        seed: int | None = None, categorical: bool = False) -> ConditionalEffects:
    """brms's ``conditional_effects``: predictions along each effect, other predictors held fixed.

    Parameters
    ----------
    fit : Fit
    effects : str or list of str, optional
        A predictor (``"Days"``), a two-way interaction (``"zBase:Trt"``) or a
        list of them. None: every population-level term of one or two
        variables (main effects and two-way interactions), numeric variables
        first, as brms.
    conditions : pandas.DataFrame, optional
        Values to hold other variables at, one facet per row (a ``cond__``
        column labels the facets; otherwise they are numbered from 1).
        Variables it leaves out take their mean or reference level.
    include_groups : bool, str or list of str
        False (default, brms's ``re_formula = NA``): population-level
        predictions only. True or factor names: include those group-level
        effects, at the grouping levels ``conditions`` gives (levels absent
        from the data are simulated, as brms's ``allow_new_levels``); a
        grouping column it does not give is a new level, as in brms, so the
        intervals include the spread between groups.
    prob : float
        Mass of the equal-tailed intervals ``lower__`` and ``upper__``.
    method : {"posterior_epred", "posterior_linpred", "posterior_predict"}
        Which draws to summarise: the expected response (response scale), the
        linear predictor, or new observations.
    resolution : int
        Number of values along a numeric first effect (at least 2).
    seed : int, optional
        Seeds ``posterior_predict`` and new grouping levels.
    categorical : bool
        brms's ``categorical = TRUE`` for an ordinal (or other categorical)
        response: one estimate per response category, the probability of that
        category (``method="posterior_epred"`` only; main effects only, as
        brms). The tables get a ``cats__`` column (the category's label, also
        ``effect2__``) and the plots colour by category. Without it, an ordinal
        response is shown as its expected category number ``sum_k k P(Y = k)``,
        with brms's warning.

    Returns
    -------
    ConditionalEffects
        Mapping from effect name to table; ``.plot()`` draws them.

    Raises
    ------
    DataError
        An effect or a conditions column the model does not have, or a grouping column only.
    LmmbayesError
        A bad ``method``, ``prob`` or ``resolution``; ``categorical=True`` with
        another method, an interaction, or a response that is not categorical;
        a non-ordinal categorical response without ``categorical=True``.

    Warns
    -----
    LmmbayesWarning
        An ordinal response without ``categorical=True`` (brms's warning).
    """
    pr = predictors_of(fit, "conditional_effects")
    method = check.choice(method, "method", METHODS)
    level = check.probability(prob, "prob")
    assert level is not None
    resolution = check.count(resolution, "resolution", minimum=2)
    chosen = groups(fit, include_groups)
    categorical = check.flag(categorical, "categorical")
    if categorical and method != "posterior_epred":
        raise LmmbayesError(f"categorical=True shows the probability of each category, method='posterior_epred'; "
                            f"got method={method!r}.")
    if categorical and not fit.family.factor_like:
        raise LmmbayesError(f"categorical=True is for categorical and ordinal responses; family "
                            f"{fit.family.name!r} has none.")
    found = parse_effects(fit, pr, effects)
    if categorical:
        if effects is None:  # brms cannot show interactions with the categories: the main effects only
            found = [e for e in found if len(e) == 1]
        pairs = [effect_name(e) for e in found if len(e) > 1]
        if pairs or not found:
            raise DataError(f"Interactions cannot be shown directly with categorical=True (got {pairs}), as in "
                            "brms; use conditions= (one facet per row) instead.")
    cond, labels = _conditions(fit, pr, conditions)
    predict = {"posterior_epred": posterior_epred, "posterior_linpred": posterior_linpred,
               "posterior_predict": posterior_predict}[method]
    tables, names, kinds = {}, {}, {}
    warned = False
    for effect in found:
        grid = effect_grid(fit, pr, effect, cond, labels, resolution, chosen)
        draws = np.asarray(predict(fit, grid.drop(columns="cond__"), include_groups=include_groups,
                                   allow_new_levels=True, seed=seed))
        name = effect_name(effect)
        names[name] = tuple(p.name for p in effect)
        kinds[name] = tuple(p.numeric for p in effect)
        if categorical:
            if draws.ndim != 3:
                raise LmmbayesError(f"categorical=True needs a probability per category, and family "
                                    f"{fit.family.name!r} predicts one value per row.")
            cats = [str(c) for c in fit.design.encoder.coding.levels] or \
                [str(k) for k in range(1, draws.shape[2] + 1)]
            tables[name] = _categorical_table(grid, effect, pr, labels, draws, level, cats)
            names[name] += ("cats__",)
            kinds[name] += (False,)
            continue
        if fit.family.factor_like and draws.ndim == 3:
            if not fit.family.ordinal:
                raise LmmbayesError(f"conditional_effects of a categorical response (family {fit.family.name!r}, "
                                    f"{draws.shape[2]} categories) shows each category's probability: pass "
                                    "categorical=True.")
            if not warned:
                warn("Predictions are treated as continuous variables in conditional_effects by default, which is "
                     "likely invalid for ordinal families; set categorical=True (as brms warns).", LmmbayesWarning)
                warned = True
            # brms's ordinal_probs_continuous: the expected category number
            draws = draws @ np.arange(1.0, draws.shape[2] + 1.0) if method == "posterior_epred" else draws
        tables[name] = _table(grid, effect, pr, labels, summarise(draws, level))
    return ConditionalEffects(tables, names, kinds, fit.design.spec.response_name, method, level)
