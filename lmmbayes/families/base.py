"""The response-family seam: what every stage asks of a family.

A `Family` knows its links, its distributional parameters (with their
supports and brms's default priors), how to check and code a response, its
log density in numpy (log-likelihood, LOO) and in PyTensor (the joint
engine), random draws (prediction, prior simulation), its mean (``epred``)
and which engines can fit it. The design, priors, engines, summary,
prediction and checks consult it; none of them branches on a family's name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np

from ..errors import DataError, FitError
from .links import LINKS, Link

Array = np.ndarray

#: Key of the thresholds (..., K − 1) in the ``dp`` mapping of an ordinal family's densities.
THRESHOLDS = "thresholds"


@dataclass(frozen=True)
class DistParam:
    """A distributional parameter other than the mean (brms's ``dpar``), also its prior class.

    Attributes
    ----------
    name : str
        brms's name: ``sigma``, ``shape``, ``nu``, ``phi``.
    lower, upper : float
        Its support.
    scales_with_response : bool
        True for the SD of a location-scale family: it scales with the response
        when an engine standardises it.
    start : float
        A starting value for the sampler (on the standardised scale when it
        scales with the response).
    """

    name: str
    lower: float = 0.0
    upper: float = math.inf
    scales_with_response: bool = False
    start: float = 1.0


@dataclass(frozen=True)
class Extra:
    """Per-row quantities some families need besides the response: binomial trials, known SDs."""

    trials: Array | None = None
    se: Array | None = None

    def take(self, rows: Any) -> Extra:
        """The same quantities for a subset of rows."""
        return Extra(None if self.trials is None else self.trials[rows], None if self.se is None else self.se[rows])


@dataclass(frozen=True)
class ResponseCoding:
    """How a response was coded for the model.

    Attributes
    ----------
    levels : tuple of str
        Labels of the coded values for categorical responses: bernoulli
        (failure, success); cumulative (categories 1..K in order). Empty otherwise.
    """

    levels: tuple[str, ...] = ()


def r_mad(y: Array) -> float:
    """R's ``mad()``: 1.4826 times the median absolute deviation from the median."""
    return float(1.4826 * np.median(np.abs(y - np.median(y))))


def format_number(value: float) -> str:
    """A number as R prints it in brms's prior strings (up to 15 significant digits)."""
    return f"{value:.15g}"


#: Links for which brms scales default priors by the response on the link scale (``def_scale_prior``).
_SCALED_LINKS = ("identity", "log", "inverse", "sqrt")


@dataclass(frozen=True)
class Family:
    """A response family with a chosen link (brms's ``brmsfamily``).

    Subclasses set the class attributes and implement the densities. Build
    instances with `lmmbayes.family`.
    """

    name: str
    link: str = ""

    #: Allowed links; the first is brms's default.
    links: ClassVar[tuple[str, ...]] = ("identity",)
    #: Addition terms the family takes (besides ``weights``, which every family takes).
    additions: ClassVar[frozenset[str]] = frozenset()
    #: Engines that can fit it.
    engines: ClassVar[frozenset[str]] = frozenset({"joint"})
    #: Whether draws of the response are integers.
    discrete: ClassVar[bool] = False
    #: Whether the response is categorical (bernoulli, cumulative): brms then uses fixed default scales.
    factor_like: ClassVar[bool] = False
    #: Whether an engine may standardise the response (identity-link location-scale families).
    location_scale: ClassVar[bool] = False
    #: What a valid response is, for messages.
    response_text: ClassVar[str] = "numeric"
    #: The pp_check kind shown by default.
    default_check: ClassVar[str] = "dens_overlay"
    #: Name of the response-scale mean in tables (emmeans's ``response`` column).
    mean_name: ClassVar[str] = "response"
    #: Whether the intercept is replaced by K − 1 ordered thresholds (brms's ordinal families): the
    #: linear predictor then has no intercept and the densities take the thresholds as ``dp[THRESHOLDS]``.
    ordinal: ClassVar[bool] = False
    #: The collapsed engine's C code for the family's log-likelihood, by link (``_kernel.c``'s ``GLMM_*``):
    #: families listed here have their random effects integrated out by adaptive quadrature.
    quadrature_codes: ClassVar[Mapping[str, int]] = MappingProxyType({})
    #: Whether rows with the same linear predictor can be summed into one, exactly (binomial successes and
    #: trials; Poisson counts and multiplicities), before the collapsed engine integrates.
    sums_rows: ClassVar[bool] = False

    def __post_init__(self) -> None:
        link = self.link or self.links[0]
        if link not in self.links:
            raise FitError(f"Family {self.name!r} has no link {link!r}; its links are {list(self.links)} "
                           f"(default {self.links[0]!r}).")
        object.__setattr__(self, "link", link)

    # -- structure ----------------------------------------------------------------------
    @property
    def link_function(self) -> Link:
        return LINKS[self.link]

    def dpars(self, additions: tuple[str, ...] = (), se_sigma: bool = False) -> tuple[DistParam, ...]:
        """The distributional parameters the model estimates, given its addition terms."""
        return ()

    def links_text(self, additions: tuple[str, ...] = (), se_sigma: bool = False) -> str:
        """brms's ``Links:`` line: ``mu = identity; sigma = identity``."""
        parts = [f"mu = {self.link}"] + [f"{d.name} = identity" for d in self.dpars(additions, se_sigma)]
        return "; ".join(parts)

    def check_additions(self, present: tuple[str, ...]) -> None:
        """FitError for an addition term this family does not take."""
        bad = [a for a in present if a != "weights" and a not in self.additions]
        if bad:
            takes = sorted({"weights", *self.additions})
            raise FitError(f"Family {self.name!r} does not take the addition term {bad[0]}(); it takes "
                           f"{', '.join(t + '()' for t in takes)}.")
        for needed in self.required_additions:
            if needed not in present:
                raise FitError(self.missing_addition_message(needed))

    required_additions: ClassVar[tuple[str, ...]] = ()

    def check_intercept(self, intercept: str) -> None:
        """FitError where an ordinal family's formula removes or spells out the intercept.

        ``intercept`` is the formula's: ``"centred"``, ``"explicit"`` (``0 + Intercept``) or ``"none"``.
        """
        if self.ordinal and intercept != "centred":
            raise FitError(f"Family {self.name!r} replaces the intercept by ordered thresholds (b_Intercept[1], "
                           "...), so the formula cannot remove it ('0 +' or '- 1') or write it as a population-"
                           "level 'Intercept' term; keep the implicit intercept, as brms requires.")

    def missing_addition_message(self, name: str) -> str:
        return f"Family {self.name!r} needs the addition term {name}()."

    def n_thresholds(self, coding: ResponseCoding) -> int:
        """How many ordered thresholds replace the intercept (0 unless `ordinal`)."""
        return len(coding.levels) - 1 if self.ordinal else 0

    # -- the response --------------------------------------------------------------------
    def code_response(self, values: Any, name: str, extra: Extra) -> tuple[Array, ResponseCoding]:
        """Check the response and return it as a float array, and how it was coded.

        Raises
        ------
        DataError
            Naming the column and what is valid for this family.
        """
        y = self._numeric(values, name)
        self.check_values(y, name, extra)
        return y, ResponseCoding()

    def code_levels(self, codes: Array, labels: tuple[str, ...], name: str,
                    ordered: bool = False) -> tuple[Array, ResponseCoding]:
        """Code a categorical response given as level positions (0-based) and labels.

        Called by the design layer, which owns level coding, for families with
        ``factor_like`` set and a response that is not numeric. ``ordered`` says
        whether the column is an ordered categorical.
        """
        raise DataError(f"The response '{name}' must be {self.response_text} for family {self.name!r}, "
                        f"but it is categorical with levels {list(labels[:5])}.")

    def encode_response(self, values: Any, name: str, coding: ResponseCoding, extra: Extra) -> Array:
        """A response of new rows, coded as in training (e.g. for log-likelihoods of new data)."""
        y = self._numeric(values, name)
        self.check_values(y, name, extra)
        return y

    def check_values(self, y: Array, name: str, extra: Extra) -> None:
        """DataError unless every value is in the family's support."""

    def _numeric(self, values: Any, name: str) -> Array:
        arr = np.asarray(values)
        if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
            raise DataError(f"The response '{name}' must be {self.response_text} for family {self.name!r}, "
                            f"but its values are of type {arr.dtype}.")
        return arr.astype(float)

    def normal_response(self, y: Array) -> tuple[Array, Array] | None:
        """``(t(y), log t'(y))`` where the family is ``t(y) ~ N(eta, sigma)`` with the identity link, else None.

        Such a family has an exact marginal likelihood (the collapsed engine's):
        the Gaussian one of ``t(y)``, less the Jacobian ``Σ w log t'(y)``, a
        constant the sampler does not need and a marginal likelihood does
        (`lmmbayes.workflow.bridge`).
        """
        return None

    # -- brms's default priors ------------------------------------------------------------
    @property
    def prior_link(self) -> str:
        """The link brms scales default priors with (lognormal: log)."""
        return self.link

    def prior_response(self, y: Array) -> Array | None:
        """The response on the scale brms's ``def_scale_prior`` summarises, or None where it uses 0 and 2.5.

        That is the response on the link scale (zeros moved to 0.1 for the log
        and inverse links) where the link is identity, log, inverse or sqrt and
        the response is not categorical.
        """
        link = self.prior_link
        if link not in _SCALED_LINKS or self.factor_like:
            return None
        yy = np.where(y == 0, y + 0.1, y) if link in ("log", "inverse") else y
        with np.errstate(all="ignore"):
            return LINKS[link].forward(yy)

    def default_priors(self, median: float | None, mad: float | None, offset_mean: float = 0.0,
                       additions: tuple[str, ...] = (), se_sigma: bool = False) -> dict[str, str]:
        """brms 2.18's defaults by class (``Intercept``, ``sd`` and each distributional parameter).

        Parameters
        ----------
        median, mad : float or None
            Median and R's ``mad()`` of `prior_response` (None where it is None).
        offset_mean : float
            Mean of the offsets: brms subtracts it from the Intercept's location
            and then prints that location unrounded.
        """
        location, scale = 0.0, 2.5
        if median is not None and mad is not None:
            if math.isfinite(round(mad, 1)):
                scale = max(scale, round(mad, 1))
            if math.isfinite(round(median, 1)):
                location = round(median, 1)
            if offset_mean != 0.0 and math.isfinite(offset_mean):
                location -= offset_mean
        out = {"Intercept": f"student_t(3, {format_number(location)}, {format_number(scale)})",
               "sd": f"student_t(3, 0, {format_number(scale)})"}
        for d in self.dpars(additions, se_sigma):
            out[d.name] = self.dpar_prior(d.name, scale)
        return out

    def dpar_prior(self, name: str, scale: float) -> str:
        """brms's default prior of distributional parameter ``name`` (``def_dpar_prior``)."""
        return {"sigma": f"student_t(3, 0, {format_number(scale)})", "shape": "gamma(0.01, 0.01)",
                "nu": "gamma(2, 0.1)", "phi": "gamma(0.01, 0.01)"}[name]

    # -- densities, draws, moments (eta is the linear predictor; dp the dpar draws) ------------
    def logpdf(self, y: Array, eta: Array, dp: dict[str, Array], extra: Extra) -> Array:
        """Pointwise log density (or mass) of ``y`` (broadcast against ``eta``)."""
        raise NotImplementedError

    def logp_pt(self, y: Any, eta: Any, dp: dict[str, Any], extra: Extra) -> Any:
        """The same as a PyTensor expression (summed by the caller)."""
        raise NotImplementedError

    def random(self, rng: np.random.Generator, eta: Array, dp: dict[str, Array], extra: Extra) -> Array:
        """Draws of the response, one per element of ``eta``."""
        raise NotImplementedError

    def mean(self, eta: Array, dp: dict[str, Array], extra: Extra) -> Array:
        """The expected response (brms's ``posterior_epred``)."""
        return self.link_function.inverse(eta)

    def variance(self, eta: Array, dp: dict[str, Array], extra: Extra) -> Array:
        """The variance of the response given the parameters (Bayesian R² for non-Gaussian families)."""
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.name}(link = {self.link!r})"
