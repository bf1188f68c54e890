"""Additive cross-products of a design's rows: all the collapsed engine needs of the data.

The marginal likelihood of a Gaussian LMM depends on the data only through
sums over rows (``shared/design/COLLAPSED_LMM.md``). `RowSums` holds
those sums for ``v = [1, x − c, y − c_y]`` (the population-level columns and
the response, each shifted by a constant ``c``) and, per grouping factor and
level, the sums of ``Z_i Z_i'`` and ``Z_i v_i'``. Sums of disjoint chunks of
rows (slices of an in-memory design, partitions of a Dask frame) add up
exactly, so the data never has to be in one place.

Why the shift: a chunk is summed around its own column means, and two chunks
are merged after moving both to their pooled mean (Chan, Golub and LeVeque's
parallel update of sums of squares, extended to all cross-products). Sums of
raw values (``Σxx' − N x̄x̄'``) lose every digit the data carry above their
spread: a response of 10⁶ ± 1 would keep four.

This module is numpy only; `lmmbayes.engines.collapsed` turns the sums
into its likelihood and `lmmbayes.design.dask` computes them on Dask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Largest total number of random effects for which crossed factors are collapsed with one dense m × m
#: matrix (every gradient costs its Cholesky); with more, the factor with the most effects is integrated
#: out and the others' effects are sampled (the "partial" layout). Measured (benchmarks/cases.py, 4 chains
#: x 1000 draws, end to end with compile): the dense route's min-ESS/s was 27x the joint engine's at 30
#: effects (Penicillin, whose joint fit diverges 28 times), 6x at 60, 1.2x at 150: a dense Cholesky per
#: gradient costs O(m³) and overtakes the joint engine's O(N) gathers soon after 100.
DENSE_MAX = 100


# -- which sums a model needs ----------------------------------------------------


@dataclass(frozen=True, eq=False)
class Layout:
    """The structure of the random effects, which fixes the sums to take.

    Attributes
    ----------
    kind : {"one", "nested", "dense", "partial"}
        One grouping factor; two nested ones; crossed factors with at most
        `DENSE_MAX` effects in all (a dense A); crossed factors with more
        (the largest integrated out, the others sampled).
    levels : tuple of int
        Number of levels per factor, in design order.
    pairs : tuple of (int, int)
        Factor pairs ``(left, right)`` whose joint sums ``Σ Z_left Z_right'``
        are needed: for "nested" ``((inner, outer),)``, summed per inner level
        (an inner level lies in one outer level); for "dense" and "partial"
        every pair ``left < right``, summed per pair of levels (dense arrays
        for "dense", `SparsePairSums` for "partial": crossed levels share
        few pairs).
    parent : numpy.ndarray or None
        "nested" only: the outer level of each inner level.
    """

    kind: str
    levels: tuple[int, ...]
    pairs: tuple[tuple[int, int], ...] = ()
    parent: np.ndarray | None = None

    def pair_key(self, left: int, right: int, indexes: Sequence[np.ndarray]) -> tuple[np.ndarray, int]:
        """Per row, the bucket of the pair's joint sums, and the number of buckets."""
        if self.kind == "nested":
            return indexes[left], self.levels[left]
        return indexes[left] * self.levels[right] + indexes[right], self.levels[left] * self.levels[right]


def nested_parent(outer_index: np.ndarray, inner_index: np.ndarray, n_inner: int) -> np.ndarray | None:
    """(n_inner,) outer level holding each inner level, or None if ``inner`` is not nested in ``outer``."""
    parent = np.zeros(n_inner, dtype=np.int64)
    parent[inner_index] = outer_index
    return parent if np.array_equal(parent[inner_index], outer_index) else None


def layout_of(names: Sequence[str], indexes: Sequence[np.ndarray], levels: Sequence[int],
              qs: Sequence[int]) -> tuple[Layout | None, str]:
    """The layout for grouping factors with these level indexes (of any rows holding every combination of
    levels that occurs), or None and the reason the collapsed engine does not apply."""
    if not names:
        return None, "the model has no group-level terms"
    if len(names) == 1:
        return Layout("one", tuple(levels)), ""
    if len(names) == 2:
        for outer, inner in ((0, 1), (1, 0)):
            parent = nested_parent(indexes[outer], indexes[inner], levels[inner])
            if parent is not None:
                return Layout("nested", tuple(levels), ((inner, outer),), parent), ""
    m = sum(g * q for g, q in zip(levels, qs))
    pairs = tuple((i, j) for j in range(len(names)) for i in range(j))
    return Layout("dense" if m <= DENSE_MAX else "partial", tuple(levels), pairs), ""


# -- the sums ----------------------------------------------------------------------


def level_sums(index: np.ndarray, n_levels: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """(n_levels, a, b) sums over rows of ``left[i, :, None] * right[i, None, :]`` per level ``index[i]``."""
    a, b = left.shape[1], right.shape[1]
    out = np.empty((n_levels, a, b))
    for i in range(a):
        for j in range(b):
            out[:, i, j] = np.bincount(index, weights=left[:, i] * right[:, j], minlength=n_levels)
    return out


def _symmetric_level_sums(index: np.ndarray, n_levels: int, Z: np.ndarray) -> np.ndarray:
    """`level_sums` of ``Z`` with itself, summing each off-diagonal pair once."""
    q = Z.shape[1]
    out = np.empty((n_levels, q, q))
    for i in range(q):
        for j in range(i + 1):
            out[:, i, j] = out[:, j, i] = np.bincount(index, weights=Z[:, i] * Z[:, j], minlength=n_levels)
    return out


@dataclass(frozen=True, eq=False)
class FactorSums:
    """Per-level sums of one grouping factor.

    Attributes
    ----------
    ZtZ : (G, q, q) array
        Σ over a level's rows of Z_i Z_i'.
    ZtV : (G, q, k + 1) array
        Σ over a level's rows of Z_i v_i', ``v_i = [1, x_i − c_x, y_i − c_y]``.
    """

    ZtZ: np.ndarray
    ZtV: np.ndarray


@dataclass(frozen=True, eq=False)
class RowSums:
    """Cross-products of the rows, additive over disjoint chunks of rows.

    Attributes
    ----------
    layout : Layout
    n : int
        Number of rows.
    shift : (k,) array
        The constants ``c`` subtracted from the p population-level columns and
        the response (last).
    VtV : (k + 1, k + 1) array
        Σ w_i v_i v_i' with ``v_i = [1, x_i − c_x, y_i − c_y]`` and row
        weights w_i (1 without ``weights()``): its first row holds the total
        weight (n when unweighted) and the weighted shifted column sums.
    factors : tuple of FactorSums
    pairs : tuple of arrays or SparsePairSums
        Per ``layout.pairs`` entry, the (buckets, q_left, q_right) joint sums
        (for the "partial" layout, `SparsePairSums`).
    """

    layout: Layout
    n: int
    shift: np.ndarray
    VtV: np.ndarray
    factors: tuple[FactorSums, ...]
    pairs: tuple[Any, ...]

    @property
    def weight(self) -> float:
        """The total weight of the rows: n without ``weights()``, Σ w_i with them."""
        return float(self.VtV[0, 0]) if self.n else 0.0

    @property
    def means(self) -> np.ndarray:
        """(k,) (weighted) column means of the population-level columns and the response."""
        return self.shift + self.VtV[0, 1:] / self.weight

    @property
    def response_sd(self) -> float:
        """(Weighted) standard deviation of the response (divisor the total weight, as ``numpy.std``)."""
        centred = self.recentred(np.append(self.shift[:-1], self.means[-1]))
        return float(np.sqrt(max(centred.VtV[-1, -1], 0.0) / self.weight))

    def _transformed(self, T: np.ndarray, shift: np.ndarray) -> RowSums:
        """The sums of ``v @ T`` (a linear map of every row's v), with the new shift."""
        factors = tuple(FactorSums(f.ZtZ, f.ZtV @ T) for f in self.factors)
        return RowSums(self.layout, self.n, shift, T.T @ self.VtV @ T, factors, self.pairs)

    def recentred(self, shift: np.ndarray) -> RowSums:
        """The same sums with the columns shifted by ``shift`` instead (exact algebra)."""
        shift = np.asarray(shift, dtype=float)
        delta = shift - self.shift
        if not delta.any():
            return self
        T = np.eye(delta.size + 1)
        T[0, 1:] = -delta  # v_j − δ_j · 1
        return self._transformed(T, shift)

    def rescaled_response(self, shift: float, scale: float) -> RowSums:
        """The sums for the response ``(y − shift) / scale``."""
        D = np.ones(self.VtV.shape[0])
        D[-1] = 1.0 / scale
        new_shift = self.shift.copy()
        new_shift[-1] = (self.shift[-1] - shift) / scale
        return self._transformed(np.diag(D), new_shift)

    def standardised(self, centre: np.ndarray, scale: np.ndarray, z_scales: Sequence[np.ndarray]) -> RowSums:
        """The sums of the standardised variables ``(w − centre) / scale`` (``w`` the population-level
        columns and the response) and of each factor's Z divided by ``z_scales`` (exact algebra)."""
        centre, scale = np.asarray(centre, dtype=float), np.asarray(scale, dtype=float)
        D = np.concatenate([[1.0], 1.0 / scale])
        shift = (self.shift - centre) / scale
        dz = [1.0 / np.asarray(z, dtype=float) for z in z_scales]
        factors = tuple(FactorSums(f.ZtZ * np.outer(d, d), (f.ZtV * D[None, None, :]) * d[None, :, None])
                        for f, d in zip(self.factors, dz))
        pairs = tuple(p.scaled(dz[left], dz[right]) if isinstance(p, SparsePairSums)
                      else p * np.outer(dz[left], dz[right])[None]
                      for (left, right), p in zip(self.layout.pairs, self.pairs))
        return RowSums(self.layout, self.n, shift, self.VtV * np.outer(D, D), factors, pairs)

    def __add__(self, other: RowSums) -> RowSums:
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        a, b = self, other
        if not np.array_equal(a.shift, b.shift):
            # Pool around the combined mean so that neither chunk's sums lose digits.
            pooled = (a.weight * a.means + b.weight * b.means) / (a.weight + b.weight)
            a, b = a.recentred(pooled), b.recentred(pooled)
        factors = tuple(FactorSums(f.ZtZ + g.ZtZ, f.ZtV + g.ZtV) for f, g in zip(a.factors, b.factors))
        return RowSums(a.layout, a.n + b.n, a.shift, a.VtV + b.VtV, factors,
                       tuple(x + y for x, y in zip(a.pairs, b.pairs)))


def gaussian_response(normal: tuple[np.ndarray, np.ndarray] | None, y: np.ndarray,
                      offset: np.ndarray | None) -> np.ndarray:
    """The response a Gaussian model's cross-products sum: ``t(y) − offset``.

    ``normal`` is the family's `Family.normal_response` of ``y`` (``log y`` for
    lognormal); where it is None (families not normal on any scale) ``y`` stands.
    """
    t = y if normal is None else normal[0]
    return t - offset if offset is not None else t


def log_jacobian(normal: tuple[np.ndarray, np.ndarray] | None, weights: np.ndarray | None) -> float:
    """``Σ w_i log t'(y_i)`` of the family's normal scale (`gaussian_response`; 0 where it is None)."""
    if normal is None:
        return 0.0
    return float(normal[1].sum() if weights is None else np.asarray(weights, dtype=float) @ normal[1])


def gaussian_weights(weights: np.ndarray | None, se: np.ndarray | None) -> np.ndarray | None:
    """The row weights of the cross-products of a Gaussian model: ``weights()`` times 1/se² for ``se()``.

    With ``se(s)`` (σ fixed at 0) row i is N(η_i, s_i²): a row of weight 1/s_i²
    under a residual SD fixed at 1 (data units), up to a constant. ``weights()``
    multiply each row's log density, so the two weights multiply.
    """
    if se is None:
        return weights
    inv = 1.0 / np.square(np.asarray(se, dtype=float))
    return inv if weights is None else np.asarray(weights, dtype=float) * inv


def reduce_rows(layout: Layout, X: np.ndarray, y: np.ndarray, indexes: Sequence[np.ndarray],
                Zs: Sequence[np.ndarray], shift: np.ndarray | None = None,
                weights: np.ndarray | None = None) -> RowSums:
    """The sums of one chunk of rows.

    Parameters
    ----------
    layout : Layout
    X : (n, p) array, y : (n,) array
        Population-level columns (uncentred, without a centred intercept) and response.
    indexes : sequence of (n,) int arrays
        Per factor, each row's level.
    Zs : sequence of (n, q_f) arrays
        Per factor, each row's term values.
    shift : (p + 1,) array, optional
        Constants subtracted from ``[X, y]``; their column means by default.
    weights : (n,) array, optional
        brms's ``weights()``: each row's log-likelihood is multiplied by its
        weight, which for a Gaussian is a row of precision w_i / σ² (and
        σ's power Σ w_i, not n). Scaling v_i and Z_i by √w_i makes every
        cross-product weighted; the total weight is then ``VtV[0, 0]``.
    """
    n = y.shape[0]
    XY = np.column_stack([X, y]) if n else np.zeros((0, X.shape[1] + 1))
    if shift is None:
        shift = np.average(XY, axis=0, weights=weights) if n else np.zeros(XY.shape[1])
    V = np.column_stack([np.ones(n), XY - shift])
    if weights is not None and n:
        root = np.sqrt(np.asarray(weights, dtype=float))
        V = V * root[:, None]
        Zs = [Z * root[:, None] for Z in Zs]
    factors = tuple(
        FactorSums(_symmetric_level_sums(idx, G, Z), level_sums(idx, G, Z, V))
        for idx, G, Z in zip(indexes, layout.levels, Zs)
    )
    pairs: list[Any] = []
    for left, right in layout.pairs:
        if layout.kind == "partial":
            pairs.append(sparse_pair_sums(indexes[left], Zs[left], layout.levels[left], indexes[right], Zs[right],
                                          layout.levels[right]))
            continue
        key, size = layout.pair_key(left, right, indexes)
        pairs.append(level_sums(key, size, Zs[left], Zs[right]))
    return RowSums(layout, int(n), np.asarray(shift, dtype=float), V.T @ V, factors, tuple(pairs))


@dataclass(frozen=True, eq=False)
class SparsePairSums:
    """Σ over rows of ``w_i Z_left,i Z_right,i'`` for the pairs of levels that share rows, in coordinates.

    Crossed factors share few level pairs (at most one per row), so the
    cross-products of two factors are kept sparse: entry ``k`` is at row
    ``level_l * q_l + i`` and column ``level_r * q_r + j`` of the
    ``(G_l q_l) x (G_r q_r)`` matrix, duplicates summed.
    """

    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    shape: tuple[int, int]

    def matrix(self) -> Any:
        """As a scipy CSR matrix."""
        import scipy.sparse as sp

        return sp.csr_matrix((self.values, (self.rows, self.cols)), shape=self.shape)

    @property
    def T(self) -> SparsePairSums:
        """The sums of the pair the other way round (Σ Z_right Z_left')."""
        return SparsePairSums(self.cols, self.rows, self.values, (self.shape[1], self.shape[0]))

    def scaled(self, d_left: np.ndarray, d_right: np.ndarray) -> SparsePairSums:
        """The sums of ``Z_left`` times ``d_left`` and ``Z_right`` times ``d_right``, term by term."""
        q_l, q_r = d_left.size, d_right.size
        values = self.values * d_left[self.rows % q_l] * d_right[self.cols % q_r]
        return SparsePairSums(self.rows, self.cols, values, self.shape)

    def __add__(self, other: SparsePairSums) -> SparsePairSums:
        """The sums of two disjoint chunks of rows: their entries, a level pair both hold summed once."""
        return _coalesced(np.concatenate([self.rows, other.rows]), np.concatenate([self.cols, other.cols]),
                          np.concatenate([self.values, other.values]), self.shape)


def _coalesced(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, shape: tuple[int, int]) -> SparsePairSums:
    """`SparsePairSums` of coordinates, duplicates summed, in row-major order."""
    import scipy.sparse as sp

    M = sp.coo_matrix((values, (rows, cols)), shape=shape).tocsr().tocoo()
    return SparsePairSums(M.row.astype(np.int64), M.col.astype(np.int64), M.data.astype(float), shape)


def sparse_pair_sums(idx_l: np.ndarray, Z_l: np.ndarray, n_l: int, idx_r: np.ndarray, Z_r: np.ndarray,
                     n_r: int) -> SparsePairSums:
    """`SparsePairSums` of two factors from rows: level indexes and term values (n, q), already scaled by the
    rows' √weights (`reduce_rows`)."""
    q_l, q_r = Z_l.shape[1], Z_r.shape[1]
    rows = np.broadcast_to(idx_l[:, None, None] * q_l + np.arange(q_l)[None, :, None], (idx_l.size, q_l, q_r))
    cols = np.broadcast_to(idx_r[:, None, None] * q_r + np.arange(q_r)[None, None, :], (idx_l.size, q_l, q_r))
    values = Z_l[:, :, None] * Z_r[:, None, :]
    return _coalesced(rows.ravel(), cols.ravel(), values.ravel(), (n_l * q_l, n_r * q_r))


# -- what a design without rows keeps of them ----------------------------------------


@dataclass(frozen=True, eq=False)
class ReducedRows:
    """The rows of a design reduced to sums (Dask input): what the collapsed engine needs of them.

    Attributes
    ----------
    sums : RowSums
        Of the population-level columns and the response less its offset.
    source : RowSource or None
        The lazy Dask frame and its encoder, to go over the rows again when
        asked (PSIS-LOO); not saved with the fit, so None after loading.
    """

    sums: RowSums
    source: Any = field(default=None, compare=False, repr=False)
