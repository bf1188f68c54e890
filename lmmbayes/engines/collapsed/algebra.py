"""The collapsed Gaussian algebra: the marginal likelihood from cross-products, and exact draws.

For a Gaussian LMM ``y = Wβ + Zb + ε`` with ``b = Λu``, ``u ~ N(0, I)`` and
``ε ~ N(0, σ²I)``, the marginal likelihood of ``y`` given (β, σ, Λ) needs
only cross-products of the data (see ``shared/design/COLLAPSED_LMM.md``):

    A = I + Λ'Z'ZΛ/σ² = L_A L_A',   c = Λ'(Z'y − Z'Wβ),   v = L_A⁻¹c
    log p(y) = −½ [N log 2πσ² + log|A| + (r'r − ‖v‖²/σ²)/σ²]

NUTS samples the handful of hyperparameters under this likelihood, and the
random effects are then drawn exactly, one independent draw per posterior
draw: ``u | y ~ N(A⁻¹c/σ², A⁻¹)``, ``b = Λu``.

Here ``W`` is ``[1, X − x̄]`` (the centred intercept is a column of ones)
and the data are reduced once to per-level cross-products
(`lmmbayes.design.crossprod`): in numpy for an in-memory design, or
partition by partition on Dask (`lmmbayes.design.dask`), which hands
over a design that holds only the sums. This module is the algebra alone, in
whatever units it is given (the engine gives it standardised ones). Four structures are
handled:

- `OneFactor` (one grouping factor): one q × q block per level;
- `NestedPair` (two factors, one nested in the other, ``(1|a/b)``):
  block diagonal by the outer level, factored by a Schur complement on the
  inner levels, so the cost stays linear in the number of levels;
- `DenseEffects` (anything else, e.g. crossed factors) while the total
  number of random effects is at most `lmmbayes.design.crossprod.DENSE_MAX`: a dense Cholesky;
- `PartlyCollapsed` (crossed factors with more effects): the factor with
  the most effects integrated out, the others' effects sampled by NUTS; its
  cross-products with the other factors are sparse (level pairs that share rows).

Memory after the reduction is O(levels × q²) (O(m²) for the dense case) and
does not depend on N; no N × (levels × q) matrix is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytensor.tensor as pt

from ...design.crossprod import RowSums, SparsePairSums

#: Largest q for which the per-level Cholesky is written out as elementwise
#: ops: they fuse into one loop over levels, some 80 times faster than
#: PyTensor's batched (Blockwise) Cholesky for q = 2 and G = 2000.
UNROLL_MAX = 6

#: Target number of floats per temporary array when drawing random effects.
_CHUNK_FLOATS = 2_000_000

Tensor = Any  # a PyTensor variable or a numpy array


# -- data reduction: from row sums to the likelihood's cross-products ------------------


@dataclass(frozen=True, eq=False)
class FixedCrossProducts:
    """Cross-products of the population-level part.

    Attributes
    ----------
    n : float
        The total weight of the rows (their number without ``weights()``):
        the power of σ in the likelihood.
    WtW : (p, p) array, Wty : (p,) array, yty : float
        Cross-products of W and the shifted y (see `fixed_columns`).
    shift : (p,) array
        Subtracted from β before use.
    """

    n: float
    WtW: np.ndarray
    Wty: np.ndarray
    yty: float
    shift: np.ndarray

    def residual_ss(self, beta: Tensor) -> Tensor:
        """r'r for coefficients ``beta`` (already shifted)."""
        return self.yty - 2.0 * pt.dot(beta, self.Wty) + pt.dot(beta, pt.dot(self.WtW, beta))


@dataclass(frozen=True, eq=False)
class FactorCrossProducts:
    """Per-level cross-products of one grouping factor.

    Attributes
    ----------
    name : str
    ZtZ : (G, q, q), ZtW : (G, q, p), Zty : (G, q) arrays
        Sums over the rows of each level of Z_i Z_i', Z_i W_i' and Z_i y_i.
    """

    name: str
    ZtZ: np.ndarray
    ZtW: np.ndarray
    Zty: np.ndarray

    @property
    def n_levels(self) -> int:
        return self.ZtZ.shape[0]

    @property
    def q(self) -> int:
        return self.ZtZ.shape[1]


def _w_columns(centred: bool, p: int) -> slice:
    """Columns of ``v = [1, x − c, y − c_y]`` that make W: the ones only with a centred intercept."""
    return slice(0, p + 1) if centred else slice(1, p + 1)


def _centred_sums(sums: RowSums, centred: bool, x_centre: np.ndarray) -> tuple[RowSums, np.ndarray]:
    """The sums shifted as `fixed_columns` shifts W and y, and the shift of β.

    With a centred intercept the columns are centred at the design's centre
    (which defines what the intercept means: not the sums' own means, which
    are weighted under ``weights()``) and the response's mean moves onto the
    intercept (exact, through β's shift); otherwise nothing is shifted.
    """
    p = sums.shift.size - 1
    if not centred:
        return sums.recentred(np.zeros(p + 1)), np.zeros(p)
    y_mean = sums.means[-1]
    beta_shift = np.zeros(p + 1)
    beta_shift[0] = y_mean
    return sums.recentred(np.append(x_centre, y_mean)), beta_shift




# -- small batched linear algebra (PyTensor) -------------------------------------


def _chol_solve(A: Tensor, B: Tensor, q: int, r: int) -> tuple[Tensor, Tensor]:
    """Cholesky of a batch of q × q matrices and a forward solve.

    Parameters
    ----------
    A : (G, q, q) tensor, symmetric positive definite.
    B : (G, q, r) tensor.

    Returns
    -------
    logdet : scalar tensor, Σ over the batch of log|A_g|.
    X : (G, q, r) tensor, L_g⁻¹ B_g.
    """
    if q > UNROLL_MAX:
        chol = pt.linalg.cholesky(A)
        logdet = 2.0 * pt.log(pt.diagonal(chol, axis1=-2, axis2=-1)).sum()
        return logdet, pt.linalg.solve_triangular(chol, B, lower=True, b_ndim=2)
    # Written out entry by entry: every op is elementwise over the batch.
    L: list[list[Any]] = [[None] * q for _ in range(q)]
    for j in range(q):
        L[j][j] = pt.sqrt(A[:, j, j] - sum(L[j][k] ** 2 for k in range(j)))
        for i in range(j + 1, q):
            L[i][j] = (A[:, i, j] - sum(L[i][k] * L[j][k] for k in range(j))) / L[j][j]
    logdet = 2.0 * sum(pt.log(L[j][j]).sum() for j in range(q))
    columns = []
    for col in range(r):
        x: list[Any] = []
        for i in range(q):
            x.append((B[:, i, col] - sum(L[i][k] * x[k] for k in range(i))) / L[i][i])
        columns.append(pt.stack(x, axis=-1))
    return logdet, pt.stack(columns, axis=-1)


def _scaled_gram(ZtZ: Tensor, left: Tensor, right: Tensor) -> Tensor:
    """(G, q_l, q_r) batch of left' ZtZ_g right."""
    return pt.einsum("kj,gkl,lm->gjm", left, ZtZ, right)


def _gaussian_marginal(fixed: FixedCrossProducts, beta: Tensor, sigma: Tensor,
                       logdet: Tensor, quad: Tensor) -> Tensor:
    """−½ [N log 2πσ² + log|A| + (r'r − ‖v‖²/σ²)/σ²]."""
    s2 = sigma**2
    rr = fixed.residual_ss(beta)
    return -0.5 * (fixed.n * pt.log(2.0 * np.pi * s2) + logdet + (rr - quad / s2) / s2)


def _segment_sum(values: Tensor, segment: np.ndarray, n: int) -> Tensor:
    """Sum ``values`` (G, ...) into ``n`` segments along axis 0."""
    return pt.inc_subtensor(pt.zeros((n, *values.shape[1:]))[segment], values)


# -- small batched linear algebra (numpy, for the exact draws) --------------------


# For q <= UNROLL_MAX these are written out entry by entry, elementwise over the
# batch: numpy's batched LAPACK calls cost microseconds per tiny matrix, which for
# 4000 draws x 1000 levels made the exact draws take longer than sampling.


def _np_cholesky(A: np.ndarray) -> np.ndarray:
    """Lower Cholesky factors of a batch (..., q, q) of positive definite matrices."""
    q = A.shape[-1]
    if q > UNROLL_MAX:
        return np.linalg.cholesky(A)
    L = np.zeros_like(A)
    for j in range(q):
        L[..., j, j] = np.sqrt(A[..., j, j] - (L[..., j, :j] ** 2).sum(axis=-1))
        for i in range(j + 1, q):
            L[..., i, j] = (A[..., i, j] - (L[..., i, :j] * L[..., j, :j]).sum(axis=-1)) / L[..., j, j]
    return L


def _np_solve_lower(L: np.ndarray, b: np.ndarray) -> np.ndarray:
    """L⁻¹b for batches of lower-triangular L (..., q, q) and b (..., q) or (..., q, r)."""
    vector = b.ndim == L.ndim - 1
    q = L.shape[-1]
    if q > UNROLL_MAX:
        return np.linalg.solve(L, b[..., None])[..., 0] if vector else np.linalg.solve(L, b)
    B = b[..., None] if vector else b
    x = np.empty(np.broadcast_shapes(B.shape, L.shape[:-1] + B.shape[-1:]))
    for i in range(q):
        x[..., i, :] = (B[..., i, :] - (L[..., i, :i, None] * x[..., :i, :]).sum(axis=-2)) / L[..., i, i, None]
    return x[..., 0] if vector else x


def _np_solve_upper_t(L: np.ndarray, b: np.ndarray) -> np.ndarray:
    """L'⁻¹b for batches of lower-triangular L and vectors b."""
    q = L.shape[-1]
    if q > UNROLL_MAX:
        return np.linalg.solve(np.swapaxes(L, -1, -2), b[..., None])[..., 0]
    x = np.empty(np.broadcast_shapes(b.shape, L.shape[:-1]))
    for i in reversed(range(q)):
        x[..., i] = (b[..., i] - (L[..., i + 1:, i] * x[..., i + 1:]).sum(axis=-1)) / L[..., i, i]
    return x


def _np_c(f: FactorCrossProducts, beta: np.ndarray, lam: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """(s, G, q) c/σ² = Λ'(Z'y − Z'Wβ)/σ² per draw and level."""
    r = f.Zty - np.tensordot(beta, f.ZtW, axes=([1], [2]))  # (s, G, q)
    return np.matmul(r, lam) / s2


def _np_gram(ZtZ: np.ndarray, left: np.ndarray, right: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """(s, G, q_l, q_r) left' ZtZ_g right / σ² per draw and level."""
    (G, a, b), q_l, q_r = ZtZ.shape, left.shape[-1], right.shape[-1]
    if max(a, b) > UNROLL_MAX:
        inner = np.matmul(ZtZ[None], right[:, None])  # (s, G, a, q_r)
        return np.matmul(np.swapaxes(left, -1, -2)[:, None], inner) / s2[..., None]
    Z = np.moveaxis(ZtZ, 0, -1)  # (a, b, G): each entry contiguous over levels
    inner = [[sum(Z[k, l] * right[:, l, m, None] for l in range(b)) for m in range(q_r)] for k in range(a)]
    out = np.empty((left.shape[0], G, q_l, q_r))
    for j in range(q_l):
        for m in range(q_r):
            out[:, :, j, m] = sum(left[:, k, j, None] * inner[k][m] for k in range(a))
    return out / s2[..., None]


def _chunks(n_draws: int, floats_per_draw: int):
    size = max(1, _CHUNK_FLOATS // max(1, floats_per_draw))
    for start in range(0, n_draws, size):
        yield slice(start, min(start + size, n_draws))


# -- the three structures -------------------------------------------------------


@dataclass(frozen=True, eq=False)
class OneFactor:
    """One grouping factor: A is block diagonal with one q × q block per level."""

    fixed: FixedCrossProducts
    factor: FactorCrossProducts

    def loglik(self, beta: Tensor, sigma: Tensor, scales: dict[str, Tensor]) -> Tensor:
        f, beta = self.factor, beta - self.fixed.shift
        lam = scales[f.name]
        c = pt.dot(f.Zty - pt.dot(f.ZtW, beta), lam)  # rows c_g' = (Z'r)_g' Λ
        A = pt.eye(f.q) + _scaled_gram(f.ZtZ, lam, lam) / sigma**2
        logdet, v = _chol_solve(A, c[:, :, None], f.q, 1)
        return _gaussian_marginal(self.fixed, beta, sigma, logdet, (v**2).sum())

    def draw(self, beta: np.ndarray, sigma: np.ndarray, scales: dict[str, np.ndarray],
             rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {self.factor.name: _draw_blocks(self.factor, beta - self.fixed.shift, sigma, scales[self.factor.name],
                                               rng)}


def _draw_blocks(f: FactorCrossProducts, beta: np.ndarray, sigma: np.ndarray, lam_all: np.ndarray,
                 rng: np.random.Generator, zr: np.ndarray | None = None) -> np.ndarray:
    """(S, G, q) exact draws of one factor's effects whose precision is block diagonal by level.

    ``u_g | · ~ N(A_g⁻¹c_g/σ², A_g⁻¹)`` with ``c_g = Λ'(Z'y − Z'Wβ − zr)_g`` and
    ``b_g = Λ u_g``. ``zr`` (S, G, q), optional: per draw, ``Z'`` times the
    part of the mean that other, sampled, effects explain (`PartlyCollapsed`).
    """
    out = np.empty((beta.shape[0], f.n_levels, f.q))
    for s in _chunks(beta.shape[0], f.n_levels * f.q * (f.q + 4)):
        lam, s2 = lam_all[s], sigma[s, None, None] ** 2
        c = _np_c(f, beta[s], lam, s2)
        if zr is not None:
            c -= np.matmul(zr[s], lam) / s2
        L = _np_cholesky(np.eye(f.q) + _np_gram(f.ZtZ, lam, lam, s2))
        u = _np_solve_upper_t(L, _np_solve_lower(L, c) + rng.standard_normal(c.shape))
        out[s] = np.matmul(u, np.swapaxes(lam, -1, -2))  # b_g = Λ u_g
    return out


@dataclass(frozen=True, eq=False)
class NestedPair:
    """Two factors, every level of ``inner`` within one level of ``outer``.

    Ordering the inner effects first, A's Cholesky factor is
    ``[[L_b, 0], [M, L_S]]`` with ``L_b L_b' = A_bb`` (one q_b × q_b block per
    inner level), ``M' = L_b⁻¹ A_ba`` and ``L_S L_S' = A_aa − M M'`` (the Schur
    complement, one q_a × q_a block per outer level), so both factorisations
    are batched over levels.
    """

    fixed: FixedCrossProducts
    outer: FactorCrossProducts
    inner: FactorCrossProducts
    parent: np.ndarray  # (G_b,) outer level of each inner level
    ZbZa: np.ndarray  # (G_b, q_b, q_a) Σ over an inner level's rows of Zb_i Za_i'

    def loglik(self, beta: Tensor, sigma: Tensor, scales: dict[str, Tensor]) -> Tensor:
        a, b, beta = self.outer, self.inner, beta - self.fixed.shift
        la, lb, s2 = scales[a.name], scales[b.name], sigma**2
        c_a = pt.dot(a.Zty - pt.dot(a.ZtW, beta), la)
        c_b = pt.dot(b.Zty - pt.dot(b.ZtW, beta), lb)
        A_aa = pt.eye(a.q) + _scaled_gram(a.ZtZ, la, la) / s2
        A_bb = pt.eye(b.q) + _scaled_gram(b.ZtZ, lb, lb) / s2
        A_ba = _scaled_gram(self.ZbZa, lb, la) / s2
        # One forward solve gives both w_b = L_b⁻¹c_b and M' = L_b⁻¹A_ba.
        logdet_b, X = _chol_solve(A_bb, pt.concatenate([c_b[:, :, None], A_ba], axis=2), b.q, 1 + a.q)
        w_b, Mt = X[:, :, 0], X[:, :, 1:]
        # Products over the q_b axis by broadcasting: an einsum here becomes a
        # BatchedDot of tiny matrices, some 20 times slower in numba.
        S = A_aa - _segment_sum((Mt[:, :, :, None] * Mt[:, :, None, :]).sum(axis=1), self.parent, a.n_levels)
        d = c_a - _segment_sum((Mt * w_b[:, :, None]).sum(axis=1), self.parent, a.n_levels)
        logdet_a, w_a = _chol_solve(S, d[:, :, None], a.q, 1)
        quad = (w_b**2).sum() + (w_a**2).sum()
        return _gaussian_marginal(self.fixed, beta, sigma, logdet_a + logdet_b, quad)

    def draw(self, beta: np.ndarray, sigma: np.ndarray, scales: dict[str, np.ndarray],
             rng: np.random.Generator) -> dict[str, np.ndarray]:
        a, b = self.outer, self.inner
        n = beta.shape[0]
        u_a_all = np.empty((n, a.n_levels, a.q))
        u_b_all = np.empty((n, b.n_levels, b.q))
        per_draw = a.n_levels * a.q * (a.q + 4) + b.n_levels * b.q * (b.q + a.q + 4)
        for s in _chunks(n, per_draw):
            la, lb, s2 = scales[a.name][s], scales[b.name][s], sigma[s, None, None] ** 2
            bt = beta[s] - self.fixed.shift
            L_b = _np_cholesky(np.eye(b.q) + _np_gram(b.ZtZ, lb, lb, s2))
            Mt = _np_solve_lower(L_b, _np_gram(self.ZbZa, lb, la, s2))  # (s, G_b, q_b, q_a)
            w_b = _np_solve_lower(L_b, _np_c(b, bt, lb, s2))
            # Schur complement and its right-hand side, summed over each outer level's inner levels.
            S = np.eye(a.q) + _np_gram(a.ZtZ, la, la, s2)
            at: Any = (slice(None), self.parent)
            np.add.at(S, at, -np.einsum("sgki,sgkj->sgij", Mt, Mt))
            d = _np_c(a, bt, la, s2)
            np.add.at(d, at, -np.einsum("sgki,sgk->sgi", Mt, w_b))
            w_b += rng.standard_normal(w_b.shape)  # w = L⁻¹c/σ² + z, then u = L'⁻¹w
            L_S = _np_cholesky(S)
            w_a = _np_solve_lower(L_S, d) + rng.standard_normal(d.shape)
            u_a = _np_solve_upper_t(L_S, w_a)
            u_b = _np_solve_upper_t(L_b, w_b - np.einsum("sgki,sgi->sgk", Mt, u_a[:, self.parent]))
            u_a_all[s] = np.einsum("sjk,sgk->sgj", la, u_a)
            u_b_all[s] = np.einsum("sjk,sgk->sgj", lb, u_b)
        return {a.name: u_a_all, b.name: u_b_all}


@dataclass(frozen=True, eq=False)
class DenseEffects:
    """Any set of factors (crossed ones too), with A as one dense m × m matrix.

    The random effects are ordered factor by factor, level by level, term by
    term; every gradient costs a dense Cholesky, so this is only used while
    m <= `lmmbayes.design.crossprod.DENSE_MAX`.
    """

    fixed: FixedCrossProducts
    names: tuple[str, ...]
    shapes: tuple[tuple[int, int], ...]  # (levels, q) per factor
    ZtZ: np.ndarray  # (m, m)
    ZtW: np.ndarray  # (m, p)
    Zty: np.ndarray  # (m,)

    @classmethod
    def from_sums(cls, fixed: FixedCrossProducts, names: tuple[str, ...], sums: RowSums,
                  w: slice) -> DenseEffects:
        """Assemble the dense Z'Z from per-level sums (its diagonal blocks) and pair sums."""
        shapes = tuple((f.ZtZ.shape[0], f.ZtZ.shape[1]) for f in sums.factors)
        sizes = [G * q for G, q in shapes]
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        ZtZ = np.zeros((offsets[-1], offsets[-1]))
        for k, f in enumerate(sums.factors):
            G, q = shapes[k]
            rows = slice(offsets[k], offsets[k + 1])
            # Block diagonal over levels: level g's q × q block at rows and columns g*q ... g*q + q.
            ZtZ[rows, rows] = np.einsum("gh,gij->gihj", np.eye(G), f.ZtZ).reshape(G * q, G * q)
        for (left, right), joint in zip(sums.layout.pairs, sums.pairs):
            (G_l, q_l), (G_r, q_r) = shapes[left], shapes[right]
            block = joint.reshape(G_l, G_r, q_l, q_r).transpose(0, 2, 1, 3).reshape(G_l * q_l, G_r * q_r)
            rows, cols = slice(offsets[left], offsets[left + 1]), slice(offsets[right], offsets[right + 1])
            ZtZ[rows, cols] = block
            ZtZ[cols, rows] = block.T
        ZtW = np.concatenate([f.ZtV[..., w].reshape(-1, w.stop - w.start) for f in sums.factors], axis=0)
        Zty = np.concatenate([f.ZtV[..., -1].reshape(-1) for f in sums.factors])
        return cls(fixed, names, shapes, ZtZ, ZtW, Zty)

    def _blocks(self):
        start = 0
        for name, (G, q) in zip(self.names, self.shapes):
            yield name, slice(start, start + G * q), G, q
            start += G * q

    def _lam_t(self, M: Tensor, scales: dict[str, Tensor]) -> Tensor:
        """Λ'M for M (m, r): Λ is block diagonal, one Λ_f block per level."""
        parts = []
        for name, rows, G, q in self._blocks():
            block = M[rows].reshape((G, q, -1))
            parts.append(pt.einsum("kj,gkr->gjr", scales[name], block).reshape((G * q, -1)))
        return pt.concatenate(parts, axis=0)

    def loglik(self, beta: Tensor, sigma: Tensor, scales: dict[str, Tensor]) -> Tensor:
        beta = beta - self.fixed.shift
        c = self._lam_t((self.Zty - pt.dot(self.ZtW, beta))[:, None], scales)[:, 0]
        A = pt.eye(self.ZtZ.shape[0]) + self._lam_t(self._lam_t(self.ZtZ, scales).T, scales) / sigma**2
        L = pt.linalg.cholesky(A)
        v = pt.linalg.solve_triangular(L, c, lower=True)
        logdet = 2.0 * pt.log(pt.diagonal(L)).sum()
        return _gaussian_marginal(self.fixed, beta, sigma, logdet, (v**2).sum())

    def _np_lam(self, M: np.ndarray, scales: dict[str, np.ndarray], transpose: bool) -> np.ndarray:
        """Λ'M (or ΛM) for a batch M (s, m, r) with per-draw Λ."""
        spec = "skj,sgkr->sgjr" if transpose else "sjk,sgkr->sgjr"
        parts = []
        for name, rows, G, q in self._blocks():
            block = M[:, rows].reshape(M.shape[0], G, q, -1)
            parts.append(np.einsum(spec, scales[name], block).reshape(M.shape[0], G * q, -1))
        return np.concatenate(parts, axis=1)

    def draw(self, beta: np.ndarray, sigma: np.ndarray, scales: dict[str, np.ndarray],
             rng: np.random.Generator) -> dict[str, np.ndarray]:
        m = self.ZtZ.shape[0]
        u_all = np.empty((beta.shape[0], m))
        for s in _chunks(beta.shape[0], 3 * m * m):
            sc = {k: v[s] for k, v in scales.items()}
            s2 = sigma[s, None, None] ** 2
            r = self.Zty - (beta[s] - self.fixed.shift) @ self.ZtW.T
            c = self._np_lam(r[..., None], sc, True)[..., 0] / s2[..., 0]
            B = self._np_lam(np.broadcast_to(self.ZtZ, (c.shape[0], m, m)), sc, True)
            A = np.eye(m) + self._np_lam(np.swapaxes(B, 1, 2), sc, True) / s2
            L = np.linalg.cholesky(A)
            u = _np_solve_upper_t(L, _np_solve_lower(L, c) + rng.standard_normal(c.shape))
            u_all[s] = self._np_lam(u[..., None], sc, False)[..., 0]
        return {name: u_all[:, rows].reshape(-1, G, q) for name, rows, G, q in self._blocks()}


def _sparse_dot_pt(M: SparsePairSums, x: Tensor) -> Tensor:
    """M @ x for a flat vector x, as a gather and a segment sum (differentiable, numba-compilable)."""
    return pt.inc_subtensor(pt.zeros(M.shape[0])[M.rows], M.values * x[M.cols])


@dataclass(frozen=True, eq=False)
class PartlyCollapsed:
    """Crossed factors: the factor with the most effects integrated out, the others' effects sampled.

    Given the sampled effects ``b_k`` of the other factors, the model is a
    one-factor model of ``y − Σ_k Z_k b_k``, whose marginal likelihood needs
    only cross-products (Lai, Domke and Sheldon 2024): the per-level sums of
    every factor, and the sparse sums of the integrated factor with each
    other factor and of the other factors among themselves. A gradient costs
    O(level pairs that share rows + levels × q³), and the integrated effects
    are drawn exactly for every posterior draw, given the sampled ones.
    """

    fixed: FixedCrossProducts
    big: FactorCrossProducts
    others: tuple[FactorCrossProducts, ...]
    big_other: tuple[SparsePairSums, ...]  # Σ Z_big Z_k' per other factor k
    other_pairs: tuple[tuple[int, int, SparsePairSums], ...]  # (k, l, Σ Z_k Z_l'), k < l

    @classmethod
    def from_sums(cls, fixed: FixedCrossProducts, parts: tuple[FactorCrossProducts, ...],
                  pairs: dict[tuple[int, int], SparsePairSums]) -> PartlyCollapsed:
        """The factor with the most effects integrated out, from every factor's sums and each pair's
        (``pairs[(i, j)]``, i < j in design order)."""
        big = int(np.argmax([f.n_levels * f.q for f in parts]))
        others = [k for k in range(len(parts)) if k != big]

        def pair(a: int, b: int) -> SparsePairSums:
            return pairs[(a, b)] if a < b else pairs[(b, a)].T

        return cls(fixed, parts[big], tuple(parts[k] for k in others), tuple(pair(big, k) for k in others),
                   tuple((i, j, pair(others[i], others[j])) for j in range(len(others)) for i in range(j)))

    def loglik(self, beta: Tensor, sigma: Tensor, scales: dict[str, Tensor],
               effects: dict[str, Tensor] | None = None) -> Tensor:
        """log p(y | β, σ, Λ, b_others); ``effects`` per other factor (G_k, q_k) in standardised units."""
        assert effects is not None
        f, beta = self.big, beta - self.fixed.shift
        flat_b = [effects[o.name].reshape((-1,)) for o in self.others]
        rr = self.fixed.residual_ss(beta)
        zr = f.Zty - pt.dot(f.ZtW, beta)
        for k, (o, b) in enumerate(zip(self.others, flat_b)):
            bk = effects[o.name]
            rr = rr - 2.0 * (bk * (o.Zty - pt.dot(o.ZtW, beta))).sum()
            rr = rr + (bk[:, :, None] * o.ZtZ * bk[:, None, :]).sum()
            zr = zr - _sparse_dot_pt(self.big_other[k], b).reshape((f.n_levels, f.q))
        for k, l, M in self.other_pairs:
            rr = rr + 2.0 * (flat_b[k] * _sparse_dot_pt(M, flat_b[l])).sum()
        lam = scales[f.name]
        c = pt.dot(zr, lam)
        A = pt.eye(f.q) + _scaled_gram(f.ZtZ, lam, lam) / sigma**2
        logdet, v = _chol_solve(A, c[:, :, None], f.q, 1)
        s2 = sigma**2
        return -0.5 * (self.fixed.n * pt.log(2.0 * np.pi * s2) + logdet + (rr - (v**2).sum() / s2) / s2)

    def draw(self, beta: np.ndarray, sigma: np.ndarray, scales: dict[str, np.ndarray], rng: np.random.Generator,
             effects: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Exact draws of the integrated factor's effects, given each draw's sampled effects (S, G_k, q_k)."""
        assert effects is not None
        f, S = self.big, beta.shape[0]
        zr = np.zeros((S, f.n_levels * f.q))
        for o, M in zip(self.others, self.big_other):
            zr += (M.matrix() @ effects[o.name].reshape(S, -1).T).T
        drawn = _draw_blocks(f, beta - self.fixed.shift, sigma, scales[f.name], rng, zr.reshape(S, f.n_levels, f.q))
        return {f.name: drawn}


Collapsed = OneFactor | NestedPair | DenseEffects | PartlyCollapsed


def from_sums(sums: RowSums, names: tuple[str, ...], centred: bool, x_centre: np.ndarray | None = None) -> Collapsed:
    """The likelihood's cross-products from the row sums of a design.

    Parameters
    ----------
    sums : RowSums
        From `lmmbayes.crossprod.reduce_rows` (summed over chunks) or
        `lmmbayes.crossprod.design_sums`.
    names : tuple of str
        The grouping factors' names, in design order.
    centred : bool
        Whether the design has a centred intercept.
    x_centre : (p,) array, optional
        Where the population-level columns are centred with a centred
        intercept, in the sums' units (0 for the engine's standardised
        sums); the sums' column means by default.
    """
    centre = sums.means[:-1] if x_centre is None else np.asarray(x_centre, dtype=float)
    sums, beta_shift = _centred_sums(sums, centred, centre)
    w = _w_columns(centred, sums.shift.size - 1)
    V, layout = sums.VtV, sums.layout
    fixed = FixedCrossProducts(sums.weight, V[w, w], V[w, -1], float(V[-1, -1]), beta_shift)
    parts = [FactorCrossProducts(name, f.ZtZ, f.ZtV[..., w], f.ZtV[..., -1])
             for name, f in zip(names, sums.factors)]
    if layout.kind == "one":
        return OneFactor(fixed, parts[0])
    if layout.kind == "dense":
        return DenseEffects.from_sums(fixed, names, sums, w)
    if layout.kind == "partial":
        return PartlyCollapsed.from_sums(fixed, tuple(parts), dict(zip(layout.pairs, sums.pairs)))
    ((inner, outer),) = layout.pairs
    assert layout.parent is not None
    return NestedPair(fixed, parts[outer], parts[inner], layout.parent, sums.pairs[0])


# -- the likelihood and the exact draws ---------------------------------------------


def marginal_loglik(collapsed: Collapsed, beta: Tensor, sigma: Tensor,
                    scales: dict[str, Tensor]) -> pt.TensorVariable:
    """log p(y | β, σ, Λ) as a PyTensor expression.

    Parameters
    ----------
    collapsed : OneFactor, NestedPair or DenseEffects
        From `collapse`.
    beta : (p,) tensor or array
        Coefficients of W: the centred intercept first (if any), then ``b_c``.
    sigma : scalar tensor or float
    scales : dict
        Per factor, its (q, q) Λ block ``diag(sd) @ Lcorr``.
    """
    to = pt.as_tensor_variable
    return collapsed.loglik(to(beta), to(sigma), {k: to(v) for k, v in scales.items()})


def draw_effects(collapsed: Collapsed, beta: np.ndarray, sigma: np.ndarray,
                 scales: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One exact draw of the random effects b = Λu per posterior draw.

    Parameters
    ----------
    beta : (S, p) array, sigma : (S,) array, scales : dict of (S, q, q) arrays
    rng : numpy.random.Generator

    Returns
    -------
    dict
        Per factor, (S, levels, q) draws of b | y, β, σ, Λ.
    """
    return collapsed.draw(np.asarray(beta, dtype=float), np.asarray(sigma, dtype=float),
                          {k: np.asarray(v, dtype=float) for k, v in scales.items()}, rng)
