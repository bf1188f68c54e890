"""What every engine samples: standardised parameters, each with an exact map to the user's scale.

Engines sample on standardised data (response, population-level columns and
group-level columns divided by their scales, the response and the columns
centred where the model allows), so that NUTS starts and adapts near unit
scale whether a response is in micrograms or in dollars and a predictor in
units or in 1e12 units. Every parameter ``u`` that NUTS samples is an affine
map of the parameter on the user's scale, ``user = a + b u``, and of the
parameter in standardised-data units, ``std = alpha + beta u``; the prior is
evaluated at ``user`` (any prior, custom ones included: the Jacobian of a
linear map is a constant) and the likelihood at ``std``. Nothing about
standardisation is visible in results or names.

Usually ``u`` is the standardised-data value itself (``alpha = 0``,
``beta = 1``). When a prior is far narrower than the data's scale (``normal(0,
1e-300)``), ``u`` is scaled by the prior instead, so that the sampler still
starts and moves at unit scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..design import Design
from ..errors import PriorError
from ..priors import Prior, ResolvedPriors, Slot

#: A prior whose robust scale is below this fraction of the data's scale scales its parameter.
NARROW_PRIOR = 1e-3


@dataclass(frozen=True)
class Standardisation:
    """How the data are standardised for sampling.

    Attributes
    ----------
    y_shift, y_scale : float
        ``y* = (y − offset − y_shift) / y_scale`` for identity-link
        location-scale families; 0 and 1 otherwise (the response is then not
        transformed and offsets stay in the linear predictor).
    x_centre, x_scale : (p,) arrays
        ``x* = (x − x_centre) / x_scale``; centred only with a centred intercept.
    z_scale : tuple of (q,) arrays
        Per grouping factor, ``Z* = Z / z_scale``.
    """

    y_shift: float
    y_scale: float
    x_centre: np.ndarray
    x_scale: np.ndarray
    z_scale: tuple[np.ndarray, ...]

    @property
    def response_standardised(self) -> bool:
        return not (self.y_shift == 0.0 and self.y_scale == 1.0)


def _positive(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return np.where(np.isfinite(values) & (values > 0), values, 1.0)


def standardisation(design: Design) -> Standardisation:
    """The standardisation of ``design``'s data."""
    st, fam = design.stats, design.family
    if fam.location_scale and fam.link == "identity":
        s = st.y_sd if st.y_sd > 0 and math.isfinite(st.y_sd) else 1.0
        m = st.y_mean if design.spec.intercept != "none" else 0.0
    else:
        m, s = 0.0, 1.0
    if design.centred_intercept:
        centre, scale = st.x_mean, _positive(st.x_sd)
    else:
        centre, scale = np.zeros_like(st.x_mean), _positive(st.x_rms)
    return Standardisation(float(m), float(s), np.asarray(centre, dtype=float), scale,
                           tuple(_positive(z) for z in st.z_rms))


@dataclass(frozen=True)
class Param:
    """One scalar parameter NUTS samples (as ``u``).

    Attributes
    ----------
    slot : Slot
        The prior slot it belongs to.
    prior : Prior
    name : str
        brms's name (``b_x``, ``sd_g__Intercept``, ``sigma``; ``Intercept`` for the centred intercept).
    kind : str
        ``"Intercept"``, ``"b"``, ``"dpar"`` or ``"sd"``.
    a, b : float
        ``user = a + b u``.
    alpha, beta : float
        ``std = alpha + beta u``.
    lo, hi : float
        Bounds of ``u``.
    start : float
        A starting value of ``u`` strictly inside its bounds.
    """

    slot: Slot
    prior: Prior
    name: str
    kind: str
    a: float
    b: float
    alpha: float
    beta: float
    lo: float
    hi: float
    start: float


@dataclass(frozen=True)
class CorBlock:
    """A block of correlated terms of one factor with its LKJ(eta) prior."""

    factor: str
    terms: tuple[int, ...]
    eta: float


@dataclass(frozen=True)
class Plan:
    """Every parameter NUTS samples, in the engines' order: Intercept, b, dpars, sd per factor."""

    params: tuple[Param, ...]
    cor: tuple[CorBlock, ...]
    std: Standardisation

    def indices(self, kind: str, factor: str | None = None) -> list[int]:
        return [k for k, p in enumerate(self.params)
                if p.kind == kind and (factor is None or p.slot.group == factor)]

    @property
    def dpars(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params if p.kind == "dpar")

    def start(self) -> np.ndarray:
        return np.array([p.start for p in self.params])

    def to_user(self, u: np.ndarray) -> np.ndarray:
        """``u`` (..., K) to the user's scale."""
        return np.array([p.a for p in self.params]) + np.array([p.b for p in self.params]) * u

    def to_std(self, u: np.ndarray) -> np.ndarray:
        return np.array([p.alpha for p in self.params]) + np.array([p.beta for p in self.params]) * u


def _start(lo: float, hi: float, default: float) -> float:
    """A starting value strictly inside (lo, hi), near ``default``."""
    if lo < default < hi:
        return default
    if math.isfinite(lo) and math.isfinite(hi):
        return 0.5 * (lo + hi)
    return lo + 1.0 if math.isfinite(lo) else hi - 1.0


def _param(slot: Slot, prior: Prior, name: str, kind: str, c0: float, d0: float, class_bounds: tuple[float, float],
           std_start: float, rescale: bool = True) -> Param:
    """The sampled parameter of one slot whose user value is ``c0 + d0 * std``.

    ``rescale=False`` keeps ``u`` in standardised units even under a narrow
    prior (ordered thresholds share one map, so that ``u`` keeps their order).
    """
    lo, hi = prior.bounds()
    lo, hi = max(lo, class_bounds[0]), min(hi, class_bounds[1])
    a, b = c0, d0
    narrow = prior.family.centre_scale(prior.args) if prior.family.builtin and rescale else None
    if narrow is not None and narrow[1] < NARROW_PRIOR * d0:
        a, b = narrow
    if not b > 0 or not math.isfinite(b) or not math.isfinite(a):
        raise PriorError(f"The prior of {name} ({prior.dist}) leaves the parameter no usable scale.")
    alpha, beta = (a - c0) / d0, b / d0
    u_lo, u_hi = (lo - a) / b, (hi - a) / b
    start = 0.0 if (a, b) != (c0, d0) else (std_start - alpha) / beta
    return Param(slot, prior, name, kind, a, b, alpha, beta, u_lo, u_hi, _start(u_lo, u_hi, start))


def _thresholds(design: Design, resolved: ResolvedPriors) -> list[Param]:
    """The ordered thresholds of an ordinal model (centred predictors), one shared map ``user = u``.

    They start at the link of the data's cumulative proportions, which are
    ordered and close to the truth when the predictors are centred.
    """
    K = design.n_thresholds + 1
    y = design.y
    counts = np.bincount(y.astype(np.int64), minlength=K + 1)[1:K + 1] if y.size else np.ones(K)
    cum = np.cumsum(counts + 0.5)[:-1] / (counts + 0.5).sum()  # half a count per category keeps them inside (0, 1)
    starts = design.family.link_function.forward(cum)
    out = []
    for k, start in enumerate(starts, start=1):
        prior = resolved.get("Intercept", str(k))
        name = f"Intercept[{k}]"
        lo, hi = prior.bounds()
        if math.isfinite(lo) or math.isfinite(hi):
            raise PriorError(f"{prior.describe()}: the thresholds of an ordinal model are ordered and unbounded, "
                             f"so {name}'s prior cannot have bounds; use an unbounded prior such as "
                             "normal(0, 5) or student_t(3, 0, 2.5).")
        out.append(_param(Slot("Intercept", str(k)), prior, name, "Intercept", 0.0, 1.0, (-math.inf, math.inf),
                          float(start), rescale=False))
    return out


def plan(design: Design, resolved: ResolvedPriors) -> Plan:
    """The parameters of ``design`` under ``resolved`` priors and their maps."""
    std = standardisation(design)
    m, s = std.y_shift, std.y_scale
    inf = (-math.inf, math.inf)
    params: list[Param] = []
    if design.n_thresholds:
        params += _thresholds(design, resolved)
    elif design.centred_intercept:
        slot = Slot("Intercept")
        params.append(_param(slot, resolved.get("Intercept"), "Intercept", "Intercept", m, s, inf, 0.0))
    for j, coef in enumerate(design.coef_names):
        slot = Slot("b", coef)
        explicit = coef == "Intercept" and design.spec.intercept == "explicit" and j == 0
        params.append(_param(slot, resolved.get("b", coef), f"b_{coef}", "b", m if explicit else 0.0,
                             s / float(std.x_scale[j]), inf, 0.0))
    add = design.spec.additions
    for d in design.family.dpars(add.present, add.se_sigma):
        slot = Slot(d.name)
        params.append(_param(slot, resolved.get(d.name), d.name, "dpar", 0.0, s if d.scales_with_response else 1.0,
                             (d.lower, d.upper), d.start))
    cor = []
    for f, z in zip(design.factors, std.z_scale):
        for t, term in enumerate(f.terms):
            slot = Slot("sd", term, f.name)
            params.append(_param(slot, resolved.get("sd", term, f.name), f"sd_{f.name}__{term}", "sd", 0.0,
                                 s / float(z[t]), (0.0, math.inf), 0.5))
        if f.cor_pairs:
            p = resolved.get("cor", "", f.name)
            if not p.family.builtin or p.family.support != "cholesky":
                raise PriorError(f"{p.describe()}: class 'cor' needs the built-in lkj(eta) prior.")
            cor += [CorBlock(f.name, block, float(p.args[0])) for block in f.blocks if len(block) > 1]
    return Plan(tuple(params), tuple(cor), std)
