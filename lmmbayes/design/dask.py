"""Dask DataFrames: reduce the rows partition by partition, fit from the sums.

``lmmbayes.fit(formula, ddf, ...)`` with a Dask DataFrame builds, with
`build_dask_design`, a `Design` that holds no
rows (``design.rows_in_memory`` is False) but the cross-products the
collapsed engine needs (`RowSums`), so the
data may be larger than memory or live on a Dask cluster; the sampler never
sees N rows. Only the collapsed engine fits such a design.

The work runs on whatever Dask scheduler is active (a ``distributed.Client``
if one is open) in a few passes over the data; each reads every partition
again, so call ``ddf.persist()`` first where the cluster can hold the data.

1. scan: rows, missing and infinite values, the distinct values of the
   categorical columns, the distinct combinations of the grouping columns
   and a few complete rows;
2. sums: the one row encoder (`.encoder`), learnt on a small template
   frame that holds every category, encodes each partition exactly as the
   whole data would be encoded, and `reduce_rows` sums it
   around its own means; partial sums are merged in a tree;
3. the median and MAD of the response for brms's default priors, exactly:
   with at most `COLLECT_MAX` rows one pass collects the response,
   otherwise a radix selection on the bits of the floats narrows the middle
   values down 16 bits per pass (typically two passes each for median and MAD).

The defaults therefore equal those of the same data in memory, digit for
digit. Transforms fitted on the whole column (``scale()``, ``center()``,
``standardize()``, ``poly()``, ``bs()``) are refused: compute them with Dask
before fitting.

Dask is imported only when a Dask frame is fitted; ``import lmmbayes`` does
not import it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import reduce
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError, FitError, FormulaError
from ..families import Family
from ..spec import Call, Column, FormulaSpec
from .build import Design, Stats
from .checks import collinear_columns_from_gram, warn_collinearity
from .crossprod import (Layout, ReducedRows, RowSums, gaussian_response, gaussian_weights, layout_of, log_jacobian,
                        reduce_rows)
from .encoder import RowEncoder, Rows, learn_encoder
from .fingerprint import ResponseHash
from .predictors import Moments, predictor_roles, predictors_from_moments
from .frame import (
    check_columns,
    check_dtype,
    has_infinite,
    to_numpy_dtypes,
    warn_dropped,
)
from .transforms import stateful_calls

#: Largest number of response values collected in one place to take the
#: median and MAD directly (8 MB of float64); larger responses use a radix
#: selection over several passes.
COLLECT_MAX = 1 << 20

#: Most index labels of dropped rows kept for ``Fit.dropped_rows``.
MAX_DROPPED_LABELS = 100_000

#: Partial results merged per task of the tree reduction.
SPLIT_EVERY = 8

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
    function object such as a `PartitionReducer` is shipped to each
    worker only once. Partitions are merged in their order.
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
        Index labels of dropped rows (the first `MAX_DROPPED_LABELS`).
    infinite : frozenset of str
        Numeric columns holding ±inf.
    values : dict of str to pandas.DataFrame
        Distinct values, among complete rows, of every categorical column
        (a one-column frame each).
    combos : pandas.DataFrame
        Distinct combinations of the grouping columns among complete rows.
    sample : pandas.DataFrame
        A few complete rows (from the first partition that has any).
    moments : dict of str to Moments
        Count, mean, spread, minimum and maximum, among complete rows, of
        every numeric column (for `Predictors`).
    """

    n_rows: int
    n_dropped: int
    dropped: tuple[Any, ...]
    infinite: frozenset[str]
    values: dict[str, pd.DataFrame]
    combos: pd.DataFrame
    sample: pd.DataFrame
    moments: dict[str, Moments] = field(default_factory=dict)

    def __add__(self, other: Scan) -> Scan:
        return Scan(
            self.n_rows + other.n_rows,
            self.n_dropped + other.n_dropped,
            (self.dropped + other.dropped)[:MAX_DROPPED_LABELS],
            self.infinite | other.infinite,
            {k: _distinct_rows(v, other.values[k]) for k, v in self.values.items()},
            _distinct_rows(self.combos, other.combos),
            self.sample if len(self.sample) else other.sample,
            {k: v + other.moments[k] for k, v in self.moments.items()},
        )


@dataclass(frozen=True)
class Scanner:
    """Pass 1 on one partition."""

    needed: tuple[str, ...]
    categorical: tuple[str, ...]
    grouping: tuple[str, ...]
    sample_rows: int = 5
    numeric: tuple[str, ...] = ()

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
            moments={c: Moments.of(kept[c].to_numpy(dtype=float)) for c in self.numeric},
        )


def _categorical_columns(spec: FormulaSpec, dtypes: pd.Series) -> tuple[str, ...]:
    """Columns a design codes as categories: non-numeric or boolean ones, and any inside C() or factor()."""
    names = [c for c, t in dtypes.items() if not pd.api.types.is_numeric_dtype(t) or pd.api.types.is_bool_dtype(t)]
    terms = list(spec.fixed) + [t for g in spec.groups for t in g.terms]
    for t in terms:
        for e in t.components:
            if isinstance(e, Call) and e.fn in ("C", "factor"):
                names += [e.args[0].name] if isinstance(e.args[0], Column) else []
    return tuple(c for c in dict.fromkeys(names) if c in dtypes.index)


def _check_spec(spec: FormulaSpec, family: Family) -> None:
    if "collapsed" not in family.engines:
        raise FitError(f"A Dask DataFrame can only be fitted by the collapsed engine, which does not fit family "
                       f"{family.name!r}; fit a pandas frame (ddf.compute()) with the joint engine.")
    others = [a + "()" for a in spec.additions.present if a not in ("weights", "se")]
    if spec.additions.se is not None and spec.additions.se_sigma:
        others.append("se(..., sigma = TRUE)")
    if others:
        raise FitError(f"A Dask DataFrame cannot be fitted with the addition term(s) "
                       f"{', '.join(others)} yet; fit a pandas frame.")
    exprs = [spec.response, *spec.offsets] + [e for t in spec.fixed for e in t.components] \
        + [e for g in spec.groups for t in g.terms for e in t.components]
    for e in exprs:
        calls = stateful_calls(e)
        if calls:
            raise FormulaError(f"{calls[0].fn}() in {spec.formula!r} is fitted on the whole column, which a Dask "
                               "frame's partitions do not see; compute the transformed column with Dask before "
                               "fitting.")
    for t in list(spec.fixed) + [t for g in spec.groups for t in g.terms]:
        for e in t.components:
            inner = e.args[0] if isinstance(e, Call) and e.fn in ("C", "factor") else e
            if isinstance(e, Call) and e.fn in ("C", "factor") and not isinstance(inner, Column):
                raise FormulaError(f"'{e}' on a Dask DataFrame: categorical predictors must be columns (or C() of "
                                   "a column); compute the expression with Dask first.")


def template_frame(sample: pd.DataFrame, values: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Complete rows holding every category of every categorical column (the encoder learns on it)."""
    n = max([len(sample), *(len(v) for v in values.values())])
    columns = {}
    for col in sample.columns:
        source = values[col][col] if col in values else sample[col]
        columns[col] = source.iloc[np.arange(n) % len(source)].reset_index(drop=True)
    return pd.DataFrame(columns)


def _check_scan(scan: Scan, needed: tuple[str, ...]) -> None:
    if scan.n_rows == 0:
        raise DataError("data has no rows.")
    for col in needed:
        if col in scan.infinite:
            raise DataError(f"Column '{col}' of data contains infinite values; replace or remove them.")
    if scan.n_dropped == scan.n_rows:
        raise DataError(f"Every row has a missing value in at least one of the columns {list(needed)}; "
                        "nothing is left to fit.")
    if scan.n_dropped:
        note = "" if scan.n_dropped <= MAX_DROPPED_LABELS else f" (the first {MAX_DROPPED_LABELS})"
        warn_dropped(scan.n_dropped, scan.n_rows, note=note)


# -- pass 2: sums --------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PartialSums:
    """Sums of some partitions, with what the checks and statistics need."""

    sums: RowSums
    x_absmax: np.ndarray
    offset_sum: float
    y_hash: ResponseHash
    log_jacobian: float = 0.0

    def __add__(self, other: PartialSums) -> PartialSums:
        return PartialSums(self.sums + other.sums, np.maximum(self.x_absmax, other.x_absmax),
                           self.offset_sum + other.offset_sum, self.y_hash + other.y_hash,
                           self.log_jacobian + other.log_jacobian)


@dataclass(frozen=True, eq=False)
class PartitionReducer:
    """Encodes the complete rows of a partition with the one row encoder and sums them."""

    encoder: RowEncoder
    layout: Layout

    def rows(self, part: pd.DataFrame) -> Rows | None:
        """The encoded complete rows of a partition (None when it has none)."""
        needed = self.encoder.needed(response=True)
        frame = part.loc[:, list(needed)]
        frame = frame.loc[frame.notna().all(axis=1).to_numpy()]
        if len(frame) == 0:
            return None
        rows = self.encoder.encode(to_numpy_dtypes(frame), what="a partition of the data")
        if any((f.index < 0).any() for f in rows.factors):  # the scan saw every level
            raise DataError("A partition holds a grouping level the first pass did not see; did the data change "
                            "while fitting?")
        return rows

    def empty(self) -> PartialSums:
        p = len(self.encoder.coef_names)
        qs = [f.q for f in self.encoder.factors]
        sums = reduce_rows(self.layout, np.zeros((0, p)), np.zeros(0), [np.zeros(0, dtype=np.int64)] * len(qs),
                           [np.zeros((0, q)) for q in qs])
        return PartialSums(sums, np.zeros(p), 0.0, ResponseHash())

    def __call__(self, part: pd.DataFrame) -> PartialSums:
        rows = self.rows(part)
        if rows is None:
            return self.empty()
        y = rows.y if rows.y is not None else np.zeros(rows.n)
        offset = rows.offset if rows.offset is not None else np.zeros(rows.n)
        absmax = np.abs(rows.X).max(axis=0) if rows.X.shape[1] else np.zeros(0)
        normal = self.encoder.family.normal_response(y)
        sums = reduce_rows(self.layout, rows.X, gaussian_response(normal, y, offset), [f.index for f in rows.factors],
                           [f.Z for f in rows.factors], weights=gaussian_weights(rows.weights, rows.extra.se))
        return PartialSums(sums, absmax, float(offset.sum()), ResponseHash.of(y), log_jacobian(normal, rows.weights))


@dataclass(frozen=True, eq=False)
class RowSource:
    """A Dask fit's rows, left where they are: the lazy frame and the encoder fixed when fitting.

    `map_rows` goes over them once more, partition by partition, for
    what needs every row (PSIS-LOO).
    """

    frame: Any
    reducer: PartitionReducer

    def map_rows(self, fn: Callable[[Rows], Any], empty: Any, combine: Callable[[Any, Any], Any]) -> Any:
        """``fn(rows)`` on the encoded complete rows of every partition (``empty`` where none), merged by ``combine``."""
        return map_reduce(self.frame, _OnRows(self.reducer, fn, empty), combine)


@dataclass(frozen=True)
class _OnRows:
    """``fn(reducer.rows(part))`` of one partition: picklable, unlike a lambda."""

    reducer: PartitionReducer
    fn: Callable[[Rows], Any]
    empty: Any

    def __call__(self, part: pd.DataFrame) -> Any:
        rows = self.reducer.rows(part)
        return self.empty if rows is None else self.fn(rows)


@dataclass(frozen=True)
class _OnResponse:
    """``outer(prior response of the partition's rows)``: picklable, unlike a lambda."""

    reducer: PartitionReducer
    outer: Callable[[np.ndarray], Any]

    def __call__(self, part: pd.DataFrame) -> Any:
        rows = self.reducer.rows(part)
        y = np.zeros(0) if rows is None or rows.y is None else rows.y
        values = self.reducer.encoder.family.prior_response(y)
        return self.outer(np.zeros(0) if values is None else values)


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
    pass until it holds at most `COLLECT_MAX` values, which one more
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

    Equal, bit for bit, to ``numpy.median`` and `lmmbayes.families.r_mad`
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


def _stats(sums: RowSums, partial: PartialSums, median: float | None, mad: float | None, p: int,
           centred: bool) -> Stats:
    n, w = sums.n, sums.weight  # rows; their total weight (n without weights()), by which the sums divide
    means = sums.means
    centred_sums = sums.recentred(means)
    var = np.clip(np.diag(centred_sums.VtV)[1:] / w, 0.0, None)
    raw = sums.recentred(np.zeros(sums.shift.size))
    x_rms = np.sqrt(np.clip(np.diag(raw.VtV)[1:p + 1] / w, 0.0, None))
    z_rms = tuple(np.sqrt(np.clip(np.einsum("gii->i", f.ZtZ) / w, 0.0, None)) for f in sums.factors)
    return Stats(
        n_obs=n, y_mean=float(means[-1]), y_sd=float(np.sqrt(var[-1])), prior_median=median, prior_mad=mad,
        offset_mean=partial.offset_sum / n, x_mean=means[:p], x_sd=np.sqrt(var[:p]), x_rms=x_rms, z_rms=z_rms,
        fingerprint=partial.y_hash.text, log_jacobian=partial.log_jacobian,
    )


def build_dask_design(spec: FormulaSpec, family: Family, ddf: Any) -> Design:
    """Reduce a Dask DataFrame to a `Design` that holds no rows.

    Same checks, warnings and encoding as `lmmbayes.design.build_design`
    on the same data in memory: rows with a missing value in a column the
    formula uses are dropped with a DataWarning (``dropped_index`` keeps the
    labels of the first `MAX_DROPPED_LABELS`); ``ddf`` is not modified.

    Raises
    ------
    DataError, FormulaError
    FitError
        If the collapsed engine does not apply to the model.
    """
    if not spec.factors:
        raise FitError(f"A Dask DataFrame can only be fitted by the collapsed engine, which does not apply "
                       f"to {spec.formula!r}: the model has no group-level terms.")
    _check_spec(spec, family)
    needed = spec.variables()
    check_columns(pd.Index(ddf.columns), needed, spec.formula)
    frame = ddf[list(needed)]
    for name in needed:
        check_dtype(frame._meta[name], name)
    grouping = tuple(dict.fromkeys(v for g in spec.groups for v in g.factor_vars))
    categorical = _categorical_columns(spec, frame.dtypes)
    numeric = tuple(c for c, _ in predictor_roles(spec) if c not in categorical)
    scan = map_reduce(frame, Scanner(tuple(needed), categorical, grouping, numeric=numeric), _add)
    _check_scan(scan, needed)
    template = to_numpy_dtypes(template_frame(scan.sample, scan.values))
    combos = to_numpy_dtypes(scan.combos)
    encoder, _ = learn_encoder(spec, family, template,
                               factor_frames={f: combos for f in spec.factors})
    # Nesting depends only on which level combinations occur: the distinct combinations suffice.
    proxies = [f.coder.codes(combos) for f in encoder.factors]
    layout, why = layout_of([f.name for f in encoder.factors], proxies, [f.n_levels for f in encoder.factors],
                            [f.q for f in encoder.factors])
    if layout is None:
        raise FitError(f"A Dask DataFrame can only be fitted by the collapsed engine, which does not "
                       f"apply to {spec.formula!r}: {why}.")
    reducer = PartitionReducer(encoder, layout)
    partial = map_reduce(frame, reducer, _add)

    def run(fn: Callable[[Any], Any], combine: Callable[[Any, Any], Any]) -> Any:
        return map_reduce(frame, _OnResponse(reducer, fn), combine)

    median = mad = None
    if family.prior_response(np.ones(1)) is not None:
        median, mad = median_and_mad(run, _identity, partial.sums.n)
    centre = spec.intercept == "centred"
    sums = partial.sums.recentred(partial.sums.means if centre else np.zeros(partial.sums.shift.size))
    p = len(encoder.coef_names)
    warn_collinearity(*collinear_columns_from_gram(sums.VtV[1:p + 1, 1:p + 1], partial.x_absmax,
                                                   encoder.coef_names, centre))
    stats = _stats(partial.sums, partial, median, mad, p, centre)
    predictors = predictors_from_moments(spec, encoder, scan.moments, scan.values)
    return Design(spec, family, encoder, None, stats, scan.n_dropped, scan.dropped,
                  ReducedRows(sums, RowSource(frame, reducer)), predictors=predictors)
