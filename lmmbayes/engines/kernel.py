"""A log density compiled once per installation for the common collapsed model.

The PyTensor route builds a graph per model and numba compiles it for
nutpie on every fit: 3 to 8 s even with PyTensor's cache warm, against a
second or less of sampling on data of a few hundred rows. For the model most
users fit (Gaussian, one grouping factor, correlated blocks of at most two
terms, built-in priors) this module instead evaluates the collapsed
log density and its gradient with hand-written numba functions cached on
disk (``cache=True``): they take the model's numbers as arrays, so no fit
compiles anything and nutpie calls them through its Python-function
interface.

Unconstrained parameters, in order: the centred intercept (if any), the
coefficients, σ, the factor's sds (one per term), then one ``z`` per
correlated pair with ``ρ = tanh(z / 2)``, which is PyMC's parameterisation
(ρ = 2u − 1, u ~ Beta(η, η) on the log-odds scale), so LKJ(η) has density
``∝ (1 − ρ²)^(η − 1)``. A parameter bounded below by ``lo`` is ``lo + exp(z)``,
above by ``hi`` is ``hi − exp(z)``, on ``[lo, hi]`` ``lo + (hi − lo) logistic(z)``,
with the log Jacobian added; constants (normalisers, truncation masses) are
left out, as they do not move NUTS.

The gradient of the marginal likelihood (see :mod:`.collapsed` for the
algebra) with ``P_g = A_g⁻¹`` and ``m_g = P_g c_g``:
``∂ℓ/∂c_g = m_g/σ⁴``, ``∂ℓ/∂A_g = −½(P_g + m_g m_g'/σ⁴)``, then through
``A_g = I + Λ'Z'Z_gΛ/σ²`` and ``c_g = Λ'(Z'y − Z'Wβ)_g`` to β, σ and Λ, and
through ``Λ = diag(sd) Lcorr`` to the sds and correlations. The tests check
it against the PyTensor graph of the same model and against finite
differences.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from ..design import Design
from ..priors import Prior, ResolvedPriors, Slot
from .common import start_value, support

#: Prior families the kernel evaluates, by name; anything else (custom
#: distributions) uses the PyTensor route.
FAMILIES = {name: k for k, name in enumerate((
    "flat", "normal", "student_t", "cauchy", "double_exponential", "logistic", "exponential",
    "gamma", "inv_gamma", "lognormal", "weibull", "beta", "uniform"))}
FAMILIES["laplace"] = FAMILIES["double_exponential"]

_LOG_2PI = math.log(2.0 * math.pi)


# -- scalar pieces -------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _log_sigmoid(z: float) -> float:
    return -math.log1p(math.exp(-z)) if z > -30.0 else z - math.log1p(math.exp(z))


@numba.njit(cache=True, nogil=True)
def _sigmoid(z: float) -> float:
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@numba.njit(cache=True, nogil=True)
def _family_lp(fam: int, a: np.ndarray, x: float) -> tuple[float, float]:
    """Unnormalised log density of one prior family at ``x`` and its derivative."""
    if fam == 0 or fam == 12:  # flat, uniform (constant on its support)
        return 0.0, 0.0
    if fam == 1:  # normal(mu, sigma)
        d = (x - a[0]) / a[1]
        return -0.5 * d * d, -d / a[1]
    if fam == 2 or fam == 3:  # student_t(nu, mu, sigma); cauchy(mu, sigma) is nu = 1
        if fam == 2:
            nu, mu, s = a[0], a[1], a[2]
        else:
            nu, mu, s = 1.0, a[0], a[1]
        d = x - mu
        return -0.5 * (nu + 1.0) * math.log1p(d * d / (nu * s * s)), -(nu + 1.0) * d / (nu * s * s + d * d)
    if fam == 4:  # double_exponential(mu, sigma)
        d = x - a[0]
        return -abs(d) / a[1], -math.copysign(1.0, d) / a[1] if d != 0.0 else 0.0
    if fam == 5:  # logistic(mu, s)
        d = (x - a[0]) / a[1]
        return -d - 2.0 * math.log1p(math.exp(-d)) if d > -30.0 else d, -math.tanh(0.5 * d) / a[1]
    if fam == 6:  # exponential(rate)
        return -a[0] * x, -a[0]
    if fam == 7:  # gamma(shape, rate)
        return (a[0] - 1.0) * math.log(x) - a[1] * x, (a[0] - 1.0) / x - a[1]
    if fam == 8:  # inv_gamma(shape, scale)
        return -(a[0] + 1.0) * math.log(x) - a[1] / x, -(a[0] + 1.0) / x + a[1] / (x * x)
    if fam == 9:  # lognormal(mu, sigma)
        lx = math.log(x)
        d = (lx - a[0]) / a[1]
        return -lx - 0.5 * d * d, (-1.0 - d / a[1]) / x
    if fam == 10:  # weibull(shape k, scale lam)
        t = (x / a[1]) ** a[0]
        return (a[0] - 1.0) * math.log(x) - t, ((a[0] - 1.0) - a[0] * t) / x
    # fam == 11: beta(alpha, beta) on (0, 1)
    return ((a[0] - 1.0) * math.log(x) + (a[1] - 1.0) * math.log1p(-x),
            (a[0] - 1.0) / x - (a[1] - 1.0) / (1.0 - x))


@numba.njit(cache=True, nogil=True)
def _constrain(lo: float, hi: float, z: float) -> tuple[float, float, float, float]:
    """x, dx/dz, log|dx/dz| and d log|dx/dz| / dz for the bounds' transform."""
    if lo == -np.inf and hi == np.inf:
        return z, 1.0, 0.0, 0.0
    if hi == np.inf:
        e = math.exp(z)
        return lo + e, e, z, 1.0
    if lo == -np.inf:
        e = math.exp(z)
        return hi - e, -e, z, 1.0
    s = _sigmoid(z)
    w = hi - lo
    return (lo + w * s, w * s * (1.0 - s), math.log(w) + _log_sigmoid(z) + _log_sigmoid(-z), 1.0 - 2.0 * s)


# -- the marginal likelihood and its gradient ----------------------------------------------


@numba.njit(cache=True, nogil=True)
def _cholesky_inplace(A: np.ndarray, q: int) -> bool:
    """Lower Cholesky factor of A (q × q) in place (upper part untouched); False if not PD."""
    for j in range(q):
        s = A[j, j]
        for k in range(j):
            s -= A[j, k] * A[j, k]
        if not s > 0.0:
            return False
        A[j, j] = math.sqrt(s)
        for i in range(j + 1, q):
            t = A[i, j]
            for k in range(j):
                t -= A[i, k] * A[j, k]
            A[i, j] = t / A[j, j]
    return True


@numba.njit(cache=True, nogil=True)
def marginal_loglik(beta: np.ndarray, sigma: float, Lam: np.ndarray, n: float, WtW: np.ndarray,
                    Wty: np.ndarray, yty: float, ZtZ: np.ndarray, ZtW: np.ndarray, Zty: np.ndarray,
                    g_beta: np.ndarray, g_lam: np.ndarray) -> tuple[float, float]:
    """log p(y | β, σ, Λ) for one grouping factor, from its cross-products.

    Writes ∂ℓ/∂β into ``g_beta`` and ∂ℓ/∂Λ into ``g_lam`` (both overwritten)
    and returns ``(ℓ, ∂ℓ/∂σ)``; ℓ is −inf where some A_g is not positive
    definite (it always is for finite inputs; the guard is for overflow).
    """
    p = beta.shape[0]
    G, q = ZtZ.shape[0], ZtZ.shape[1]
    s2 = sigma * sigma
    s4 = s2 * s2
    rr = yty
    for i in range(p):
        wb = 0.0
        for j in range(p):
            wb += WtW[i, j] * beta[j]
        rr += beta[i] * (wb - 2.0 * Wty[i])
        g_beta[i] = (Wty[i] - wb) / s2
    g_lam[:, :] = 0.0
    g_s2 = 0.0
    logdet = 0.0
    quad = 0.0
    r = np.empty(q)
    c = np.empty(q)
    M = np.empty((q, q))
    A = np.empty((q, q))
    Linv = np.empty((q, q))
    v = np.empty(q)
    m = np.empty(q)
    P = np.empty((q, q))
    GA = np.empty((q, q))
    lg = np.empty(q)
    for g in range(G):
        for i in range(q):
            t = Zty[g, i]
            for j in range(p):
                t -= ZtW[g, i, j] * beta[j]
            r[i] = t
        for j in range(q):  # c = Λ'r, M = Z'Z_g Λ
            t = 0.0
            for i in range(q):
                t += Lam[i, j] * r[i]
            c[j] = t
            for i in range(q):
                t = 0.0
                for k in range(q):
                    t += ZtZ[g, i, k] * Lam[k, j]
                M[i, j] = t
        for i in range(q):  # A = I + Λ'M / σ²
            for j in range(i + 1):
                t = 0.0
                for k in range(q):
                    t += Lam[k, i] * M[k, j]
                A[i, j] = t / s2 + (1.0 if i == j else 0.0)
                A[j, i] = A[i, j]
        trace_GA_AmI = 0.0  # tr(GA (A − I)) needs A before it is factored: keep A − I in P for now
        for i in range(q):
            for j in range(q):
                P[i, j] = A[i, j] - (1.0 if i == j else 0.0)
        if not _cholesky_inplace(A, q):
            return -np.inf, 0.0
        for i in range(q):
            logdet += 2.0 * math.log(A[i, i])
        for i in range(q):  # v = L⁻¹c
            t = c[i]
            for k in range(i):
                t -= A[i, k] * v[k]
            v[i] = t / A[i, i]
            quad += v[i] * v[i]
        for i in range(q - 1, -1, -1):  # m = L'⁻¹v = A⁻¹c
            t = v[i]
            for k in range(i + 1, q):
                t -= A[k, i] * m[k]
            m[i] = t / A[i, i]
        for j in range(q):  # Linv = L⁻¹, column by column
            for i in range(q):
                if i < j:
                    Linv[i, j] = 0.0
                else:
                    t = 1.0 if i == j else 0.0
                    for k in range(j, i):
                        t -= A[i, k] * Linv[k, j]
                    Linv[i, j] = t / A[i, i]
        for i in range(q):  # GA = −½(A⁻¹ + m m'/σ⁴), A⁻¹ = Linv' Linv
            for j in range(q):
                t = 0.0
                for k in range(max(i, j), q):
                    t += Linv[k, i] * Linv[k, j]
                GA[i, j] = -0.5 * (t + m[i] * m[j] / s4)
        for i in range(q):
            for j in range(q):
                trace_GA_AmI += GA[i, j] * P[j, i]
        g_s2 -= trace_GA_AmI / s2
        for i in range(q):  # ∂ℓ/∂c = m/σ⁴; ∂ℓ/∂β −= Z'W_g' Λ ∂ℓ/∂c
            lg[i] = 0.0
        for i in range(q):
            for j in range(q):
                lg[i] += Lam[i, j] * m[j] / s4
        for j in range(p):
            t = 0.0
            for i in range(q):
                t += ZtW[g, i, j] * lg[i]
            g_beta[j] -= t
        for i in range(q):  # ∂ℓ/∂Λ += 2 M GA / σ² + r (∂ℓ/∂c)'
            for j in range(q):
                t = 0.0
                for k in range(q):
                    t += M[i, k] * GA[k, j]
                g_lam[i, j] += 2.0 * t / s2 + r[i] * m[j] / s4
    ll = -0.5 * (n * (_LOG_2PI + math.log(s2)) + logdet + (rr - quad / s2) / s2)
    g_s2 += -0.5 * n / s2 + 0.5 * rr / s4 - quad / (s4 * s2)
    return ll, 2.0 * sigma * g_s2


#: Header of the packed buffer: total length, n_dim, n_beta, q, levels, pairs, N, y'y.
_HEADER = 8


@numba.njit(cache=True, nogil=True)
def _take(buf: np.ndarray, o: int, m: int) -> tuple[np.ndarray, int]:
    """The next ``m`` numbers of the packed buffer from offset ``o``, and the offset after them."""
    return buf[o:o + m], o + m


@numba.njit(cache=True, nogil=True)
def log_density(x: np.ndarray, grad: np.ndarray, buf: np.ndarray) -> float:
    """Log density (priors, Jacobians and marginal likelihood) at ``x``; its gradient into ``grad``.

    ``buf`` holds the model's numbers packed as :meth:`Kernel.buffer` writes
    them, so that one compiled function serves every model.
    """
    n_beta, q, G, n_pairs = int(buf[2]), int(buf[3]), int(buf[4]), int(buf[5])
    n, yty = buf[6], buf[7]
    k_prior = n_beta + 1 + q
    o = _HEADER
    fam, o = _take(buf, o, k_prior)
    args, o = _take(buf, o, 3 * k_prior)
    lo, o = _take(buf, o, k_prior)
    hi, o = _take(buf, o, k_prior)
    pair_a, o = _take(buf, o, n_pairs)
    pair_b, o = _take(buf, o, n_pairs)
    eta, o = _take(buf, o, n_pairs)
    shift, o = _take(buf, o, n_beta)
    WtW, o = _take(buf, o, n_beta * n_beta)
    Wty, o = _take(buf, o, n_beta)
    ZtZ, o = _take(buf, o, G * q * q)
    ZtW, o = _take(buf, o, G * q * n_beta)
    Zty, o = _take(buf, o, G * q)
    args, WtW = args.reshape((k_prior, 3)), WtW.reshape((n_beta, n_beta))
    ZtZ, ZtW, Zty = ZtZ.reshape((G, q, q)), ZtW.reshape((G, q, n_beta)), Zty.reshape((G, q))

    lp = 0.0
    vals = np.empty(k_prior)
    dxdz = np.empty(k_prior)
    for k in range(k_prior):
        xk, dk, logjac, dlogjac = _constrain(lo[k], hi[k], x[k])
        f_lp, f_d = _family_lp(int(fam[k]), args[k], xk)
        lp += f_lp + logjac
        grad[k] = dlogjac + f_d * dk  # the likelihood's part is added below
        vals[k] = xk
        dxdz[k] = dk
    beta = vals[:n_beta] - shift
    sigma = vals[n_beta]
    Lcorr = np.eye(q)
    rho = np.empty(n_pairs)
    for j in range(n_pairs):
        a, b = int(pair_a[j]), int(pair_b[j])
        z = x[k_prior + j]
        ls, lsm = _log_sigmoid(z), _log_sigmoid(-z)
        lp += eta[j] * (ls + lsm)
        grad[k_prior + j] = eta[j] * (1.0 - 2.0 * _sigmoid(z))
        rho[j] = math.tanh(0.5 * z)
        Lcorr[b, a] = rho[j]
        Lcorr[b, b] = 2.0 * math.exp(0.5 * (ls + lsm))  # √(1 − ρ²) = 2√(u(1 − u))
    Lam = np.empty((q, q))
    for i in range(q):
        for j in range(q):
            Lam[i, j] = vals[n_beta + 1 + i] * Lcorr[i, j]
    g_beta = np.empty(n_beta)
    g_lam = np.empty((q, q))
    ll, g_sigma = marginal_loglik(beta, sigma, Lam, n, WtW, Wty, yty, ZtZ, ZtW, Zty, g_beta, g_lam)
    for k in range(n_beta):
        grad[k] += g_beta[k] * dxdz[k]
    grad[n_beta] += g_sigma * dxdz[n_beta]
    for i in range(q):
        t = 0.0
        for j in range(q):
            t += g_lam[i, j] * Lcorr[i, j]
        grad[n_beta + 1 + i] += t * dxdz[n_beta + 1 + i]
    for j in range(n_pairs):
        a, b = int(pair_a[j]), int(pair_b[j])
        root = Lcorr[b, b]
        if root > 0.0:
            d_rho = vals[n_beta + 1 + b] * (g_lam[b, a] - g_lam[b, b] * rho[j] / root)
            grad[k_prior + j] += d_rho * 0.5 * root * root  # dρ/dz = (1 − ρ²)/2
    return lp + ll


# -- C callbacks for nutpie (no Python, no GIL, per gradient) -------------------------------


def _logp_c(dim, x_, out_, logp_, buf_):  # pragma: no cover - compiled by numba.cfunc
    buf = numba.carray(buf_, (int(numba.carray(buf_, (1,))[0]),))
    if dim != int(buf[1]):
        return -1
    x = numba.carray(x_, (dim,))
    out = numba.carray(out_, (dim,))
    value = log_density(x, out, buf)
    numba.carray(logp_, (1,))[0] = value
    for i in range(dim):
        if not np.isfinite(out[i]):
            return 3
    if not np.isfinite(value):
        return 4
    return 0


def _expand_c(dim, n_expanded, x_, out_, buf_):  # pragma: no cover - compiled by numba.cfunc
    if dim != n_expanded:
        return -1
    x = numba.carray(x_, (dim,))
    out = numba.carray(out_, (dim,))
    for i in range(dim):
        out[i] = x[i]
    return 0


@functools.cache
def c_callbacks() -> tuple[Any, Any]:
    """The two callbacks as numba cfuncs, compiled once and then loaded from numba's disk cache."""
    f64p = numba.types.CPointer(numba.types.float64)
    u64, i64 = numba.types.uint64, numba.types.int64
    logp = numba.cfunc(i64(u64, f64p, f64p, f64p, f64p), cache=True)(_logp_c)
    expand = numba.cfunc(i64(u64, u64, f64p, f64p, f64p), cache=True)(_expand_c)
    return logp, expand


# -- the model -----------------------------------------------------------------------------


def _supported(p: Prior) -> bool:
    if not p.family.builtin or p.family.name not in FAMILIES:
        return False
    lo, hi = support(p)
    return lo < hi and not (p.family.name == "flat" and math.isfinite(hi))


@dataclass(frozen=True, eq=False)
class Kernel:
    """The numbers :func:`log_density` needs for one model, and the maps to and from ``x``.

    Build it with :func:`build`; ``logp(x)`` returns ``(value, gradient)``.
    """

    n_beta: int
    q: int
    factor: str
    centred: bool
    fam: np.ndarray
    args: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    start_values: np.ndarray
    pair_a: np.ndarray
    pair_b: np.ndarray
    eta: np.ndarray
    data: tuple[Any, ...]  # shift, n, WtW, Wty, yty, ZtZ, ZtW, Zty

    @property
    def n_dim(self) -> int:
        return self.n_beta + 1 + self.q + self.pair_a.shape[0]

    @functools.cached_property
    def buffer(self) -> np.ndarray:
        """Everything :func:`log_density` reads, packed into one float64 array (not to be modified)."""
        shift, n, WtW, Wty, yty, ZtZ, ZtW, Zty = self.data
        parts = [self.fam, self.args, self.lo, self.hi, self.pair_a, self.pair_b, self.eta, shift, WtW, Wty,
                 ZtZ, ZtW, Zty]
        body = np.concatenate([np.asarray(a, dtype=float).ravel() for a in parts])
        header = [_HEADER + body.size, self.n_dim, self.n_beta, self.q, ZtZ.shape[0], self.pair_a.shape[0], n, yty]
        return np.ascontiguousarray(np.concatenate([np.asarray(header, dtype=float), body]))

    def logp(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        grad = np.empty(self.n_dim)
        return log_density(np.ascontiguousarray(x, dtype=float), grad, self.buffer), grad

    def unconstrain_start(self) -> np.ndarray:
        """``x`` at the starting values (before jitter)."""
        v, lo, hi = self.start_values, self.lo, self.hi
        z = v.copy()
        low, high = np.isfinite(lo), np.isfinite(hi)
        only_lo, only_hi, both = low & ~high, high & ~low, low & high
        z[only_lo] = np.log(v[only_lo] - lo[only_lo])
        z[only_hi] = np.log(hi[only_hi] - v[only_hi])
        u = (v[both] - lo[both]) / (hi[both] - lo[both])
        z[both] = np.log(u) - np.log1p(-u)
        return np.concatenate([z, np.zeros(self.pair_a.shape[0])])

    def constrained(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Draws ``x`` (..., n_dim) as the engines' Deterministics (see :mod:`.common`)."""
        k = self.n_beta + 1 + self.q
        z = x[..., :k]
        lo, hi = self.lo, self.hi
        low, high = np.isfinite(lo), np.isfinite(hi)
        with np.errstate(over="ignore", invalid="ignore"):  # the branches np.where discards
            vals = np.where(low & ~high, lo + np.exp(z), z)
            vals = np.where(high & ~low, hi - np.exp(z), vals)
            vals = np.where(low & high, lo + (hi - lo) / (1.0 + np.exp(-z)), vals)
        out: dict[str, np.ndarray] = {}
        beta = vals[..., :self.n_beta]
        if self.centred:
            out["Intercept_c"] = beta[..., 0]
            beta = beta[..., 1:]
        out["b_c"] = beta
        out["sigma"] = vals[..., self.n_beta]
        out[f"sd__{self.factor}"] = vals[..., self.n_beta + 1:k]
        L = np.broadcast_to(np.eye(self.q), x.shape[:-1] + (self.q, self.q)).copy()
        for j, (a, b) in enumerate(zip(self.pair_a, self.pair_b)):
            rho = np.tanh(0.5 * x[..., k + j])
            L[..., b, a] = rho
            L[..., b, b] = np.sqrt((1.0 - rho) * (1.0 + rho))
        out[f"Lcorr__{self.factor}"] = L
        return out


def build(design: Design, resolved: ResolvedPriors, collapsed: Any) -> Kernel | None:
    """The kernel for ``design`` and its priors, or None where it does not apply.

    It applies to one grouping factor (``collapsed`` is a ``OneFactor``) whose
    correlated blocks have at most two terms, with built-in prior families
    (bounded as their classes require) and the built-in ``lkj`` prior.
    """
    from .collapsed import OneFactor

    if not isinstance(collapsed, OneFactor) or len(design.factors) != 1:
        return None
    f = design.factors[0]
    if any(len(block) > 2 for block in f.blocks):
        return None
    slots = ([Slot("Intercept")] if design.centred_intercept else []) + \
        [Slot("b", c) for c in design.coef_names] + [Slot("sigma")] + [Slot("sd", t, f.name) for t in f.terms]
    priors = [resolved.get(s.class_, s.coef, s.group) for s in slots]
    if not all(_supported(p) for p in priors):
        return None
    pairs = [tuple(block) for block in f.blocks if len(block) == 2]
    eta = []
    if pairs:
        cor = resolved.get("cor", "", f.name)
        if not cor.family.builtin or cor.family.name not in ("lkj", "lkj_corr_cholesky"):
            return None
        eta = [float(cor.args[0])] * len(pairs)
    n_beta = len(slots) - 1 - len(f.terms)
    args = np.zeros((len(priors), 3))
    for k, p in enumerate(priors):
        args[k, :len(p.args)] = p.args
    bounds = np.array([support(p) for p in priors], dtype=float).reshape(-1, 2)
    starts = np.array([start_value(p, 0.0 if k < n_beta else 0.5) for k, p in enumerate(priors)])
    fixed, fac = collapsed.fixed, collapsed.factor
    data = (np.ascontiguousarray(fixed.shift, dtype=float), float(fixed.n),
            np.ascontiguousarray(fixed.WtW, dtype=float), np.ascontiguousarray(fixed.Wty, dtype=float),
            float(fixed.yty), np.ascontiguousarray(fac.ZtZ, dtype=float),
            np.ascontiguousarray(fac.ZtW, dtype=float), np.ascontiguousarray(fac.Zty, dtype=float))
    return Kernel(
        n_beta=n_beta, q=len(f.terms), factor=f.name, centred=design.centred_intercept,
        fam=np.array([FAMILIES[p.family.name] for p in priors], dtype=np.int64), args=args,
        lo=np.ascontiguousarray(bounds[:, 0]), hi=np.ascontiguousarray(bounds[:, 1]), start_values=starts,
        pair_a=np.array([a for a, _ in pairs], dtype=np.int64),
        pair_b=np.array([b for _, b in pairs], dtype=np.int64), eta=np.array(eta, dtype=float), data=data,
    )


def nutpie_model(kernel: Kernel) -> Any:
    """The kernel as a nutpie model with one expanded variable ``x`` (the unconstrained draws).

    nutpie calls the cached C callbacks directly, as it does for PyMC models
    it compiles with numba (its ``CompiledPyMCModel``, given our callbacks
    and packed buffer in place of PyTensor's), so no Python runs per
    gradient. Should that internal interface change in a future nutpie, the
    public Python-function interface is used instead (slower per gradient,
    same draws' distribution).

    The initial point is the kernel's starting values, jittered uniformly by
    ±1 on the unconstrained scale from nutpie's per-chain seed, as PyMC does.
    """
    start = kernel.unconstrain_start()
    n_dim = kernel.n_dim

    def initial_point(seed: int) -> np.ndarray:
        return start + np.random.default_rng(seed).uniform(-1.0, 1.0, n_dim)

    try:
        from nutpie.compile_pymc import CompiledPyMCModel

        logp, expand = c_callbacks()
        return CompiledPyMCModel(
            compiled_logp_func=logp, compiled_expand_func=expand, initial_point_func=initial_point,
            shared_data={}, shared_var_keys={}, user_data=kernel.buffer, n_expanded=n_dim,
            shape_info=(["x"], [slice(0, n_dim)], [(n_dim,)]), logp_func=None, expand_func=None,
            _n_dim=n_dim, _shapes={"x": (n_dim,)}, _coords={}, dims={},
        )
    except (ImportError, TypeError):  # pragma: no cover - a nutpie whose internals moved
        return _pyfunc_model(kernel, initial_point)


def _pyfunc_model(kernel: Kernel, initial_point: Any) -> Any:
    from nutpie.compiled_pyfunc import from_pyfunc

    n_dim = kernel.n_dim

    def make_logp_fn() -> Any:
        logp = kernel.logp

        def fn(x: np.ndarray, **_: Any) -> tuple[float, np.ndarray]:
            return logp(x)

        return fn

    def make_expand_fn(*_: Any) -> Any:
        def expand(x: np.ndarray, **__: Any) -> dict[str, np.ndarray]:
            return {"x": np.array(x, dtype=float)}

        return expand

    return from_pyfunc(n_dim, make_logp_fn, make_expand_fn, [np.dtype("float64")], [(n_dim,)], ["x"],
                       make_initial_point_fn=initial_point)
