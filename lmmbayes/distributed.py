"""Dask DataFrames: reduce the rows partition by partition, fit from the sums.

``lmmbayes.fit(formula, ddf, ...)`` with a Dask DataFrame builds, with
:func:`build_dask_design`, a :class:`~lmmbayes.design.Design` that holds no
rows (``design.rows_in_memory`` is False) but the cross-products the
collapsed engine needs (:class:`~lmmbayes.crossprod.RowSums`), so the data
may be larger than memory or live on a Dask cluster; the sampler never sees
N rows. Only the collapsed engine fits such a design.

The work runs on whatever Dask scheduler is active (a ``distributed.Client``
if one is open) in a few passes over the data; each reads every partition
again, so call ``ddf.persist()`` first where the cluster can hold the data.

1. scan: rows, missing and infinite values, the distinct values of the
   categorical predictors, the distinct combinations of the grouping
   columns and a few complete rows;
2. sums: formulae evaluates each partition with the coding fixed on a small
   template frame that holds every category (so every partition codes them
   as the whole data would), and :func:`lmmbayes.crossprod.reduce_rows` sums
   it around its own means; partial sums are merged in a tree;
3. the response's median and MAD for brms's default priors, exactly: with at
   most :data:`COLLECT_MAX` rows one pass collects the response, otherwise
   a radix selection on the bits of the floats narrows the middle values
   down 16 bits per pass (typically two passes each for median and MAD).

The defaults therefore equal those of the same data in memory, digit for
digit. Formula functions fitted on the whole column (``scale()``,
``center()``, ``standardize()``, splines, ``poly()``) are refused: compute
them with Dask before fitting.

Dask is imported only when a Dask frame is fitted; ``import lmmbayes`` does
not import it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import reduce
from typing import Any

import formulae as fm
import numpy as np
import pandas as pd

from .crossprod import Layout, ReducedRows, RowSums, layout_of, reduce_rows
from .design import (
    FORMULA_FUNCTIONS,
    Design,
    Factor,
    LevelCoder,
    all_dropped_error,
    check_levels,
    check_response,
    collinear_columns_from_gram,
    factor_terms,
    factor_variables,
    fixed_part,
    formula_variables,
    has_infinite,
    infinite_values_error,
    nonfinite_response_error,
    warn_collinearity,
    warn_dropped,
)
from .errors import DataError, FitError, FormulaError
from .formula import FormulaSpec

#: Largest number of response values collected in one place to take the
#: median and MAD directly (8 MB of float64); larger responses use a radix
#: selection over several passes.
COLLECT_MAX = 1 << 20

#: Most index labels of dropped rows kept for ``Fit.dropped_rows``.
MAX_DROPPED_LABELS = 100_000

#: Partial results merged per task of the tree reduction.
SPLIT_EVERY = 8

_STATEFUL = re.compile(r"\b(center|scale|standardize|bs|cc|cr|tp|poly)\s*\(")
_RADIX_BITS = 16


def is_dask_frame(data: Any) -> bool:
    """Whether ``data`` is a Dask DataFrame (checked by module name: dask is not imported)."""
    cls = type(data)
    return cls.__module__.split(".")[0] == "dask" and cls.__name__ == "DataFrame"


# -- running one pass ----------------------------------------------------------------


def _merge_all(combine: Callable[[Any, Any], Any], *parts: Any) -> Any:
    return reduce(combine, parts)


def map_reduce(frame: Any, fn: Callable[[pd.DataFrame], Any], combine: Callable[[Any, Any], Any]) -> Any:
    """``fn`` on every partition of ``frame``, merged pairwise by ``combine`` in a tree.

    ``fn`` enters the graph once (not once per partition), so a large
    function object such as a :class:`RowEvaluator` is shipped to each worker
    only once. Partitions are merged in their order.
    """
    import dask

    node = dask.delayed(fn, pure=True, traverse=False)
    tasks = [node(part) for part in frame.to_delayed()]
    while len(tasks) > 1:
        tasks = [dask.delayed(_merge_all, pure=True)(combine, *tasks[i:i + SPLIT_EVERY])
                 for i in range(0, len(tasks), SPLIT_EVERY)]
    (result,) = dask.compute(tasks[0])
    return result


# -- pass 1: scan ----------------------------------------------------------------------


def _distinct_rows(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Distinct rows of two frames; categorical columns stay categorical (union of categories)."""
    both = pd.concat([a, b], ignore_index=True)
    for c in a.columns:
        if isinstance(a[c].dtype, pd.CategoricalDtype) and isinstance(b[c].dtype, pd.CategoricalDtype) \
                and a[c].dtype != b[c].dtype:  # partitions with unknown, differing categories
            both[c] = pd.api.types.union_categoricals([a[c].array, b[c].array], ignore_order=True)
    return both.drop_duplicates(ignore_index=True)


@dataclass(frozen=True, eq=False)
class Scan:
    """What the first pass learns about the rows (additive over partitions).

    Attributes
    ----------
    n_rows, n_dropped : int
        Rows, and rows with a missing value in a column the formula uses.
    dropped : tuple
        Index labels of dropped rows (the first :data:`MAX_DROPPED_LABELS`).
    infinite : frozenset of str
        Numeric columns holding ±inf.
    values : dict of str to pandas.DataFrame
        Distinct values, among complete rows, of every categorical column
        (a one-column frame each).
    combos : pandas.DataFrame
        Distinct combinations of the grouping columns among complete rows.
    sample : pandas.DataFrame
        A few complete rows (from the first partition that has any).
    """

    n_rows: int
    n_dropped: int
    dropped: tuple[Any, ...]
    infinite: frozenset[str]
    values: dict[str, pd.DataFrame]
    combos: pd.DataFrame
    sample: pd.DataFrame

    def __add__(self, other: Scan) -> Scan:
        return Scan(
            self.n_rows + other.n_rows,
            self.n_dropped + other.n_dropped,
            (self.dropped + other.dropped)[:MAX_DROPPED_LABELS],
            self.infinite | other.infinite,
            {k: _distinct_rows(v, other.values[k]) for k, v in self.values.items()},
            _distinct_rows(self.combos, other.combos),
            self.sample if len(self.sample) else other.sample,
        )


@dataclass(frozen=True)
class Scanner:
    """Pass 1 on one partition."""

    needed: tuple[str, ...]
    categorical: tuple[str, ...]
    grouping: tuple[str, ...]
    sample_rows: int = 5

    def __call__(self, part: pd.DataFrame) -> Scan:
        frame = part.loc[:, list(self.needed)]
        keep = frame.notna().all(axis=1).to_numpy()
        kept = frame.loc[keep]
        return Scan(
            n_rows=len(frame),
            n_dropped=int((~keep).sum()),
            dropped=tuple(frame.index[~keep][:MAX_DROPPED_LABELS]),
            infinite=frozenset(c for c in self.needed if has_infinite(frame[c])),
            values={c: kept[[c]].drop_duplicates(ignore_index=True) for c in self.categorical},
            combos=kept.loc[:, list(self.grouping)].drop_duplicates(ignore_index=True),
            sample=kept.head(self.sample_rows).reset_index(drop=True),
        )


def categorical_variables(spec: FormulaSpec, dtypes: pd.Series) -> tuple[str, ...]:
    """Columns formulae codes as categories: non-numeric or boolean ones, and any inside ``C()``."""
    names = [c for c, t in dtypes.items()
             if not pd.api.types.is_numeric_dtype(t) or pd.api.types.is_bool_dtype(t)]
    for text in (f"{spec.response} ~ {spec.fixed}", *(g.lhs for g in spec.groups)):
        for term in fm.model_description(text).terms:
            for comp in getattr(term, "components", ()):
                if getattr(comp, "name", "").startswith("C("):
                    names += sorted(comp.var_names)
    return tuple(c for c in dict.fromkeys(names) if c in dtypes.index)


def template_frame(sample: pd.DataFrame, values: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Complete rows holding every category of every categorical column.

    formulae fixes its coding (levels, reference level, column names) on this
    frame; every partition is then evaluated with that coding.
    """
    n = max([len(sample), *(len(v) for v in values.values())])
    columns = {}
    for col in sample.columns:
        source = values[col][col] if col in values else sample[col]
        columns[col] = source.iloc[np.arange(n) % len(source)].reset_index(drop=True)
    return pd.DataFrame(columns)


def _check_columns(ddf: Any, needed: list[str], spec: FormulaSpec) -> None:
    columns = pd.Index(ddf.columns)
    if columns.duplicated().any():
        dup = sorted(set(map(str, columns[columns.duplicated()])))
        raise DataError(f"data has duplicate column names {dup}; rename them so each is unique.")
    missing = [n for n in needed if n not in columns]
    if missing:
        raise FormulaError(
            f"The formula {spec.formula!r} uses column(s) {missing} that are not in the data; "
            f"available columns: {list(map(str, columns))}."
        )
    for text in (spec.fixed, spec.response, *(g.lhs for g in spec.groups)):
        match = _STATEFUL.search(text)
        if match:
            raise FormulaError(
                f"{match.group(1)}() in {spec.formula!r} is fitted on the whole column, which a Dask "
                "frame's partitions do not see; compute the transformed column with Dask before fitting."
            )


def _check_scan(scan: Scan, needed: list[str]) -> None:
    if scan.n_rows == 0:
        raise DataError("data has no rows.")
    for col in needed:
        if col in scan.infinite:
            raise infinite_values_error(col)
    if scan.n_dropped == scan.n_rows:
        raise all_dropped_error(needed)
    if scan.n_dropped:
        note = "" if scan.n_dropped <= MAX_DROPPED_LABELS else f" (the first {MAX_DROPPED_LABELS})"
        warn_dropped(scan.n_dropped, scan.n_rows, note=note)


# -- pass 2: sums --------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PartialSums:
    """Sums of some partitions, with what the checks need."""

    sums: RowSums
    x_absmax: np.ndarray
    n_nonfinite: int

    def __add__(self, other: PartialSums) -> PartialSums:
        return PartialSums(self.sums + other.sums, np.maximum(self.x_absmax, other.x_absmax),
                           self.n_nonfinite + other.n_nonfinite)


@dataclass(frozen=True, eq=False)
class RowEvaluator:
    """Evaluates the complete rows of a partition with the coding fixed on the template.

    Attributes
    ----------
    spec : FormulaSpec
    needed : tuple of str
        The columns the formula uses.
    fixed_matrix : object
        formulae's population-level matrix, from the template.
    term_matrices : tuple of tuple
        Per factor, formulae's matrices of its terms, from the template.
    coders : tuple of LevelCoder
        Per factor, its levels (over the whole data).
    layout : Layout
    p : int
        Number of population-level columns.
    """

    spec: FormulaSpec
    needed: tuple[str, ...]
    fixed_matrix: Any
    term_matrices: tuple[tuple[Any, ...], ...]
    coders: tuple[LevelCoder, ...]
    layout: Layout
    p: int

    def complete(self, part: pd.DataFrame) -> pd.DataFrame:
        frame = part.loc[:, list(self.needed)]
        return frame.loc[frame.notna().all(axis=1).to_numpy()].reset_index(drop=True)

    def response(self, frame: pd.DataFrame) -> np.ndarray:
        """(n,) response of complete rows."""
        if self.spec.response in frame.columns:
            return frame[self.spec.response].to_numpy(dtype=float)
        dm = fm.design_matrices(f"{self.spec.response} ~ 1", frame, na_action="pass",
                                extra_namespace=FORMULA_FUNCTIONS)
        return np.asarray(np.asarray(dm.response), dtype=float).reshape(-1)

    def rows(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray]]:
        """X, y, per factor the level index and the term values, of complete rows."""
        X = np.asarray(np.asarray(self.fixed_matrix.evaluate_new_data(frame)), dtype=float)
        if self.spec.intercept == "centred":
            X = X[:, 1:]
        indexes = [coder.codes(frame) for coder in self.coders]
        if any((idx < 0).any() for idx in indexes):  # the scan saw every level: data changed between passes
            raise DataError("A partition holds a grouping level the first pass did not see; "
                            "did the data change while fitting?")
        Zs = [np.concatenate([np.asarray(np.asarray(m.evaluate_new_data(frame)), dtype=float) for m in mats],
                             axis=1) for mats in self.term_matrices]
        return X, self.response(frame), indexes, Zs

    def empty_rows(self) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray]]:
        """What :meth:`rows` returns for a partition without complete rows."""
        qs = [sum(m.design_matrix.shape[1] for m in mats) for mats in self.term_matrices]
        return (np.zeros((0, self.p)), np.zeros(0), [np.zeros(0, dtype=np.int64)] * len(qs),
                [np.zeros((0, q)) for q in qs])

    def _empty(self) -> PartialSums:
        return PartialSums(reduce_rows(self.layout, *self.empty_rows()), np.zeros(self.p), 0)

    def __call__(self, part: pd.DataFrame) -> PartialSums:
        frame = self.complete(part)
        if len(frame) == 0:  # formulae cannot evaluate zero rows
            return self._empty()
        X, y, indexes, Zs = self.rows(frame)
        finite = np.isfinite(y)
        absmax = np.abs(X).max(axis=0) if X.shape[1] else np.zeros(0)
        return PartialSums(reduce_rows(self.layout, X, y, indexes, Zs), absmax, int((~finite).sum()))


@dataclass(frozen=True, eq=False)
class RowSource:
    """A Dask fit's rows, left where they are: the lazy frame and the coding fixed when fitting.

    :meth:`map_rows` goes over them once more, partition by partition, for
    what needs every row (PSIS-LOO in :mod:`lmmbayes.compare`).
    """

    frame: Any
    evaluator: RowEvaluator

    def map_rows(self, fn: Callable[..., Any], combine: Callable[[Any, Any], Any]) -> Any:
        """``fn(X, y, indexes, Zs)`` on the complete rows of every partition, merged by ``combine``."""
        return map_reduce(self.frame, _OnRows(self.evaluator, fn), combine)


@dataclass(frozen=True)
class _OnRows:
    """``fn(*evaluator.rows(...))`` of one partition: picklable, unlike a lambda."""

    evaluator: RowEvaluator
    fn: Callable[..., Any]

    def __call__(self, part: pd.DataFrame) -> Any:
        frame = self.evaluator.complete(part)
        return self.fn(*(self.evaluator.rows(frame) if len(frame) else self.evaluator.empty_rows()))


@dataclass(frozen=True)
class _OnResponse:
    """``outer(evaluator.response(evaluator.complete(part)))``: picklable, unlike a lambda."""

    evaluator: RowEvaluator
    outer: Callable[[np.ndarray], Any]

    def __call__(self, part: pd.DataFrame) -> Any:
        return self.outer(self.evaluator.response(self.evaluator.complete(part)))


# -- pass 3: exact median and MAD ------------------------------------------------------------


def _float_keys(values: np.ndarray) -> np.ndarray:
    """uint64 keys ordered as the float64 values (IEEE 754: flip negatives, set the sign of the rest)."""
    bits = np.ascontiguousarray(values, dtype=np.float64).view(np.uint64)
    negative = (bits >> np.uint64(63)).astype(bool)
    return np.where(negative, ~bits, bits | np.uint64(1 << 63))


@dataclass(frozen=True)
class _Bucket:
    """The values whose keys start with the ``bits`` bits ``prefix``."""

    prefix: int = 0
    bits: int = 0

    def mask(self, keys: np.ndarray) -> np.ndarray:
        if self.bits == 0:
            return np.ones(keys.shape, dtype=bool)
        return (keys >> np.uint64(64 - self.bits)) == np.uint64(self.prefix)

    def child(self, digit: int) -> _Bucket:
        return _Bucket((self.prefix << _RADIX_BITS) | digit, self.bits + _RADIX_BITS)


@dataclass(frozen=True)
class _Histogram:
    """Counts of the next 16 bits of the keys in each bucket (one pass)."""

    values: Callable[[Any], np.ndarray]
    buckets: tuple[_Bucket, ...]

    def __call__(self, chunk: Any) -> np.ndarray:
        keys = _float_keys(self.values(chunk))
        out = np.zeros((len(self.buckets), 1 << _RADIX_BITS), dtype=np.int64)
        for k, b in enumerate(self.buckets):
            digits = (keys[b.mask(keys)] >> np.uint64(64 - b.bits - _RADIX_BITS)) & np.uint64(0xFFFF)
            out[k] = np.bincount(digits.astype(np.int64), minlength=1 << _RADIX_BITS)
        return out


@dataclass(frozen=True)
class _Collect:
    """The values in each bucket (one pass)."""

    values: Callable[[Any], np.ndarray]
    buckets: tuple[_Bucket, ...]

    def __call__(self, chunk: Any) -> tuple[np.ndarray, ...]:
        v = np.asarray(self.values(chunk), dtype=float)
        keys = _float_keys(v)
        return tuple(v[b.mask(keys)] for b in self.buckets)


def _add(a: Any, b: Any) -> Any:
    return a + b


def _concat(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    return tuple(np.concatenate([x, y]) for x, y in zip(a, b))


Runner = Callable[[Callable[[Any], Any], Callable[[Any, Any], Any]], Any]
"""``run(fn, combine)``: ``fn`` on every chunk of the data, results merged by ``combine``."""


def select_ranks(run: Runner, values: Callable[[Any], np.ndarray], n: int,
                 ranks: Sequence[int]) -> dict[int, float]:
    """The values of the given ranks (0-based, ascending) among ``n`` values held in chunks.

    Each rank's bucket of candidate keys narrows by 16 bits per histogram
    pass until it holds at most :data:`COLLECT_MAX` values, which one more
    pass collects and sorts. Exact: the result is a value of the data.
    """
    state = {r: (_Bucket(), n, r) for r in ranks}  # rank -> (bucket, values in it, rank within it)
    while True:
        open_buckets = tuple(dict.fromkeys(b for b, count, _ in state.values()
                                           if count > COLLECT_MAX and b.bits < 64))
        if not open_buckets:
            break
        counts = run(_Histogram(values, open_buckets), _add)
        for r, (b, count, within) in list(state.items()):
            if b in open_buckets:
                cum = np.cumsum(counts[open_buckets.index(b)])
                digit = int(np.searchsorted(cum, within, side="right"))
                below = int(cum[digit - 1]) if digit else 0
                state[r] = (b.child(digit), int(cum[digit]) - below, within - below)
    buckets = tuple(dict.fromkeys(b for b, _, _ in state.values()))
    found = run(_Collect(values, buckets), _concat)
    out = {}
    for r, (b, _, within) in state.items():
        out[r] = float(np.partition(found[buckets.index(b)], within)[within])
    return out


def _median(run: Runner, values: Callable[[Any], np.ndarray], n: int) -> float:
    """numpy's median: the middle value, or the mean of the two middle values."""
    ranks = [n // 2] if n % 2 else [n // 2 - 1, n // 2]
    got = select_ranks(run, values, n, ranks)
    return float(np.mean([got[r] for r in ranks]))


@dataclass(frozen=True)
class _AbsDeviation:
    values: Callable[[Any], np.ndarray]
    centre: float

    def __call__(self, chunk: Any) -> np.ndarray:
        return np.abs(self.values(chunk) - self.centre)


def median_and_mad(run: Runner, values: Callable[[Any], np.ndarray], n: int) -> tuple[float, float]:
    """Exact median and R's ``mad()`` (1.4826 × median absolute deviation) of chunked values.

    Equal, bit for bit, to ``numpy.median`` and :func:`lmmbayes.design.r_mad`
    of the values in one array.
    """
    if n <= COLLECT_MAX:  # one pass: everything in one place
        y = run(_Collect(values, (_Bucket(),)), _concat)[0]
        med = float(np.median(y))
        return med, float(1.4826 * np.median(np.abs(y - med)))
    med = _median(run, values, n)
    return med, float(1.4826 * _median(run, _AbsDeviation(values, med), n))


def _identity(values: np.ndarray) -> np.ndarray:
    return values


# -- the design -------------------------------------------------------------------------------


def _empty_factor(name: str, variables: tuple[str, ...], coder: LevelCoder, terms: tuple[str, ...],
                  blocks: tuple[tuple[int, ...], ...], matrices: tuple[Any, ...]) -> Factor:
    return Factor(name, variables, coder.levels, np.zeros(0, dtype=np.int64), terms, blocks,
                  np.zeros((0, len(terms))), matrices)


def build_dask_design(spec: FormulaSpec, ddf: Any) -> Design:
    """Reduce a Dask DataFrame to a :class:`~lmmbayes.design.Design` that holds no rows.

    Same checks, warnings and coding as :func:`lmmbayes.design.build_design`
    on the same data in memory: rows with a missing value in a column the
    formula uses are dropped with a DataWarning (``dropped_index`` keeps the
    labels of the first :data:`MAX_DROPPED_LABELS`); ``ddf`` is not modified.

    Raises
    ------
    DataError, FormulaError
    FitError
        If the collapsed engine does not apply to the model.
    """
    if not spec.factors:
        raise FitError(f"A Dask DataFrame can only be fitted by the collapsed engine, which does not apply "
                       f"to {spec.formula!r}: the model has no group-level terms.")
    needed = formula_variables(spec)
    _check_columns(ddf, needed, spec)
    frame = ddf[needed]
    grouping = tuple(dict.fromkeys(v for g in spec.groups for v in g.factor_vars))
    categorical = categorical_variables(spec, frame.dtypes)
    scan = map_reduce(frame, Scanner(tuple(needed), categorical, grouping), _add)
    _check_scan(scan, needed)
    template = template_frame(scan.sample, scan.values)
    check_response(spec, template)
    _, _, coef_names, fixed_matrix = fixed_part(spec, template)

    factors, proxies, coders, matrices = [], [], [], []
    for name in spec.factors:
        variables = factor_variables(spec, name)
        coder, combo_index = LevelCoder.fit(scan.combos, variables)
        check_levels(name, coder.levels)
        terms, blocks, _, mats = factor_terms(spec, name, template)
        factor = _empty_factor(name, variables, coder, terms, blocks, mats)
        factors.append(factor)
        proxies.append(Factor(name, variables, coder.levels, combo_index, terms, blocks, factor.Z, mats))
        coders.append(coder)
        matrices.append(mats)
    # Nesting depends only on which level combinations occur: the distinct combinations suffice.
    layout, why = layout_of(proxies)
    if layout is None:
        raise FitError(f"A Dask DataFrame can only be fitted by the collapsed engine, which does not "
                       f"apply to {spec.formula!r}: {why}.")

    evaluator = RowEvaluator(spec, tuple(needed), fixed_matrix, tuple(matrices), tuple(coders), layout,
                             len(coef_names))
    partial = map_reduce(frame, evaluator, _add)
    if partial.n_nonfinite:
        raise nonfinite_response_error(spec)

    def run(fn: Callable[[Any], Any], combine: Callable[[Any, Any], Any]) -> Any:
        return map_reduce(frame, _OnResponse(evaluator, fn), combine)

    median, mad = median_and_mad(run, _identity, partial.sums.n)
    centre = spec.intercept == "centred"
    sums = partial.sums.recentred(partial.sums.means if centre else np.zeros(partial.sums.shift.size))
    p = len(coef_names)
    warn_collinearity(*collinear_columns_from_gram(sums.VtV[1:p + 1, 1:p + 1], partial.x_absmax,
                                                   coef_names, centre))
    return Design(
        spec=spec,
        y=np.zeros(0),
        X=np.zeros((0, p)),
        coef_names=coef_names,
        factors=tuple(factors),
        n_dropped=scan.n_dropped,
        dropped_index=scan.dropped,
        fixed_matrix=fixed_matrix,
        reduced=ReducedRows(partial.sums, median, mad, partial.x_absmax, RowSource(frame, evaluator)),
    )
