"""The collapsed engine: integrate the random effects out, sample the rest, draw them exactly.

For a Gaussian LMM ``y = Wβ + Zb + ε`` with ``b = Λu``, ``u ~ N(0, I)`` and
``ε ~ N(0, σ²I)``, the marginal likelihood of ``y`` given (β, σ, Λ) needs
only cross-products of the data (see ``shared/design/COLLAPSED_LMM.md``):

    A = I + Λ'Z'ZΛ/σ² = L_A L_A',   c = Λ'(Z'y − Z'Wβ),   v = L_A⁻¹c
    log p(y) = −½ [N log 2πσ² + log|A| + (r'r − ‖v‖²/σ²)/σ²]

NUTS samples the handful of hyperparameters under this likelihood, and the
random effects are then drawn exactly, one independent draw per posterior
draw: ``u | y ~ N(A⁻¹c/σ², A⁻¹)``, ``b = Λu``.

Here ``W`` is ``[1, X − x̄]`` (the centred intercept is a column of ones)
and the data are reduced once, in numpy, to per-level cross-products. Three
structures of ``A`` are handled:

- :class:`OneFactor` (one grouping factor): one q × q block per level;
- :class:`NestedPair` (two factors, one nested in the other, ``(1|a/b)``):
  block diagonal by the outer level, factored by a Schur complement on the
  inner levels, so the cost stays linear in the number of levels;
- :class:`DenseEffects` (anything else, e.g. crossed factors) while the total
  number of random effects is at most :data:`DENSE_MAX`: a dense Cholesky.

Memory after the reduction is O(levels × q²) (O(m²) for the dense case) and
does not depend on N; no N × (levels × q) matrix is built.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from ..design import Design, Factor
from ..errors import FitError
from ..posterior import scale_draws
from ..priors import ResolvedPriors
from ..sampling import SamplerConfig, sample
from .common import EngineResult, build_hyper, centred_X, hyper_names

#: Largest q for which the per-level Cholesky is written out as elementwise
#: ops: they fuse into one loop over levels, some 80 times faster than
#: PyTensor's batched (Blockwise) Cholesky for q = 2 and G = 2000.
UNROLL_MAX = 6

#: Largest total number of random effects for the dense fallback (crossed
#: factors): every gradient costs a dense m × m Cholesky (about 1 ms at m = 200).
DENSE_MAX = 500

#: Target number of floats per temporary array when drawing random effects.
_CHUNK_FLOATS = 2_000_000

Tensor = Any  # a PyTensor variable or a numpy array


# -- data reduction (numpy, once) ----------------------------------------------


def _group_sums(index: np.ndarray, n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """(n, a, b) sums over rows of ``left[i, :, None] * right[i, None, :]`` per level ``index[i]``."""
    out = np.empty((n, left.shape[1], right.shape[1]))
    for i in range(left.shape[1]):
        for j in range(right.shape[1]):
            out[:, i, j] = np.bincount(index, weights=left[:, i] * right[:, j], minlength=n)
    return out


def fixed_columns(design: Design) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """W, the shifted response and the shift of β.

    ``W = [1, X − x̄]`` with a centred intercept (so β = (Intercept_c, b_c)),
    else ``X``. With a centred intercept y is centred at its mean and the
    shift moved onto the intercept, so that r'r = y'y − 2β'W'y + β'W'Wβ does
    not lose digits to cancellation when y sits far from zero.

    Returns
    -------
    W : (N, p) array, shifted y : (N,) array, shift : (p,) array to subtract from β
    """
    Xc = centred_X(design)
    if not design.centred_intercept:
        return Xc, design.y, np.zeros(Xc.shape[1])
    W = np.column_stack([np.ones(design.n_obs), Xc])
    ybar = float(design.y.mean())
    shift = np.zeros(W.shape[1])
    shift[0] = ybar
    return W, design.y - ybar, shift


@dataclass(frozen=True, eq=False)
class FixedCrossProducts:
    """Cross-products of the population-level part.

    Attributes
    ----------
    n : int
    WtW : (p, p) array, Wty : (p,) array, yty : float
        Cross-products of W and the shifted y (see :func:`fixed_columns`).
    shift : (p,) array
        Subtracted from β before use.
    """

    n: int
    WtW: np.ndarray
    Wty: np.ndarray
    yty: float
    shift: np.ndarray

    @classmethod
    def reduce(cls, W: np.ndarray, y: np.ndarray, shift: np.ndarray) -> FixedCrossProducts:
        return cls(int(y.shape[0]), W.T @ W, W.T @ y, float(y @ y), shift)

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

    @classmethod
    def reduce(cls, f: Factor, W: np.ndarray, y: np.ndarray) -> FactorCrossProducts:
        G = f.n_levels
        return cls(
            f.name,
            _group_sums(f.index, G, f.Z, f.Z),
            _group_sums(f.index, G, f.Z, W),
            _group_sums(f.index, G, f.Z, y[:, None])[..., 0],
        )


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
        L = pt.linalg.cholesky(A)
        logdet = 2.0 * pt.log(pt.diagonal(L, axis1=-2, axis2=-1)).sum()
        return logdet, pt.linalg.solve_triangular(L, B, lower=True, b_ndim=2)
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


def _np_solve_lower(L: np.ndarray, b: np.ndarray) -> np.ndarray:
    """L⁻¹b for batches of lower-triangular L (..., q, q) and b (..., q) or (..., q, r)."""
    if b.ndim == L.ndim - 1:
        return np.linalg.solve(L, b[..., None])[..., 0]
    return np.linalg.solve(L, b)


def _np_solve_upper_t(L: np.ndarray, b: np.ndarray) -> np.ndarray:
    """L'⁻¹b for batches of lower-triangular L and vectors b."""
    return np.linalg.solve(np.swapaxes(L, -1, -2), b[..., None])[..., 0]


def _np_c(f: FactorCrossProducts, beta: np.ndarray, lam: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """(s, G, q) c/σ² = Λ'(Z'y − Z'Wβ)/σ² per draw and level."""
    return np.einsum("sgk,skj->sgj", f.Zty - np.einsum("gkp,sp->sgk", f.ZtW, beta), lam) / s2


def _np_gram(ZtZ: np.ndarray, left: np.ndarray, right: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """(s, G, q_l, q_r) left' ZtZ_g right / σ² per draw and level."""
    return np.einsum("skj,gkl,slm->sgjm", left, ZtZ, right, optimize=True) / s2[..., None]


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
        f = self.factor
        out = np.empty((beta.shape[0], f.n_levels, f.q))
        for s in _chunks(beta.shape[0], f.n_levels * f.q * (f.q + 4)):
            lam, s2 = scales[f.name][s], sigma[s, None, None] ** 2
            c = _np_c(f, beta[s] - self.fixed.shift, lam, s2)
            L = np.linalg.cholesky(np.eye(f.q) + _np_gram(f.ZtZ, lam, lam, s2))
            u = _np_solve_upper_t(L, _np_solve_lower(L, c) + rng.standard_normal(c.shape))
            out[s] = np.einsum("sjk,sgk->sgj", lam, u)
        return {f.name: out}


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
            L_b = np.linalg.cholesky(np.eye(b.q) + _np_gram(b.ZtZ, lb, lb, s2))
            Mt = _np_solve_lower(L_b, _np_gram(self.ZbZa, lb, la, s2))  # (s, G_b, q_b, q_a)
            w_b = _np_solve_lower(L_b, _np_c(b, bt, lb, s2))
            # Schur complement and its right-hand side, summed over each outer level's inner levels.
            S = np.eye(a.q) + _np_gram(a.ZtZ, la, la, s2)
            np.add.at(S, (slice(None), self.parent), -np.einsum("sgki,sgkj->sgij", Mt, Mt))
            d = _np_c(a, bt, la, s2)
            np.add.at(d, (slice(None), self.parent), -np.einsum("sgki,sgk->sgi", Mt, w_b))
            w_b += rng.standard_normal(w_b.shape)  # w = L⁻¹c/σ² + z, then u = L'⁻¹w
            L_S = np.linalg.cholesky(S)
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
    m <= :data:`DENSE_MAX`.
    """

    fixed: FixedCrossProducts
    names: tuple[str, ...]
    shapes: tuple[tuple[int, int], ...]  # (levels, q) per factor
    ZtZ: np.ndarray  # (m, m)
    ZtW: np.ndarray  # (m, p)
    Zty: np.ndarray  # (m,)

    @classmethod
    def reduce(cls, fixed: FixedCrossProducts, factors: tuple[Factor, ...], W: np.ndarray,
               y: np.ndarray) -> DenseEffects:
        rows = []
        for f in factors:
            cols = []
            for h in factors:
                # Level pairs (l_f, l_h) as one combined index: a block of Z'Z.
                pair = f.index * h.n_levels + h.index
                block = _group_sums(pair, f.n_levels * h.n_levels, f.Z, h.Z)
                block = block.reshape(f.n_levels, h.n_levels, len(f.terms), len(h.terms))
                cols.append(block.transpose(0, 2, 1, 3).reshape(f.n_levels * len(f.terms), -1))
            rows.append(np.concatenate(cols, axis=1))
        ZtW = [_group_sums(f.index, f.n_levels, f.Z, W).reshape(-1, W.shape[1]) for f in factors]
        Zty = [_group_sums(f.index, f.n_levels, f.Z, y[:, None]).reshape(-1) for f in factors]
        return cls(fixed, tuple(f.name for f in factors), tuple((f.n_levels, len(f.terms)) for f in factors),
                   np.concatenate(rows, axis=0), np.concatenate(ZtW, axis=0), np.concatenate(Zty))

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


Collapsed = OneFactor | NestedPair | DenseEffects


# -- which structure applies -----------------------------------------------------


def nested_parent(outer: Factor, inner: Factor) -> np.ndarray | None:
    """(levels of inner,) level of ``outer`` holding each level of ``inner``, or None if not nested."""
    parent = np.zeros(inner.n_levels, dtype=np.int64)
    parent[inner.index] = outer.index
    return parent if np.array_equal(parent[inner.index], outer.index) else None


def _plan(design: Design) -> tuple[str | None, str]:
    """The structure of A for ``design`` ("one", "nested", "dense") or None and why not."""
    factors = design.factors
    if not factors:
        return None, "the model has no group-level terms"
    if len(factors) == 1:
        return "one", ""
    if len(factors) == 2 and (nested_parent(*factors) is not None
                              or nested_parent(factors[1], factors[0]) is not None):
        return "nested", ""
    m = sum(f.n_levels * len(f.terms) for f in factors)
    if m <= DENSE_MAX:
        return "dense", ""
    names = ", ".join(f.name for f in factors)
    return None, (f"its grouping factors ({names}) are neither one factor nor two nested ones, and "
                  f"their {m} random effects exceed the {DENSE_MAX} a dense Cholesky handles")


def applies(design: Design) -> bool:
    """Whether ``method="auto"`` should pick the collapsed engine for ``design``.

    True for one grouping factor and for two nested ones, where an evaluation
    costs O(levels × q³) whatever N is. Crossed factors fit with
    ``method="collapsed"`` while m <= :data:`DENSE_MAX`, but a dense Cholesky
    per gradient makes them slower than the joint engine (200 crossed random
    effects: some ten times fewer effective draws per second), so auto does
    not choose it for them.
    """
    return _plan(design)[0] in ("one", "nested")


def collapse(design: Design) -> Collapsed:
    """Reduce ``design`` to the cross-products of its marginal likelihood.

    Raises
    ------
    FitError
        If the collapsed engine does not apply to the design.
    """
    kind, why = _plan(design)
    if kind is None:
        raise FitError(f"The collapsed engine does not apply to {design.spec.formula!r}: {why}. "
                       'Use method="joint".')
    W, y, shift = fixed_columns(design)
    fixed = FixedCrossProducts.reduce(W, y, shift)
    if kind == "one":
        return OneFactor(fixed, FactorCrossProducts.reduce(design.factors[0], W, y))
    if kind == "dense":
        return DenseEffects.reduce(fixed, design.factors, W, y)
    outer, inner = design.factors
    parent = nested_parent(outer, inner)
    if parent is None:
        outer, inner = inner, outer
        parent = nested_parent(outer, inner)
    ZbZa = _group_sums(inner.index, inner.n_levels, inner.Z, outer.Z)
    return NestedPair(fixed, FactorCrossProducts.reduce(outer, W, y),
                      FactorCrossProducts.reduce(inner, W, y), parent, ZbZa)


# -- the engine ------------------------------------------------------------------


def marginal_loglik(collapsed: Collapsed, beta: Tensor, sigma: Tensor,
                    scales: dict[str, Tensor]) -> pt.TensorVariable:
    """log p(y | β, σ, Λ) as a PyTensor expression.

    Parameters
    ----------
    collapsed : OneFactor, NestedPair or DenseEffects
        From :func:`collapse`.
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


def build_model(design: Design, resolved: ResolvedPriors, collapsed: Collapsed | None = None) -> pm.Model:
    """The collapsed PyMC model: shared hyperparameters plus the marginal likelihood as a Potential."""
    collapsed = collapse(design) if collapsed is None else collapsed
    with pm.Model() as model:
        hyper = build_hyper(design, resolved)
        beta = hyper.b if hyper.intercept is None else pt.concatenate([hyper.intercept[None], hyper.b])
        scales = {f.name: hyper.scale(f.name) for f in design.factors}
        pm.Potential("marginal_loglik", collapsed.loglik(beta, hyper.sigma, scales))
    return model


def run(design: Design, resolved: ResolvedPriors, config: SamplerConfig) -> EngineResult:
    """Reduce, build, sample the hyperparameters and draw the random effects exactly.

    Raises
    ------
    FitError
        If the design is not one the collapsed engine handles, or sampling fails.
    """
    t0 = time.perf_counter()
    collapsed = collapse(design)
    model = build_model(design, resolved, collapsed)
    t1 = time.perf_counter()
    trace = sample(model, config, hyper_names(design, model))
    t2 = time.perf_counter()
    raw = trace.posterior
    n_chain, n_draw = raw["sigma"].shape

    def flat(a: np.ndarray) -> np.ndarray:
        return a.reshape(n_chain * n_draw, *a.shape[2:])

    beta = flat(raw["b_c"])
    if design.centred_intercept:
        beta = np.concatenate([flat(raw["Intercept_c"])[:, None], beta], axis=1)
    scales = {f.name: flat(scale_draws(raw, f.name)) for f in design.factors}
    rng = np.random.default_rng([config.seed, 1])
    drawn = draw_effects(collapsed, beta, flat(raw["sigma"]), scales, rng)
    effects = {f.name: drawn[f.name].reshape(n_chain, n_draw, f.n_levels, len(f.terms))
               for f in design.factors}
    timings = {"build": t1 - t0, **trace.timings, "effects": time.perf_counter() - t2}
    return EngineResult(raw, effects, trace.sample_stats, timings)
