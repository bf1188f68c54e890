"""The one row encoder: formula + learnt state -> the numbers a model needs, for any rows.

`learn_encoder` learns, from the training rows, everything needed to
encode rows again: the components of every term (numeric with their
transform states, or categorical with their levels), how each categorical
component is coded in each term (full dummies or treatment contrasts against
the first level), brms's column names, and each grouping factor's levels.
All of it is plain data (`RowEncoder`), saved in fit files as such.
`RowEncoder.encode` then turns any frame (the training rows, new data,
a Dask partition) into `Rows`. Prediction, the Dask reduction and
loading a fit file all use it; nothing else encodes rows.

Which categorical components get full dummies and which get contrasts is
formulae's decision (R's rule, made full rank): formulae is shown only
stand-in columns of the right kinds (numbers or categories), never the
user's expressions, so it evaluates nothing of the formula.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError, FormulaError
from ..families import Extra, Family, ResponseCoding
from ..spec import Expr, FormulaSpec, Term, brms_rename
from ..spec.expr import Call, Column
from .levels import LevelCoder, Levels, level_label
from .transforms import Evaluator, State, stateful_calls

INTERCEPT = "Intercept"


@dataclass(frozen=True)
class Component:
    """One factor of a term: a numeric expression (one or more columns) or a categorical one.

    Attributes
    ----------
    expr : Expr
    levels : Levels or None
        The levels of a categorical component (None for numeric ones).
    width : int
        Number of columns of a numeric component.
    """

    expr: Expr
    levels: Levels | None = None
    width: int = 1

    @property
    def categorical(self) -> bool:
        return self.levels is not None

    @property
    def label(self) -> str:
        return str(self.expr)


@dataclass(frozen=True)
class EncodedTerm:
    """A term's columns: the product of its components, each coded as given.

    Attributes
    ----------
    parts : tuple of (int, str)
        Per component, its index in `RowEncoder.components` and its coding:
        ``"numeric"``, ``"full"`` (a dummy per level) or ``"reduced"`` (a dummy per
        level but the first). An empty tuple is the intercept (a column of ones).
    names : tuple of str
        brms's names of the columns.
    """

    parts: tuple[tuple[int, str], ...]
    names: tuple[str, ...]


@dataclass(frozen=True)
class FactorCoding:
    """One grouping factor: its levels, its terms' columns and their correlation blocks.

    Attributes
    ----------
    coder : LevelCoder
    columns : tuple of EncodedTerm
        The terms making the columns of Z, in order; an intercept first where the model has one.
    blocks : tuple of tuple of int
        Column indices sharing a correlation matrix; ``||`` terms are blocks of one.
    """

    coder: LevelCoder
    columns: tuple[EncodedTerm, ...]
    blocks: tuple[tuple[int, ...], ...]

    @property
    def name(self) -> str:
        return self.coder.name

    @property
    def variables(self) -> tuple[str, ...]:
        return self.coder.variables

    @property
    def terms(self) -> tuple[str, ...]:
        """brms's names of the factor's terms (``Intercept``, ``std_age``...)."""
        return tuple(n for t in self.columns for n in t.names)

    @property
    def q(self) -> int:
        return len(self.terms)

    @property
    def levels(self) -> tuple[str, ...]:
        return self.coder.labels

    @property
    def n_levels(self) -> int:
        return self.coder.n_levels

    @property
    def cor_pairs(self) -> tuple[tuple[int, int], ...]:
        """(i, j) column pairs, i < j, whose correlation is a parameter."""
        return tuple((block[a], block[b]) for block in self.blocks for b in range(len(block)) for a in range(b))


@dataclass(frozen=True)
class FactorRows:
    """One grouping factor evaluated on some rows.

    Attributes
    ----------
    index : (n,) int array
        Each row's level; -1 for a level absent from the training data.
    Z : (n, q) array
        The values of the factor's terms.
    labels : (n,) object array or None
        Each row's level label where some level is new (None otherwise).
    """

    index: np.ndarray
    Z: np.ndarray
    labels: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class Rows:
    """Rows encoded for the model.

    Attributes
    ----------
    X : (n, p) array
        Population-level columns, uncentred; the centred intercept is not a
        column (the explicit ``0 + Intercept`` column is).
    offset : (n,) array or None
    factors : tuple of FactorRows
        In the order of the encoder's factors that were asked for.
    y : (n,) array or None
        The coded response (None for new data without one).
    extra : Extra
        Binomial trials and known SDs, where the formula has them.
    weights : (n,) array or None
    index : pandas.Index
        The rows' labels in the frame they came from.
    """

    X: np.ndarray
    offset: np.ndarray | None
    factors: tuple[FactorRows, ...]
    y: np.ndarray | None
    extra: Extra
    weights: np.ndarray | None
    index: pd.Index

    @property
    def n(self) -> int:
        return int(self.X.shape[0])

    def take(self, rows: Any) -> Rows:
        """The same quantities for a subset (slice or positions) of the rows."""
        sub = lambda a: None if a is None else a[rows]
        return Rows(self.X[rows], sub(self.offset),
                    tuple(FactorRows(f.index[rows], f.Z[rows], sub(f.labels)) for f in self.factors),
                    sub(self.y), self.extra.take(rows), sub(self.weights), self.index[rows])


@dataclass(frozen=True)
class RowEncoder:
    """Everything needed to encode rows like the training rows: plain, frozen data.

    Attributes
    ----------
    spec : FormulaSpec
    family : Family
    coding : ResponseCoding
        How the response was coded (e.g. bernoulli's success level).
    components : tuple of Component
    states : tuple of (str, State)
        Learnt states of stateful transforms, by call text.
    fixed : tuple of EncodedTerm
        The population-level columns (the explicit ``Intercept`` first where present).
    factors : tuple of FactorCoding
    """

    spec: FormulaSpec
    family: Family
    coding: ResponseCoding
    components: tuple[Component, ...]
    states: tuple[tuple[str, State], ...]
    fixed: tuple[EncodedTerm, ...]
    factors: tuple[FactorCoding, ...]
    _state_map: dict[str, State] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_state_map", dict(self.states))

    @property
    def coef_names(self) -> tuple[str, ...]:
        return tuple(n for t in self.fixed for n in t.names)

    def factor(self, name: str) -> FactorCoding:
        return next(f for f in self.factors if f.name == name)

    def needed(self, *, response: bool, groups: tuple[str, ...] | None = None,
               additions: tuple[str, ...] = ()) -> tuple[str, ...]:
        """The data columns encoding needs (the response's only with ``response``; those of the
        addition terms named in ``additions`` too)."""
        from ..spec.expr import columns

        names = list(self.spec.variables(response=response, groups=groups))
        for name, e in self.spec.additions.expressions():
            if name in additions:
                names += columns(e)
        return tuple(dict.fromkeys(names))

    def encode(self, frame: pd.DataFrame, *, response: bool = True, groups: tuple[str, ...] | None = None,
               what: str = "data", additions: tuple[str, ...] | None = None) -> Rows:
        """Encode complete rows (numpy dtypes, see `complete_rows`).

        Parameters
        ----------
        frame : pandas.DataFrame
        response : bool
            Encode the response and the addition terms too.
        additions : tuple of str, optional
            The addition terms to encode (``"trials"``, ``"se"``, ``"weights"``);
            default all of them with ``response``, none without.
        groups : tuple of str, optional
            Only these grouping factors (default all).
        what : str
            Where the rows come from, for messages.

        Raises
        ------
        DataError
            A categorical level never seen in training, a value outside a
            transform's domain, a bad addition term.
        """
        ev = Evaluator(frame, dict(self._state_map), what=what)
        n = len(frame)
        values = [self._component(ev, c, what) if self._used(k, groups) else None
                  for k, c in enumerate(self.components)]
        X = _columns(self.fixed, values, self.components, n)
        offset = None
        for e in self.spec.offsets:
            part = ev.numeric(e)[:, 0]
            offset = part if offset is None else offset + part
        chosen = self.factors if groups is None else tuple(f for f in self.factors if f.name in groups)
        factors = []
        for f in chosen:
            index = f.coder.codes(frame)
            labels = f.coder.row_labels(frame) if (index < 0).any() else None
            factors.append(FactorRows(index, _columns(f.columns, values, self.components, n), labels))
        y, extra, weights = None, Extra(), None
        wanted = (("trials", "se", "weights") if response else ()) if additions is None else additions
        if wanted:
            extra, weights = self._additions(ev, what, wanted)
        if response:
            raw = frame[self.spec.response.name] if isinstance(self.spec.response, Column) \
                else ev.value(self.spec.response)
            y = _encode_response(self.family, raw, self.spec.response_name, self.coding, extra)
        return Rows(X, offset, tuple(factors), y, extra, weights, frame.index)

    def _used(self, k: int, groups: tuple[str, ...] | None) -> bool:
        if any(k == i for t in self.fixed for i, _ in t.parts):
            return True
        return any(k == i for f in self.factors if groups is None or f.name in groups
                   for t in f.columns for i, _ in t.parts)

    def _component(self, ev: Evaluator, c: Component, what: str) -> np.ndarray:
        if not c.categorical:
            out = ev.numeric(c.expr)
            if out.shape[1] != c.width:
                raise DataError(f"'{c.label}' gave {out.shape[1]} columns on {what}, {c.width} in training.")
            return out
        assert c.levels is not None
        codes = c.levels.codes(ev.categories(c.expr))
        if (codes < 0).any():
            values = ev.categories(c.expr)
            unseen = sorted({level_label(v) for v in values[codes < 0]})
            raise DataError(f"{what} column '{c.label}' has level(s) {unseen} absent from the data the model was "
                            f"fitted on, so no coefficient exists for them; use only levels seen in training: "
                            f"{list(c.levels.labels)}.")
        return codes

    def _additions(self, ev: Evaluator, what: str,
                   wanted: tuple[str, ...] = ("trials", "se", "weights")) -> tuple[Extra, np.ndarray | None]:
        add = self.spec.additions
        trials = se = weights = None
        if add.trials is not None and "trials" in wanted:
            trials = _positive_values(ev, add.trials, "trials", what, integer=True, zero=False)
        if add.se is not None and "se" in wanted:
            se = _positive_values(ev, add.se, "se", what, integer=False, zero=False)
        if add.weights is not None and "weights" in wanted:
            weights = _positive_values(ev, add.weights, "weights", what, integer=False, zero=True)
            if not weights.sum() > 0:
                raise DataError(f"The weights ({add.weights}) of {what} sum to zero; at least one row needs a "
                                "positive weight.")
        return Extra(trials, se), weights


def _positive_values(ev: Evaluator, e: Expr, name: str, what: str, *, integer: bool, zero: bool) -> np.ndarray:
    values = ev.numeric(e)[:, 0] if not isinstance(ev.value(e), (int, float)) else np.full(ev.n, float(ev.value(e)))
    bad = ~np.isfinite(values) | (values < 0 if zero else values <= 0)
    if integer:
        bad |= values != np.round(values)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        need = ("non-negative" if zero else "positive") + (" integers" if integer else " numbers")
        raise DataError(f"{name}({e}) must be {need}, but {int(bad.sum())} row(s) of {what} are not "
                        f"(e.g. {values[k]:g} in row {ev.frame.index[k]!r}).")
    return values.astype(float)


def _columns(terms: tuple[EncodedTerm, ...], values: list[np.ndarray | None], components: tuple[Component, ...],
             n: int) -> np.ndarray:
    """The columns of ``terms`` from the evaluated components: row-wise products, first component slowest."""
    blocks = []
    for t in terms:
        block = np.ones((n, 1))
        for k, coding in t.parts:
            v = values[k]
            assert v is not None
            if coding == "numeric":
                part = v
            else:
                levels = components[k].levels
                assert levels is not None
                part = np.zeros((n, len(levels)))
                part[np.arange(n), v] = 1.0
                if coding == "reduced":
                    part = part[:, 1:]
            block = (block[:, :, None] * part[:, None, :]).reshape(n, -1)
        blocks.append(block)
    return np.concatenate(blocks, axis=1) if blocks else np.zeros((n, 0))


# -- learning the encoder from the training rows ------------------------------------------------


def learn_encoder(spec: FormulaSpec, family: Family, frame: pd.DataFrame, *,
                  factor_frames: dict[str, pd.DataFrame] | None = None) -> tuple[RowEncoder, Rows]:
    """Learn the encoder from the training rows and encode them.

    Parameters
    ----------
    spec : FormulaSpec
    family : Family
    frame : pandas.DataFrame
        The complete training rows, numpy dtypes.
    factor_frames : dict, optional
        Per grouping factor, rows holding each of its level combinations
        (for Dask, where ``frame`` is a small template); default ``frame``.

    Returns
    -------
    (RowEncoder, Rows)

    Raises
    ------
    DataError, FormulaError
    """
    states: dict[str, State] = {}
    ev = Evaluator(frame, states, learn=True)
    terms = [t for t in spec.fixed if t.components]
    for g in spec.groups:
        terms += list(g.terms)
    components: list[Component] = []
    index: dict[Expr, int] = {}
    for t in terms:
        for e in t.components:
            if e not in index:
                index[e] = len(components)
                components.append(_learn_component(ev, e))
    for e in spec.offsets:
        ev.numeric(e)
    comps = tuple(components)
    explicit = spec.intercept == "explicit"
    fixed = list(_coded_terms([t for t in spec.fixed if t.components], spec.intercept != "none", index, comps))
    if explicit:
        fixed.insert(0, EncodedTerm((), (INTERCEPT,)))
    _check_names([n for t in fixed for n in t.names], "population-level")
    factors = []
    for name in spec.factors:
        rows = frame if factor_frames is None else factor_frames[name]
        coder = LevelCoder.learn(rows, name, spec.factor_vars(name))
        columns: list[EncodedTerm] = []
        blocks: list[tuple[int, ...]] = []
        for g in (g for g in spec.groups if g.factor == name):
            coded = list(_coded_terms(list(g.terms), g.intercept, index, comps))
            if g.intercept:
                coded.insert(0, EncodedTerm((), (INTERCEPT,)))
            start = sum(len(c.names) for c in columns)
            for coded_term in coded:
                for n in coded_term.names:
                    if n in [m for c in columns for m in c.names]:
                        raise FormulaError(f"The group-level term '{n}' for factor '{name}' is listed twice (in "
                                           f"{g.source}); list each term once per grouping factor.")
                columns.append(coded_term)
            width_ = sum(len(c.names) for c in coded)
            idx = tuple(range(start, start + width_))
            blocks.extend([idx] if g.correlated else [(i,) for i in idx])
        factors.append(FactorCoding(coder, tuple(columns), tuple(blocks)))
    draft = RowEncoder(spec, family, ResponseCoding(), comps, tuple(states.items()), tuple(fixed), tuple(factors))
    rows = draft.encode(frame, response=False)
    # the response and the addition terms: learn the family's coding of the response
    extra, weights = draft._additions(ev, "data")
    raw = frame[spec.response.name] if isinstance(spec.response, Column) else ev.value(spec.response)
    y, coding = _learn_response(family, raw, spec.response_name, extra)
    encoder = RowEncoder(spec, family, coding, comps, tuple(states.items()), tuple(fixed), tuple(factors))
    return encoder, Rows(rows.X, rows.offset, rows.factors, y, extra, weights, rows.index)


def _categorical(family: Family, raw: Any) -> bool:
    """Whether a response is coded by its levels: a categorical family and a non-numeric (or boolean) column."""
    arr = raw if isinstance(raw, pd.Series) else pd.Series(np.asarray(raw))
    return family.factor_like and (pd.api.types.is_bool_dtype(arr) or not pd.api.types.is_numeric_dtype(arr))


def _learn_response(family: Family, raw: Any, name: str, extra: Extra) -> tuple[np.ndarray, ResponseCoding]:
    """The response coded for the family; the levels of a categorical one are learnt here, the one level coder."""
    if not _categorical(family, raw):
        return family.code_response(raw, name, extra)
    series = raw if isinstance(raw, pd.Series) else pd.Series(np.asarray(raw))
    levels = Levels.learn(series, name, warn_unused=False)
    ordered = isinstance(series.dtype, pd.CategoricalDtype) and bool(series.dtype.ordered)
    return family.code_levels(levels.codes(series), levels.labels, name, ordered)


def _encode_response(family: Family, raw: Any, name: str, coding: ResponseCoding, extra: Extra) -> np.ndarray:
    """The response of new rows coded as in training: by label for a categorical response."""
    if not _categorical(family, raw):
        return family.encode_response(raw, name, coding, extra)
    values = raw.to_numpy() if isinstance(raw, pd.Series) else np.asarray(raw)
    codes = pd.Index(coding.levels).get_indexer([level_label(v) for v in values])
    if (codes < 0).any():
        raise DataError(f"The response '{name}' holds values other than {list(coding.levels)}.")
    return family.code_levels(codes, coding.levels, name, ordered=True)[0]  # in the training order


def _learn_component(ev: Evaluator, e: Expr) -> Component:
    if ev.is_categorical(e):
        if isinstance(e, Call) and e.fn in ("C", "factor") and stateful_calls(e.args[0]):
            raise FormulaError(f"'{e}': a categorical of a transformed column is not supported; make the column "
                               "first.")
        values = ev.categories(e)
        levels = Levels.learn(values, str(e))
        if len(levels) < 2:
            raise DataError(f"The categorical predictor '{e}' has a single level ({levels.labels[0]!r}) in the "
                            "data, so it cannot be estimated; drop it from the formula.")
        return Component(e, levels)
    return Component(e, None, ev.numeric(e).shape[1])


def _coded_terms(terms: list[Term], intercept: bool, index: dict[Expr, int],
                 comps: tuple[Component, ...]) -> list[EncodedTerm]:
    """Each term's coding (formulae's full-rank rule) and brms names, in formulae's term order."""
    if not terms:
        return []
    import formulae as fm
    from formulae.environment import Environment

    used = sorted({index[e] for t in terms for e in t.components})
    proxy = {k: f"p{k}" for k in used}
    rows = max(2, *(len(comps[k].levels or ()) for k in used))
    data: dict[str, Any] = {"y": np.zeros(rows)}
    for k in used:
        levels = comps[k].levels
        if levels is None:
            data[proxy[k]] = np.arange(rows, dtype=float)
        else:
            cats = [str(i) for i in range(len(levels))]
            data[proxy[k]] = pd.Categorical([cats[i % len(cats)] for i in range(rows)], categories=cats)
    text = ("1" if intercept else "0") + " + " + " + ".join(":".join(proxy[index[e]] for e in t.components)
                                                             for t in terms)
    dm = fm.design_matrices("y ~ " + text, pd.DataFrame(data), na_action="pass", env=Environment([{}]))
    back = {v: k for k, v in proxy.items()}
    out = []
    for term in dm.common.terms.values():
        if type(term).__name__ == "Intercept":
            continue
        parts = []
        for c in term.components:
            k = back[c.name]
            coding = "numeric" if comps[k].levels is None else ("full" if c.spans_intercept else "reduced")
            parts.append((k, coding))
        out.append(EncodedTerm(tuple(parts), _names(tuple(parts), comps)))
    return out


def _names(parts: tuple[tuple[int, str], ...], comps: tuple[Component, ...]) -> tuple[str, ...]:
    pieces = []
    for k, coding in parts:
        c = comps[k]
        if coding == "numeric":
            pieces.append([c.label] if c.width == 1 else [f"{c.label}{j}" for j in range(1, c.width + 1)])
        else:
            labels = c.levels.labels if c.levels is not None else ()
            pieces.append([f"{c.label}{lab}" for lab in (labels if coding == "full" else labels[1:])])
    return tuple(brms_rename(":".join(combo)) for combo in itertools.product(*pieces))


def _check_names(names: list[str], where: str) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise FormulaError(f"Two {where} columns would both be named '{n}' after brms's renaming of special "
                               "characters; rename a column so that the names differ.")
        seen.add(n)
