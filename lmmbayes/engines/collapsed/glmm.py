"""The collapsed engine for GLMMs: random effects integrated out by adaptive quadrature, in C.

For a non-Gaussian family with one grouping factor, the groups are
independent given the hyperparameters, so the marginal likelihood is a product
of q-dimensional integrals, one per group (with two nested factors, one nested
integral per outer level: `NestedGlmmKernel`; with two terms at either level its
Laplace approximation, checked against nested quadrature before and after sampling). ``_kernel.c`` evaluates each by
adaptive Gauss-Hermite quadrature (lme4's ``nAGQ``, here also for two
correlated terms by a tensor-product rule) around the group's mode, found by
Newton's method, and its gradient by the same quadrature of Fisher's
identity; nutpie calls it directly, so no fit compiles anything. NUTS then
samples only the population-level effects, the family's parameters and the
sds and correlation, and the random effects are drawn afterwards for every
posterior draw from their exact conditional distribution.

Where each group's rows depend on its coefficients ``A_g beta + b_g`` alone (predictors
with random slopes, or constant within groups) and the family has no parameter of
its own (or one that only scales the log-likelihood: gamma's shape), the nodes can be computed once, at the
posterior mode (`FixedNodes`),
where the pilot shows they integrate as well: a gradient then reads G x K numbers
instead of the rows, so its cost no longer grows with the data.

Accuracy is measured on every fit, not assumed: the log marginal likelihood
at ``K`` nodes per dimension is compared with ``2K`` over posterior draws
(`check_accuracy`). Reweighting the posterior from K to 2K nodes would use the
weights ``exp(Δ)``, ``Δ = log p_2K − log p_K``; the fit passes when the SD of
``Δ`` over the draws is at most `ACCURACY_SD` (0.1: the reweighted posterior
keeps about 99% of its effective draws and no mean moves by more than about a
tenth of a posterior SD), which makes the K-node posterior indistinguishable
from a more exact one.

Rows that share a group, a row of the design matrices, an offset and a weight
are summed into one first (binomial and Poisson families: sums of successes
and trials, or of counts and multiplicities), which is exact; log-likelihoods
and LOO stay per original row (they are computed from the draws).
"""

from __future__ import annotations

import functools
import itertools
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from ...design import Design
from ...errors import FitError, InaccurateIntegration
from ..base import EngineResult, finish, flat, unflat
from ..plan import Plan
from ..sampling import SamplerConfig, sample_compiled
from . import kernel

#: Quadrature nodes per dimension by the number of terms q, chosen by measurement: the SD over posterior
#: draws of log p_K − log p_2K (the accuracy rule below) on the hard case of the issue (bernoulli, 3 rows
#: per group, group SD 2) was 0.17 for K = 1 (Laplace), 0.52 at 3, 0.12 at 5, 0.018 at 7 and 0.0005 at 9;
#: with two correlated terms (bernoulli, 6 rows per group, SDs 1.5 and 0.7) 0.27 at 3, 0.049 at 5, 0.0047
#: at 6. A gradient costs about (4 + K^q) passes over the rows.
NODES = {1: 9, 2: 6}
#: Fewer nodes per dimension `choose_nodes` may settle for, in order, before sampling.
FEWER_NODES = {1: (1, 3, 5, 7), 2: (1, 3, 4, 5)}
#: Random points (jittered as nutpie jitters its starting points) at which `choose_nodes` compares rules.
PILOT_POINTS = 8
#: Largest difference the pilot allows between a rule's gradient and the reference rule's, in posterior SDs
#: (each component times the parameter's SD at the mode). The quadrature's gradient (Fisher's identity) is not
#: the exact derivative of its value; NUTS stays exact but its step size collapses when the two disagree.
#: Measured (bernoulli, 10 rows per group, two terms, 1,000 groups): 0.12 at 4 x 4 nodes, where the value
#: already matched to SD 0.025 but NUTS took steps of 0.02 and 184 gradients per draw; 0.024 at 5 x 5 and
#: 0.009 at 6 x 6, both with steps of 0.56 and 6.6 gradients per draw.
GRADIENT_SD = 0.05
#: Groups with at least this many rows (binomial: trials) are "large": their conditional distributions are
#: close to normal, where few nodes may do. They start (BFGS in `choose_nodes`) with `LARGE_NODES`, one node:
#: the Laplace approximation, whose gradient ``_kernel.c`` computes exactly (implicit-function theorem), at
#: about 4 passes over the group's rows against 3 + K^q for quadrature; `choose_nodes` then keeps it only
#: where it integrates as well as more nodes. Measured (bernoulli, (1 + x | g)): against 3 x 3 nodes, the SD
#: over the posterior of the log-likelihood difference was 0.023 with 100 groups of 50 rows, 0.048 with 400,
#: and 0.16 with 1,000 groups of 100 rows (errors add up over groups).
LARGE_GROUP_ROWS = 50
LARGE_NODES = {1: 1, 2: 1}
#: The large groups' rules `choose_nodes` tries, in order (the last is taken where none matches).
LARGE_CANDIDATES = (1, 2, 3)
#: Nodes per dimension of the precomputed rule (`FixedNodes`) the pilot tries, in order: a gradient then reads
#: G x K^q numbers instead of the rows (about 25 ns each), so nodes are cheap; the pilot and the check decide.
FIXED_NODES = {1: (9, 15), 2: (5, 7)}
#: The adaptive rule (nodes per dimension) the check after sampling compares precomputed nodes with: unlike K
#: against 2K of one rule, a second method, whose nodes follow every draw. Each check costs CHECK_DRAWS x K^q
#: passes over the large groups' rows.
FIXED_CHECK_NODES = {1: 5, 2: 4}
#: Family codes (``_kernel.c``) whose parameter phi multiplies the linear predictor's part of each row's
#: log-likelihood (gamma: -phi (eta + y e^-eta)), so that precomputed nodes keep their places and only rescale
#: their weights as phi moves (`FixedNodes.scaled`).
SCALED_CODES = frozenset({6})
#: Largest number of correlated terms per group the quadrature handles (the cost grows as K^q).
MAX_TERMS = 2
#: The accuracy rule: the SD over posterior draws of log p_2K − log p_K at most this.
ACCURACY_SD = 0.1
#: Posterior draws the accuracy check evaluates (evenly spaced).
CHECK_DRAWS = 100
#: Steps of the independence Metropolis chain that draws each group's random effects per posterior draw:
#: for small groups, and for groups of the large-group rule (nearly normal, so nearly every proposal is
#: accepted: 0.9 and more measured); each step is a pass over the group's rows.
EFFECT_STEPS = 10
LARGE_EFFECT_STEPS = 4
#: Posterior draws per task when the random effects are drawn on several threads (fixed, so that a seed
#: gives the same draws on any machine).
_CHUNK = 256


def code(design: Design) -> int:
    """The C kernel's code for the family and link (0 where there is none)."""
    return design.family.quadrature_codes.get(design.family.link, 0)


def applies(design: Design) -> tuple[bool, str]:
    """Whether the quadrature engine can fit ``design`` (a non-Gaussian family)."""
    fam = design.family
    if not code(design):
        links = [k for k, v in fam.quadrature_codes.items() if v]
        return False, (f"family {fam.name!r} with link {fam.link!r} has no collapsed kernel"
                       + (f" (it has one for link {', '.join(repr(k) for k in links)})" if links else ""))
    if not kernel.available():
        return False, "the C kernel is not installed (lmmbayes was built without a C compiler)"
    if not design.rows_in_memory:
        return False, "non-Gaussian families need the rows in memory (a Dask frame is reduced for Gaussian models only)"
    if len(design.factors) == 2:
        return nested_applies(design)
    if len(design.factors) != 1:
        return False, ("non-Gaussian families are integrated group by group, so the collapsed engine needs one "
                       f"grouping factor or two nested ones; this model has {len(design.factors)}")
    if design.factors[0].q > MAX_TERMS:
        return False, (f"the quadrature handles at most {MAX_TERMS} terms per group, and '{design.factors[0].name}' "
                       f"has {design.factors[0].q}")
    return True, ""


def gauss_hermite(k: int, q: int) -> tuple[np.ndarray, np.ndarray]:
    """Tensor-product Gauss-Hermite nodes (k^q, q) for the standard normal, and log(weight) + |z|²/2."""
    z, w = np.polynomial.hermite_e.hermegauss(k)
    w = w / math.sqrt(2 * math.pi)
    grids = np.meshgrid(*[z] * q, indexing="ij")
    nodes = np.stack([g.ravel() for g in grids], axis=1)
    weights = np.prod(np.stack([g.ravel() for g in np.meshgrid(*[w] * q, indexing="ij")], axis=1), axis=1)
    return nodes, np.log(weights) + 0.5 * (nodes**2).sum(axis=1)


@dataclass(frozen=True)
class GroupedRows:
    """The rows the kernel reads, sorted by group and (where exact) summed.

    ``W`` holds the standardised population-level columns (a leading column
    of ones for the centred intercept), ``Z`` the scaled group-level columns,
    ``n`` the trials (binomial), or the multiplicity of summed rows (Poisson);
    ``sizes`` each group's rows (binomial: trials) before summing.
    """

    starts: np.ndarray
    W: np.ndarray
    Z: np.ndarray
    y: np.ndarray
    n: np.ndarray
    offset: np.ndarray
    weight: np.ndarray
    n_original: int
    sizes: np.ndarray


@dataclass(frozen=True)
class _Rows:
    """The design's rows in the plan's standardised units, before sorting: ``W`` the population-level columns (a
    leading column of ones for the centred intercept), ``Z`` each factor's scaled group-level columns, ``index``
    each factor's level per row."""

    W: np.ndarray
    Z: tuple[np.ndarray, ...]
    index: tuple[np.ndarray, ...]
    y: np.ndarray
    n: np.ndarray
    offset: np.ndarray
    weight: np.ndarray

    def summed(self, design: Design) -> _Rows:
        """Rows that share their levels, W, Z, offset and weight as one (sums of y and n) where the family allows
        it (binomial: successes and trials; Poisson: counts and multiplicities), which is exact."""
        if not design.family.sums_rows:
            return self
        key = np.column_stack([*self.index, self.W, *self.Z, self.offset, self.weight])
        _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
        if first.size == self.y.shape[0]:
            return self
        sums = np.zeros((first.size, 2))
        np.add.at(sums, inverse.ravel(), np.column_stack([self.y, self.n]))
        return _Rows(self.W[first], tuple(z[first] for z in self.Z), tuple(g[first] for g in self.index),
                     sums[:, 0], sums[:, 1], self.offset[first], self.weight[first])


def _standard_rows(design: Design, plan: Plan) -> _Rows:
    """The design's rows in the plan's standardised units (the GLMM families keep y as it is)."""
    rows = design.require_rows("The collapsed engine", "")
    std = plan.std
    assert rows.y is not None and std.y_scale == 1.0 and std.y_shift == 0.0
    W = (rows.X - std.x_centre) / std.x_scale
    if design.centred_intercept:
        W = np.column_stack([np.ones(W.shape[0]), W])
    N = rows.y.shape[0]
    return _Rows(W, tuple(f.Z / z for f, z in zip(rows.factors, std.z_scale)), tuple(f.index for f in rows.factors),
                 rows.y.astype(float), rows.extra.trials.astype(float) if rows.extra.trials is not None else np.ones(N),
                 rows.offset if rows.offset is not None else np.zeros(N),
                 rows.weights if rows.weights is not None else np.ones(N))


def grouped_rows(design: Design, plan: Plan) -> GroupedRows:
    """The design's rows in the plan's standardised units, sorted by group and summed where exact."""
    raw = _standard_rows(design, plan)
    # a group's size in trials (rows for bernoulli and count families): the same before and after summing rows
    sizes = np.bincount(raw.index[0], weights=raw.n, minlength=design.factors[0].n_levels)
    r = raw.summed(design)
    group = r.index[0]
    order = np.argsort(group, kind="stable")
    starts = np.searchsorted(group[order], np.arange(design.factors[0].n_levels + 1))
    c = np.ascontiguousarray
    return GroupedRows(starts.astype(float), c(r.W[order], dtype=float), c(r.Z[0][order], dtype=float),
                       c(r.y[order]), c(r.n[order]), c(r.offset[order], dtype=float), c(r.weight[order], dtype=float),
                       raw.y.shape[0], sizes)


def group_maps(rows: GroupedRows, q: int) -> np.ndarray | None:
    """Per group, ``A_g`` (G, q, p) with ``W_g = Z_g A_g``: the population-level columns lie in the span of the
    group-level ones. Then a group's rows depend on ``theta_g = A_g beta + b_g`` alone, and its log-likelihood
    is a fixed function of ``theta_g`` (`FixedNodes`). True for group-level predictors (constant within a
    group, in the span of the intercept) and for predictors with a random slope; None where some group has a
    predictor that varies within it without a random slope, or no rows."""
    starts = rows.starts.astype(np.int64)
    sizes = np.diff(starts)
    if sizes.size == 0 or (sizes == 0).any():
        return None
    W, Z = rows.W, rows.Z
    ztz = np.add.reduceat(Z[:, :, None] * Z[:, None, :], starts[:-1], axis=0)
    ztw = np.add.reduceat(Z[:, :, None] * W[:, None, :], starts[:-1], axis=0)
    A = np.linalg.pinv(ztz, hermitian=True) @ ztw
    group = np.repeat(np.arange(sizes.size), sizes)
    resid = W - np.einsum("nq,nqp->np", Z, A[group])
    return A if np.abs(resid).max(initial=0.0) <= 1e-8 * (1.0 + np.abs(W).max(initial=0.0)) else None


@dataclass(frozen=True, eq=False)
class FixedNodes:
    """Quadrature nodes per group computed once, at the pilot's posterior mode, for ``_kernel.c``'s
    ``fixed_group``: ``theta_gk = A_g beta_hat + delta_gk`` and ``c_gk`` (the rows' log-likelihood there, with
    the node's weight and the rule's Jacobian). Where every group's rows depend on ``theta_g`` alone
    (`group_maps`) and the family has no parameter of its own (or gamma's shape, which scales the log-likelihood
    at every node: `scaled`), a gradient reads these G x K numbers instead of the rows. It is the adaptive rule with its nodes held where the pilot put them: equal to it at the pilot's
    point, and a quadrature of the same integral elsewhere, accurate while the posterior's hyperparameters move
    each group's conditional little against its width (informative groups, many of them)."""

    nodes_per_dim: int
    beta_hat: np.ndarray
    delta: np.ndarray
    c: np.ndarray
    #: Which groups use them (the others keep their adaptive rule).
    groups: np.ndarray
    #: Gamma (`SCALED_CODES`): per group and node S_gk, the rows' log-likelihood at shape 1 (``c`` leaves
    #: shape x S_gk out), and per group (sum w, sum w log y) for its terms in the shape alone; None otherwise.
    scaled: tuple[np.ndarray, np.ndarray] | None = None


@dataclass(frozen=True, eq=False)
class GlmmKernel:
    """The numbers ``glmm_log_density`` reads for one model, and the maps to and from ``x``.

    Parameters in the plan's order: the population-level effects (centred
    intercept first), the family's parameters (negative binomial and gamma: shape), the
    sds, one ``z`` per correlated pair (see `kernel.ParamArrays`).
    """

    code: int
    n_beta: int
    n_dpar: int
    q: int
    params: kernel.ParamArrays
    nodes_per_dim: int
    large_nodes_per_dim: int
    rows: GroupedRows
    #: `group_maps`, where every group's rows depend on theta_g alone and the family has no parameter (or one of
    #: `SCALED_CODES`).
    maps: np.ndarray | None = None
    #: Precomputed nodes for some groups (`FixedNodes.groups`), or None.
    fixed: FixedNodes | None = None

    callback: ClassVar[str] = "glmm_logp"
    #: Length of the buffer's header (``GHEADER`` in ``_kernel.c``).
    HEADER: ClassVar[int] = 13

    @property
    def n_dim(self) -> int:
        return self.params.n_dim

    @property
    def n_groups(self) -> int:
        return self.rows.starts.shape[0] - 1

    @functools.cached_property
    def buffer(self) -> np.ndarray:
        """Everything ``glmm_log_density`` reads, packed into one float64 array (not to be modified)."""
        small = gauss_hermite(self.nodes_per_dim, self.q)
        large = gauss_hermite(self.large_nodes_per_dim, self.q)
        r, f = self.rows, self.fixed
        # _kernel.c's rule codes: 0 and 1 adaptive (small, large groups), 2 and 3 precomputed (small, large)
        rule = self.large_groups.astype(float) + (2.0 * f.groups if f is not None else 0.0)
        precomputed = [f.beta_hat, self.maps, f.delta, f.c, *(f.scaled or ())] if f is not None \
            else [np.zeros(self.n_beta)]
        parts = self.params.packed() + [*small, *large, rule, r.starts, r.W, r.Z, r.y, r.n, r.offset, r.weight,
                                        *precomputed]
        body = np.concatenate([np.asarray(p, dtype=float).ravel() for p in parts])
        max_rows = int(np.diff(r.starts).max()) if self.n_groups else 0
        header = [self.HEADER + body.size, self.n_dim, self.n_beta, self.q, self.n_groups,
                  self.params.n_cor, r.y.shape[0], self.n_dpar, self.code, small[0].shape[0], max_rows,
                  large[0].shape[0], f.delta.shape[1] if f is not None else 0]
        return np.ascontiguousarray(np.concatenate([np.asarray(header, dtype=float), body]))

    @property
    def large_groups(self) -> np.ndarray:
        """Which groups use the rule for large groups (`LARGE_GROUP_ROWS` rows, or binomial trials, or more)."""
        return self.rows.sizes >= LARGE_GROUP_ROWS

    def with_nodes(self, nodes_per_dim: int, large_nodes_per_dim: int | None = None) -> GlmmKernel:
        """The same model integrated by adaptive quadrature with other numbers of nodes per dimension (small
        groups, large groups)."""
        return replace(self, nodes_per_dim=nodes_per_dim, fixed=None,
                       large_nodes_per_dim=nodes_per_dim if large_nodes_per_dim is None else large_nodes_per_dim)

    def with_small_nodes(self, nodes_per_dim: int) -> GlmmKernel:
        """The same rules for the large groups, and ``nodes_per_dim`` for the others."""
        return replace(self, nodes_per_dim=nodes_per_dim)

    def with_fixed(self, x: np.ndarray, nodes_per_dim: int, groups: np.ndarray | None = None) -> GlmmKernel | None:
        """``groups`` (default: the large ones) integrated by `FixedNodes` placed at the point ``x``; None where
        they do not apply (`group_maps`, a family parameter other than `SCALED_CODES`') or a group's mode could not
        be found there."""
        import ctypes

        scaled = self.code in SCALED_CODES
        if self.maps is None or (self.n_dpar and not scaled):
            return None
        z, logw = gauss_hermite(nodes_per_dim, self.q)
        K = z.shape[0]
        delta, c, beta_hat = np.empty((self.n_groups, K, self.q)), np.empty((self.n_groups, K)), np.empty(self.n_beta)
        sk = np.empty((self.n_groups, K)) if scaled else None
        lib = kernel._library()
        assert lib is not None
        f64p = ctypes.POINTER(ctypes.c_double)
        ptr = lambda a: np.ascontiguousarray(a, dtype=float).ctypes.data_as(f64p)  # noqa: E731
        x, z, logw = (np.ascontiguousarray(a, dtype=float) for a in (x, z, logw))
        if lib.glmm_fixed_nodes(ptr(self.buffer), ptr(x), K, ptr(z), ptr(logw), ptr(delta), ptr(c), ptr(beta_hat),
                                None if sk is None else ptr(sk)):
            return None
        if not (np.isfinite(c).all() and np.isfinite(delta).all() and (sk is None or np.isfinite(sk).all())):
            return None
        chosen = self.large_groups if groups is None else np.asarray(groups, dtype=bool)
        scale = None
        if sk is not None:
            r, first = self.rows, self.rows.starts[:-1].astype(np.int64)
            sums = np.column_stack([np.add.reduceat(r.weight, first), np.add.reduceat(r.weight * np.log(r.y), first)])
            scale = (sk, sums)
        return replace(self, fixed=FixedNodes(nodes_per_dim, beta_hat, delta, c, chosen, scale))

    @property
    def rule_text(self) -> str:
        """The nodes per group, in words."""
        power = "^2" if self.q == 2 else ""
        n_large = int(self.large_groups.sum())
        words = lambda k: "the Laplace approximation" if k == 1 else f"{k}{power} nodes"  # noqa: E731
        small, large = words(self.nodes_per_dim), words(self.large_nodes_per_dim)
        if self.fixed is not None:
            fixed = f"{self.fixed.nodes_per_dim}{power} nodes precomputed at the posterior mode"
            if self.fixed.groups.all():
                return f"{fixed} for every group"
            large = fixed
        if n_large == 0 or small == large:
            return f"{small} per group"
        if n_large == self.n_groups:
            return f"{large} for every group (each has {LARGE_GROUP_ROWS} rows or more)"
        return f"{small} per group, {large} for the {n_large} groups with {LARGE_GROUP_ROWS} rows or more"

    def logp(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        grad, x = np.empty(self.n_dim), np.ascontiguousarray(x, dtype=float)
        return self.params.finish(x, kernel.log_density(x, grad, self.buffer, "glmm_log_density"), grad), grad

    def unconstrain_start(self) -> np.ndarray:
        return self.params.unconstrain_start()

    def constrained(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.params.constrained(x)

    def effects(self, xs: np.ndarray, seed: int, steps: int = EFFECT_STEPS,
                large_steps: int = LARGE_EFFECT_STEPS) -> tuple[np.ndarray, np.ndarray]:
        """Random effects (S, groups, q) in standardised units for draws ``xs`` (S, n_dim), and the share of
        accepted Metropolis moves per draw (S,)."""
        import ctypes

        lib = kernel._library()
        assert lib is not None
        xs = np.ascontiguousarray(xs, dtype=float)
        S = xs.shape[0]
        out = np.empty((S, self.n_groups, self.q))
        accepted = np.empty(S)
        f64p = ctypes.POINTER(ctypes.c_double)
        buf = self.buffer

        def task(start: int) -> int:
            stop = min(start + _CHUNK, S)
            # ctypes releases the GIL, so chunks run in parallel; each thread keeps its own warm starts
            return int(lib.glmm_draw(buf.ctypes.data_as(f64p), xs[start:stop].ctypes.data_as(f64p), stop - start,
                                     steps, large_steps, (seed * 1_000_003 + start) % 2**64,
                                     out[start:stop].ctypes.data_as(f64p), accepted[start:stop].ctypes.data_as(f64p)))

        with ThreadPoolExecutor(max_workers=2) as pool:
            codes = list(pool.map(task, range(0, S, _CHUNK)))
        if any(codes):
            raise FitError("Drawing the random effects failed: a group's conditional mode could not be found "
                           "(non-finite log-likelihood). Use method=\"joint\".")
        n_large = int(self.large_groups.sum())
        moves = (steps - 1) * (self.n_groups - n_large) + (large_steps - 1) * n_large
        return out, accepted / max(moves, 1)


# -- two nested factors ----------------------------------------------------------------------------

#: Nodes (outer, inner) per level of the nested rule, chosen by measurement: on the hard case (bernoulli, 30 schools
#: x 4 classes x 3 rows, SDs 2 and 1.5) the SD over posterior draws of the log-likelihood against 16 x 16 nodes was
#: 0.31 at 3 x 3, 0.32 at 5 x 3, 0.053 at 3 x 5, 0.045 at 5 x 5, 0.010 at 5 x 7, 0.0036 at 7 x 7 and 0.0023 at
#: 9 x 9: the inner levels' few rows need the nodes. A gradient costs about Ka (Kb + 1) + 3 passes over the rows.
NESTED_NODES = (7, 7)
#: The fewer nodes `choose_nested_nodes` may settle for, cheapest first.
NESTED_FEWER = ((3, 3), (5, 3), (3, 5), (5, 5), (3, 7), (5, 7))
#: The nested rule for factors of several terms: the Laplace approximation of each outer level's integral, jointly
#: over its effects and its inner levels' (a tensor rule would cost Ka^qa Kb^qb evaluations per row: 625 at 5 nodes
#: with two terms each, slower per gradient than the joint engine samples).
NESTED_LAPLACE = (1, 1)
#: Nodes per dimension (outer, inner) of the nested quadrature the Laplace rule is checked against (its value alone;
#: before sampling at the pilot's points, after it over the draws). Measured against 8 x 8 (two terms per factor,
#: 30 schools x 5 classes, at the pilot's points): SD 0.022 for bernoulli with 10 rows per class, where Laplace's
#: was 0.66; 0.005 for Poisson with 4, where Laplace's was 0.14. 3 x 3 is not enough (0.24 and 0.08): the inner
#: levels' few rows need the nodes. An evaluation costs 3^qa (4^qb + 1) passes over the rows.
NESTED_CHECK = (3, 4)
#: Sweeps of the Metropolis-within-Gibbs chain that draws an outer level's effects and its inner levels' per
#: posterior draw (``nested_glmm_draw``): each sweep is two passes over the outer level's rows.
NESTED_EFFECT_STEPS = 10


def nested_applies(design: Design) -> tuple[bool, str]:
    """Whether the nested quadrature (`NestedGlmmKernel`) fits a design with two grouping factors."""
    from ...design.crossprod import layout_of

    rows = design.require_rows("The collapsed engine", "")
    lay, _ = layout_of([f.name for f in design.factors], [f.index for f in rows.factors],
                       [f.n_levels for f in design.factors], [f.q for f in design.factors])
    names = " and ".join(f"'{f.name}'" for f in design.factors)
    if lay is None or lay.kind != "nested":
        return False, (f"the grouping factors {names} are crossed, not nested; a non-Gaussian family is integrated "
                       "by outer level, which needs every level of one factor to lie within one level of the other")
    many = [f"'{f.name}' has {f.q}" for f in design.factors if f.q > MAX_TERMS]
    if many:
        return False, (f"the nested integration handles at most {MAX_TERMS} terms per grouping factor, and "
                       f"{', '.join(many)}")
    return True, ""


@dataclass(frozen=True)
class NestedRows:
    """The rows of a two-factor nested model as ``nested_glmm_log_density`` reads them: sorted by inner level, the
    inner levels by outer level, and (where exact) summed.

    ``outer_starts`` (outer levels + 1) indexes the sorted inner levels, ``inner_starts`` (inner levels + 1) the
    rows; ``inner_order[k]`` is the design's index of the k-th sorted inner level. ``za`` (N, qa) and ``zb`` (N, qb)
    are the two factors' scaled group-level columns.
    """

    outer_starts: np.ndarray
    inner_starts: np.ndarray
    inner_order: np.ndarray
    W: np.ndarray
    za: np.ndarray
    zb: np.ndarray
    y: np.ndarray
    n: np.ndarray
    offset: np.ndarray
    weight: np.ndarray
    n_original: int


def nested_rows(design: Design, plan: Plan, outer: int, inner: int) -> NestedRows:
    """The design's rows in the plan's standardised units for factors ``outer`` and ``inner`` (indices into
    ``design.factors``), sorted and summed where exact."""
    raw = _standard_rows(design, plan)
    r = raw.summed(design)
    g_in, g_out, za, zb = r.index[inner], r.index[outer], r.Z[outer], r.Z[inner]
    n_outer, n_inner = design.factors[outer].n_levels, design.factors[inner].n_levels
    parent = np.zeros(n_inner, dtype=np.int64)
    parent[g_in] = g_out
    inner_order = np.argsort(parent, kind="stable")  # inner levels by outer level
    rank = np.empty(n_inner, dtype=np.int64)
    rank[inner_order] = np.arange(n_inner)
    order = np.argsort(rank[g_in], kind="stable")
    inner_starts = np.searchsorted(rank[g_in][order], np.arange(n_inner + 1))
    outer_starts = np.searchsorted(parent[inner_order], np.arange(n_outer + 1))
    c = np.ascontiguousarray
    return NestedRows(outer_starts.astype(float), inner_starts.astype(float), inner_order,
                      c(r.W[order], dtype=float), c(za[order], dtype=float), c(zb[order], dtype=float),
                      c(r.y[order]), c(r.n[order]), c(r.offset[order], dtype=float), c(r.weight[order], dtype=float),
                      raw.y.shape[0])


@dataclass(frozen=True, eq=False)
class NestedGlmmKernel:
    """The numbers ``nested_glmm_log_density`` reads for a model with two nested factors.

    Parameters as `GlmmKernel`'s, with both factors' sds and correlations (Λ is block diagonal). With one term per
    factor the integral is a nested adaptive quadrature with ``nodes`` per level; with more, the Laplace
    approximation (``nodes`` (1, 1), `NESTED_LAPLACE`; other nodes give nested quadrature's value alone, for the
    accuracy check). The buffer after the priors: the outer rule's standard-normal nodes (Ka^qa x qa) and
    log(weight) + |z|²/2, the inner rule's, ``outer_starts``, ``inner_starts``, then per row W, za, zb, y, trials
    (or multiplicity), offset, weight (`NestedRows`).
    """

    code: int
    n_beta: int
    n_dpar: int
    params: kernel.ParamArrays
    nodes: tuple[int, int]
    rows: NestedRows
    #: Indices into ``design.factors`` and each factor's sd offset among the sds.
    outer: int
    inner: int
    off_outer: int
    off_inner: int
    names: tuple[str, str]
    #: Terms (qa, qb) of the outer and the inner factor.
    terms: tuple[int, int] = (1, 1)

    callback: ClassVar[str] = "nested_glmm_logp"
    HEADER: ClassVar[int] = 19

    @property
    def n_dim(self) -> int:
        return self.params.n_dim

    @property
    def levels(self) -> tuple[int, int]:
        return self.rows.outer_starts.shape[0] - 1, self.rows.inner_starts.shape[0] - 1

    @functools.cached_property
    def buffer(self) -> np.ndarray:
        """Everything ``nested_glmm_log_density`` reads, packed into one float64 array (not to be modified)."""
        r = self.rows
        outer, inner = gauss_hermite(self.nodes[0], self.terms[0]), gauss_hermite(self.nodes[1], self.terms[1])
        parts = self.params.packed() + [*outer, *inner, r.outer_starts, r.inner_starts, r.W, r.za, r.zb, r.y, r.n,
                                        r.offset, r.weight]
        body = np.concatenate([np.asarray(a, dtype=float).ravel() for a in parts])
        o, i = r.outer_starts.astype(np.int64), r.inner_starts.astype(np.int64)
        max_rows = int(np.diff(i[o]).max(initial=0))
        max_inner = int(np.diff(o).max(initial=0))
        Ga, Gb = self.levels
        unit = self.code == 1 and bool(np.all(r.n == 1.0) and np.all(r.weight == 1.0))  # bernoulli-logit rows
        header = [self.HEADER + body.size, self.n_dim, self.n_beta, self.params.q, Ga, self.params.n_cor,
                  r.y.shape[0], self.n_dpar, self.code, self.nodes[0], self.nodes[1], max_rows, max_inner,
                  self.off_outer, self.off_inner, Gb, float(unit), *self.terms]
        return np.ascontiguousarray(np.concatenate([np.asarray(header, dtype=float), body]))

    @property
    def rule_text(self) -> str:
        """The nodes per level, in words."""
        if self.laplace:
            return (f"the Laplace approximation per '{self.names[0]}' level, jointly with its "
                    f"'{self.names[1]}' levels")
        power = lambda q: f"^{q}" if q > 1 else ""  # noqa: E731
        return (f"{self.nodes[0]}{power(self.terms[0])} nodes per '{self.names[0]}' level and, within each, "
                f"{self.nodes[1]}{power(self.terms[1])} per '{self.names[1]}' level")

    @property
    def laplace(self) -> bool:
        """Whether the rule is the Laplace approximation (factors of several terms)."""
        return self.terms != (1, 1) and self.nodes == NESTED_LAPLACE

    def with_nodes(self, outer: int, inner: int) -> NestedGlmmKernel:
        """The same model with other numbers of nodes per outer and inner level."""
        return replace(self, nodes=(outer, inner))

    def finer(self) -> NestedGlmmKernel:
        """The rule the fit's rule is checked against: twice the nodes per level, `NESTED_CHECK` for Laplace."""
        if self.laplace:
            return self.with_nodes(*NESTED_CHECK)
        return self.with_nodes(finer(self.nodes[0]), finer(self.nodes[1]))

    def logp(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        grad, x = np.empty(self.n_dim), np.ascontiguousarray(x, dtype=float)
        value = kernel.log_density(x, grad, self.buffer, "nested_glmm_log_density")
        return self.params.finish(x, value, grad), grad

    def unconstrain_start(self) -> np.ndarray:
        return self.params.unconstrain_start()

    def constrained(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.params.constrained(x)

    def effects(self, xs: np.ndarray, seed: int,
                steps: int = NESTED_EFFECT_STEPS) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Random effects per factor (S, levels, q) in standardised units for draws ``xs`` (S, n_dim), in the
        design's level order, and the share of accepted Metropolis moves per draw (S,)."""
        import ctypes

        lib = kernel._library()
        assert lib is not None
        xs = np.ascontiguousarray(xs, dtype=float)
        S = xs.shape[0]
        Ga, Gb = self.levels
        qa, qb = self.terms
        out_a, out_b, accepted = np.empty((S, Ga, qa)), np.empty((S, Gb, qb)), np.empty(S)
        f64p = ctypes.POINTER(ctypes.c_double)
        buf = self.buffer

        def task(start: int) -> int:
            stop = min(start + _CHUNK, S)
            return int(lib.nested_glmm_draw(buf.ctypes.data_as(f64p), xs[start:stop].ctypes.data_as(f64p),
                                            stop - start, steps, (seed * 1_000_003 + start) % 2**64,
                                            out_a[start:stop].ctypes.data_as(f64p),
                                            out_b[start:stop].ctypes.data_as(f64p),
                                            accepted[start:stop].ctypes.data_as(f64p)))

        with ThreadPoolExecutor(max_workers=2) as pool:
            codes = list(pool.map(task, range(0, S, _CHUNK)))
        if any(codes):
            raise FitError("Drawing the random effects failed: a level's conditional mode could not be found "
                           "(non-finite log-likelihood). Use method=\"joint\".")
        inner = np.empty_like(out_b)
        inner[:, self.rows.inner_order] = out_b
        return {self.names[0]: out_a, self.names[1]: inner}, accepted


def build_nested(design: Design, plan: Plan) -> NestedGlmmKernel:
    """The nested kernel of a design with two nested factors (nested quadrature for one term each, else
    Laplace)."""
    from ...design.crossprod import layout_of

    rows = design.require_rows("The collapsed engine", "")
    lay, _ = layout_of([f.name for f in design.factors], [f.index for f in rows.factors],
                       [f.n_levels for f in design.factors], [f.q for f in design.factors])
    assert lay is not None and lay.kind == "nested"
    (inner, outer), = lay.pairs
    n_dpar = len(plan.dpars)
    offsets = kernel.sd_offsets(plan)
    fo, fi = design.factors[outer], design.factors[inner]
    q = fo.q + fi.q
    return NestedGlmmKernel(code(design), len(plan.params) - n_dpar - q, n_dpar, kernel.param_arrays(plan, q),
                            NESTED_NODES if (fo.q, fi.q) == (1, 1) else NESTED_LAPLACE,
                            nested_rows(design, plan, outer, inner), outer, inner, offsets[fo.name],
                            offsets[fi.name], (fo.name, fi.name), (fo.q, fi.q))

def build(design: Design, plan: Plan) -> GlmmKernel:
    """The kernel of ``design`` under ``plan``."""
    f = design.factors[0]
    params = kernel.param_arrays(plan, f.q)
    n_dpar = len(plan.dpars)
    rows = grouped_rows(design, plan)
    return GlmmKernel(code(design), len(plan.params) - n_dpar - f.q, n_dpar, f.q, params, NODES[f.q],
                      LARGE_NODES[f.q], rows,
                      None if n_dpar and code(design) not in SCALED_CODES else group_maps(rows, f.q))


def choose_nodes(k: GlmmKernel, seed: int) -> GlmmKernel:
    """The kernel with the fewest nodes per group that integrate as well as many more, chosen before sampling.

    Informative groups need fewer nodes (a gradient costs about K^q passes over their rows), but the
    errors of many groups add up: with 1,000 groups of 100 bernoulli rows and two terms, the Laplace
    approximation's log-likelihood differed from 3 x 3 nodes with an SD of 0.16 over the posterior, more
    than the rule allows, although each group is nearly normal. So the rules are chosen per fit: the
    posterior mode of the sampled parameters is found by BFGS (on the kernel's own gradient) and
    `PILOT_POINTS` points drawn from the normal approximation there (BFGS's inverse Hessian). At them, the
    rule is `FixedNodes` placed at the mode for every group where they apply (`group_maps`) and pass; else the
    large groups' rule is the first of: `FixedNodes`, then `LARGE_CANDIDATES` (1 is Laplace, with its exact
    gradient); and then
    the small groups' the first of `FEWER_NODES` whose log-likelihood differs from the reference rule
    (twice `NODES`, and twice the largest large-group candidate) by an SD over the points of at most a
    quarter of `ACCURACY_SD`, and whose gradient differs from the reference's by at most `GRADIENT_SD`
    posterior SDs; else `NODES` and the largest candidate. (Points jittered around the starting
    values instead chose 5 nodes on the bernoulli hard case, whose posterior needs 9: the error grows with
    the group SD.) The check after sampling (`check_accuracy`) still decides whether the fit passes.
    """
    pilot = _pilot(k, seed)
    if pilot is None:
        return k
    mode, points, sd = pilot
    small_ref = 2 * NODES[k.q]
    close = _judge(k.with_nodes(small_ref, 2 * LARGE_CANDIDATES[-1]), points, sd)
    if close is None:
        return k
    # precomputed nodes first: a gradient then costs no pass over the rows
    everywhere = np.ones(k.n_groups, dtype=bool)
    for nodes in FIXED_NODES[k.q]:
        candidate = k.with_fixed(mode, nodes, everywhere)
        if candidate is not None and close(candidate):
            return candidate
    chosen = k.with_nodes(small_ref, LARGE_CANDIDATES[-1])
    if k.large_groups.any():
        fixed = (k.with_nodes(small_ref, LARGE_CANDIDATES[-1]).with_fixed(mode, n) for n in FIXED_NODES[k.q])
        adaptive = (k.with_nodes(small_ref, c) for c in LARGE_CANDIDATES)
        chosen = next((c for c in itertools.chain(fixed, adaptive) if c is not None and close(c)), chosen)
    small = NODES[k.q]
    if (~k.large_groups).any():
        small = next((c for c in FEWER_NODES[k.q] if close(chosen.with_small_nodes(c))), small)
    return chosen.with_small_nodes(small)



def choose_nested_nodes(k: NestedGlmmKernel, seed: int) -> NestedGlmmKernel:
    """The nested kernel with the fewest nodes of `NESTED_FEWER` that integrate as well as twice
    `NESTED_NODES` at the pilot's points (`choose_nodes`' rule), else `NESTED_NODES`. Factors of several terms
    keep the Laplace approximation, the one rule whose gradient is computed (`laplace_pilot` judges it)."""
    if k.laplace:
        return k
    pilot = _pilot(k, seed)
    if pilot is None:
        return k
    _, points, sd = pilot
    close = _judge(k.finer(), points, sd)
    if close is None:
        return k
    return next((c for c in (k.with_nodes(*n) for n in NESTED_FEWER) if close(c)), k)


def laplace_pilot(k: NestedGlmmKernel, seed: int) -> str | None:
    """Why the nested Laplace rule would fail its accuracy check, measured before sampling at the pilot's points
    (`_pilot`) against `NESTED_CHECK`'s quadrature: None where its log-likelihood differs by an SD over the points
    of at most half `ACCURACY_SD` (or where the pilot found no mode, or the reference no value, to judge by)."""
    pilot = _pilot(k, seed)
    if pilot is None:
        return None
    points, reference_rule = pilot[1], k.finer()
    values = np.array([k.logp(x)[0] for x in points])
    reference = np.array([reference_rule.logp(x)[0] for x in points])
    judged = np.isfinite(reference)
    if judged.sum() < 2:
        return None
    if not np.isfinite(values[judged]).all():
        return (f"{k.rule_text} found no mode at {int((~np.isfinite(values[judged])).sum())} of the pilot's "
                f"{int(judged.sum())} points near the posterior mode, where nested adaptive quadrature had a value")
    sd = float((values - reference)[judged].std())
    if sd <= ACCURACY_SD / 2:
        return None
    return (f"{k.rule_text} differed from nested adaptive quadrature ({reference_rule.rule_text}) with SD {sd:.2g} "
            f"over {int(judged.sum())} points near the posterior mode, more than half the check's rule "
            f"SD <= {ACCURACY_SD:g}")


def _pilot(k: Any, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The posterior mode of the sampled parameters (BFGS on the kernel's own gradient), `PILOT_POINTS` points
    drawn from the normal approximation there (BFGS's inverse Hessian) and the SDs of that approximation; None
    where BFGS found no usable mode."""
    from scipy.optimize import minimize

    with np.errstate(all="ignore"):
        found = minimize(lambda x: -k.logp(x)[0], k.unconstrain_start(), jac=lambda x: -k.logp(x)[1],
                         method="BFGS", options={"maxiter": 200, "gtol": 1e-4})
    cov = np.asarray(found.hess_inv) if np.all(np.isfinite(found.x)) else None
    if cov is None or not np.all(np.linalg.eigvalsh(0.5 * (cov + cov.T)) > 0):
        return None
    points = np.random.default_rng([seed, 2]).multivariate_normal(found.x, cov, PILOT_POINTS)
    return found.x, points, np.sqrt(np.diag(cov))


def _judge(reference: Any, points: np.ndarray, sd: np.ndarray) -> Callable[[Any], bool] | None:
    """Whether a candidate rule integrates as well as ``reference`` at the pilot's points: its log-likelihood
    differs by an SD over the points of at most a quarter of `ACCURACY_SD` and its gradient by at most
    `GRADIENT_SD` posterior SDs. None where the reference is finite at fewer than two points."""
    found = [reference.logp(x) for x in points]
    exact = np.array([v for v, _ in found])
    ok = np.isfinite(exact)
    if ok.sum() < 2:
        return None
    grad_ref = np.array([g for _, g in found])[ok]

    def close(candidate: Any) -> bool:
        found = [candidate.logp(x) for x in points[ok]]
        values, grads = np.array([v for v, _ in found]), np.array([g for _, g in found])
        return bool(np.all(np.isfinite(values)) and np.all(np.isfinite(grads))
                    and (values - exact[ok]).std() <= ACCURACY_SD / 4
                    and np.abs((grads - grad_ref) * sd).max() <= GRADIENT_SD)

    return close


@dataclass(frozen=True)
class Accuracy:
    """How well the quadrature integrated the random effects out, over posterior draws.

    Attributes
    ----------
    rule : str
        The fit's nodes per group, in words.
    reference : str
        What it was compared with, in words: twice the nodes per dimension (3 for Laplace), and adaptive
        quadrature for precomputed nodes.
    sd : float
        SD over the draws of log p_2K − log p_K.
    max_abs : float
        Largest |log p_2K − log p_K| (a constant offset does not change the posterior).
    pareto_k : float
        Pareto k of the importance weights exp(Δ) (PSIS).
    n_draws : int
    distinct : int
        How many of the checked draws differ from each other. Draws that barely move (a stuck chain) agree
        with any rule, so the check cannot judge them: fewer than half distinct fails it.
    fixed_against : int
        Where the large groups used precomputed nodes: the adaptive rule's nodes per dimension they were
        compared with (0 otherwise).
    """

    rule: str
    reference: str
    sd: float
    max_abs: float
    pareto_k: float
    n_draws: int
    distinct: int
    fixed_against: int = 0

    @property
    def moved(self) -> bool:
        return 2 * self.distinct >= self.n_draws

    @property
    def ok(self) -> bool:
        return self.moved and self.sd <= ACCURACY_SD and self.pareto_k <= 0.7

    def text(self) -> str:
        verdict = "passes" if self.ok else "FAILS"
        stuck = "" if self.moved else (f"; only {self.distinct} of the {self.n_draws} draws differ (the sampler "
                                       "was stuck), so it cannot judge the integration")
        how = "Gauss-Hermite quadrature" if self.fixed_against else "adaptive Gauss-Hermite quadrature"
        return (f"{how}, {self.rule}; against {self.reference} over {self.n_draws} draws, the log-likelihood "
                f"differs with SD {self.sd:.2g} (max {self.max_abs:.2g}; Pareto k {self.pareto_k:.2f}){stuck}: "
                f"{verdict} the rule SD <= {ACCURACY_SD:g}, k <= 0.7, draws that move")


def finer(nodes: int) -> int:
    """The rule a fit's rule is checked against: twice the nodes per dimension, 3 for Laplace (2 would leave
    out the mode)."""
    return 3 if nodes == 1 else 2 * nodes


def check_accuracy(k: GlmmKernel | NestedGlmmKernel, xs: np.ndarray) -> Accuracy:
    """Compare the log marginal likelihood at K and 2K nodes per dimension (nested: per level) over (up to
    `CHECK_DRAWS`) draws; precomputed nodes with `FIXED_CHECK_NODES` adaptive ones."""
    if isinstance(k, NestedGlmmKernel):
        return _compare(k, k.finer(), xs, f"nested adaptive quadrature, {k.finer().rule_text}" if k.laplace
                        else "twice the nodes per level")
    adaptive = ~k.fixed.groups if k.fixed is not None else np.ones(k.n_groups, dtype=bool)
    fixed = not adaptive.all()
    laplace = (k.large_nodes_per_dim == 1 and bool((k.large_groups & adaptive).any())) or \
        (k.nodes_per_dim == 1 and bool((~k.large_groups & adaptive).any()))
    against = FIXED_CHECK_NODES[k.q] if fixed else 0
    fine = k.with_nodes(finer(k.nodes_per_dim), against or finer(k.large_nodes_per_dim))
    if fixed:
        power = "^2" if k.q == 2 else ""
        sizes = []
        if (~k.large_groups).any():
            sizes.append(f"{finer(k.nodes_per_dim)}{power} nodes for groups under {LARGE_GROUP_ROWS} rows")
        if k.large_groups.any():
            sizes.append(f"{against}{power} for larger ones" if sizes else f"{against}{power} nodes per group")
        reference = "adaptive quadrature with " + ", ".join(sizes)
        if adaptive.any():
            reference = f"twice the nodes per dimension, and {reference} for the precomputed nodes"
    else:
        reference = "twice the nodes per dimension" + (" (3 for Laplace)" if laplace else "")
    return _compare(k, fine, xs, reference, against)


def _compare(k: Any, fine: Any, xs: np.ndarray, reference: str, against: int = 0) -> Accuracy:
    """`Accuracy` of rule ``k`` against ``fine`` over up to `CHECK_DRAWS` evenly spaced draws ``xs``, on two
    threads (ctypes releases the GIL)."""
    pick = np.unique(np.linspace(0, xs.shape[0] - 1, min(CHECK_DRAWS, xs.shape[0])).astype(int))
    with ThreadPoolExecutor(max_workers=2) as pool:
        # one rule after the other: each thread keeps its warm starts while the buffer stays the same
        delta = np.array(list(pool.map(lambda s: fine.logp(xs[s])[0], pick)))
        delta -= np.array(list(pool.map(lambda s: k.logp(xs[s])[0], pick)))
    distinct = int(np.unique(xs[pick], axis=0).shape[0])
    if not np.all(np.isfinite(delta)):
        return Accuracy(k.rule_text, reference, math.inf, math.inf, math.inf, pick.size, distinct, against)
    centred = delta - delta.mean()
    return Accuracy(k.rule_text, reference, float(delta.std()), float(np.abs(centred).max()), weights_k(centred),
                    pick.size, distinct, against)


def weights_k(log_weights: np.ndarray) -> float:
    """PSIS's Pareto k of the importance weights exp(log_weights); 0 where their tail is flat.

    The two rules often agree to the last bit at every draw (one-term Poisson groups with many counts):
    the weights are then all equal, which arviz-stats refuses to fit a tail to (ValueError), and which
    is the perfect case.
    """
    from arviz_stats.base import array_stats

    if np.ptp(log_weights) == 0.0:
        return 0.0
    try:
        with np.errstate(all="ignore"):
            _, khat = array_stats.psislw(log_weights, r_eff=1.0)
    except ValueError:  # "All tail values are the same": a flat tail
        return 0.0
    return float(np.asarray(khat)) if np.isfinite(np.asarray(khat)).all() else 0.0


def run(design: Design, plan: Plan, config: SamplerConfig, refuse_inaccurate: bool = False) -> EngineResult:
    """Integrate out, sample the hyperparameters with nutpie, check the quadrature, draw the random effects.

    With ``refuse_inaccurate`` (``method="auto"``), raises `InaccurateIntegration` where the nested Laplace rule
    fails its pilot (`laplace_pilot`); forced, it samples and the check after sampling warns."""
    t0 = time.perf_counter()
    nested = len(design.factors) == 2
    k: GlmmKernel | NestedGlmmKernel = build_nested(design, plan) if nested else build(design, plan)
    compiled = kernel.build_priors(k.params)  # before the pilot, whose BFGS evaluates them
    k = choose_nested_nodes(k, config.seed) if isinstance(k, NestedGlmmKernel) else choose_nodes(k, config.seed)
    if refuse_inaccurate and isinstance(k, NestedGlmmKernel) and k.laplace:
        why = laplace_pilot(k, config.seed)
        if why is not None:
            raise InaccurateIntegration(why)
    if config.sampler != "nutpie":
        raise FitError('The collapsed engine for non-Gaussian families runs with sampler="nutpie"; use it, or '
                       'method="joint" for PyMC\'s sampler.')
    t1 = time.perf_counter()
    model = kernel.nutpie_model(k)
    t_load = time.perf_counter() - t1
    trace = sample_compiled(model, config, ["x"])
    x = np.asarray(trace.posterior["x"])
    t2 = time.perf_counter()
    xs = flat(x)
    accuracy = check_accuracy(k, xs)
    t3 = time.perf_counter()
    u, L = k.constrained(x)
    C = u.shape[0]
    if isinstance(k, NestedGlmmKernel):
        effects, accepted = k.effects(xs, config.seed)
        offsets = {k.names[0]: (k.off_outer, k.terms[0]), k.names[1]: (k.off_inner, k.terms[1])}
        lcorr = {name: L[..., o:o + q, o:o + q] for name, (o, q) in offsets.items() if q > 1}
        draws = finish(plan, design, u, lcorr, {name: unflat(r, C) for name, r in effects.items()})
        chain = ("a Metropolis-within-Gibbs chain per outer level and draw (the outer effect in coordinates where "
                 "the Laplace approximation makes it independent of the inner ones, then each inner effect)")
    else:
        r, accepted = k.effects(xs, config.seed)
        f = design.factors[0]
        draws = finish(plan, design, u, {f.name: L}, {f.name: unflat(r, C)})
        chain = "an independence Metropolis chain per group and draw"
    timings = {"build": t1 - t0 - compiled.get("compile", 0.0), **compiled, "load": t_load, **trace.timings,
               "check": t3 - t2, "effects": time.perf_counter() - t3}
    integration = (f"{accuracy.text()}. Random effects: {chain}, which leaves their exact conditional invariant "
                   f"(acceptance {float(accepted.mean()):.2f})")
    info = {"route": kernel.route(k.params), "integration": integration, "quadrature_check": accuracy.text(),
            "quadrature_ok": accuracy.ok,
            "quadrature_rule": k.rule_text, "quadrature_sd": accuracy.sd, "quadrature_k": accuracy.pareto_k,
            "effects_acceptance": float(accepted.mean()), "rows_summed": k.rows.y.shape[0]}
    return EngineResult(draws, trace.sample_stats, timings, info)
