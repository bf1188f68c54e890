"""The families lmmbayes ships, with brms's names, links, parameters and defaults."""

from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np

from ..errors import DataError, DataWarning, warn
from .base import THRESHOLDS, Array, DistParam, Extra, Family, ResponseCoding

_LOG_2PI = math.log(2 * math.pi)


def _bad_values(y: Array, bad: Array, name: str, family: str, valid: str) -> DataError:
    k = int(np.flatnonzero(bad)[0])
    return DataError(f"The response '{name}' has {int(bad.sum())} value(s) that family {family!r} cannot take "
                     f"(e.g. {y[k]:g} in row {k + 1}); {valid}.")


@dataclass(frozen=True)
class Gaussian(Family):
    """Normal response: ``y ~ N(mu, sigma)``; with ``se(s)`` the SD is ``s`` (``sqrt(s² + sigma²)`` with sigma = TRUE)."""

    name: str = "gaussian"
    links: ClassVar[tuple[str, ...]] = ("identity",)
    additions: ClassVar[frozenset[str]] = frozenset({"se"})
    engines: ClassVar[frozenset[str]] = frozenset({"joint", "collapsed"})
    location_scale: ClassVar[bool] = True
    response_text: ClassVar[str] = "numeric"

    def dpars(self, additions: tuple[str, ...] = (), se_sigma: bool = False) -> tuple[DistParam, ...]:
        if "se" in additions and not se_sigma:
            return ()
        return (DistParam("sigma", 0.0, math.inf, scales_with_response=True, start=0.5),)

    @staticmethod
    def _sd(dp: dict[str, Any], extra: Extra, sqrt: Any) -> Any:
        sigma = dp.get("sigma")
        if extra.se is None:
            return sigma
        if sigma is None:
            return extra.se
        return sqrt(sigma**2 + extra.se**2)

    def logpdf(self, y: Array, eta: Array, dp: dict[str, Array], extra: Extra) -> Array:
        sd = self._sd(dp, extra, np.sqrt)
        z = (y - eta) / sd
        return -0.5 * z * z - np.log(sd) - 0.5 * _LOG_2PI

    def logp_pt(self, y: Any, eta: Any, dp: dict[str, Any], extra: Extra) -> Any:
        import pytensor.tensor as pt

        sd = self._sd(dp, extra, pt.sqrt)
        z = (y - eta) / sd
        return -0.5 * z * z - pt.log(sd) - 0.5 * _LOG_2PI

    def random(self, rng: np.random.Generator, eta: Array, dp: dict[str, Array], extra: Extra) -> Array:
        sd = self._sd(dp, extra, np.sqrt)
        return eta + sd * rng.standard_normal(np.broadcast_shapes(np.shape(eta), np.shape(sd)))

    def variance(self, eta: Array, dp: dict[str, Array], extra: Extra) -> Array:
        return np.broadcast_to(self._sd(dp, extra, np.sqrt) ** 2, np.shape(eta))

    def check_values(self, y: Array, name: str, extra: Extra) -> None:
        bad = ~np.isfinite(y)
        if bad.any():
            raise _bad_values(y, bad, name, self.name, "the response must be finite")

    def normal_response(self, y: Array) -> tuple[Array, Array] | None:
        return y, np.zeros(np.shape(y))


# -- the probability of a success under the binary links ------------------------------------------


def _log_p(link: str, eta: Array) -> tuple[Array, Array]:
    """(log p, log(1 − p)) of the success probability ``p = g⁻¹(eta)``, stably."""
    from scipy import special

    if link == "logit":
        return -np.logaddexp(0.0, -eta), -np.logaddexp(0.0, eta)
    if link == "probit":
        return special.log_ndtr(eta), special.log_ndtr(-eta)
    with np.errstate(over="ignore"):  # cloglog: p = 1 − exp(−exp(eta))
        e = np.exp(eta)
        return np.log(-np.expm1(-e)), -e


def _log_phi_pt(x: Any) -> Any:
    """log Φ(x) in PyTensor, accurate in the lower tail (erfcx keeps exp(−x²/2) out of the logarithm)."""
    import pytensor.tensor as pt

    z = -x / math.sqrt(2.0)
    tail = math.log(0.5) + pt.log(pt.erfcx(z)) - 0.5 * x * x
    return pt.switch(x < -1.0, tail, pt.log(0.5 * pt.erfc(z)))


def _log_p_pt(link: str, eta: Any) -> tuple[Any, Any]:
    import pytensor.tensor as pt

    if link == "logit":
        return -pt.softplus(-eta), -pt.softplus(eta)
    if link == "probit":
        return _log_phi_pt(eta), _log_phi_pt(-eta)
    e = pt.exp(eta)
    return pt.log1mexp(-e), -e


def _integers(y: Array, name: str, family: str, what: str) -> None:
    bad = ~np.isfinite(y) | (y < 0) | (y != np.round(y))
    if bad.any():
        raise _bad_values(y, bad, name, family, what)


def _positive_mean(mu: Array) -> Array:
    """A mean that must be positive (identity or sqrt links can cross 0): NaN there, so densities give -inf."""
    return np.where(mu > 0, mu, np.nan)


def _trials(extra: Extra) -> Array:
    """The binomial trials; the design layer always supplies them (``trials()`` is required)."""
    if extra.trials is None:
        raise DataError("Family 'binomial' needs the number of trials: write the response as 'y | trials(n)'.")
    return extra.trials


def _as_int(draws: Array) -> Array:
    return np.asarray(draws, dtype=np.int64)


@dataclass(frozen=True)
class Bernoulli(Family):
    """Binary response: ``y ~ Bernoulli(p)``, ``p = g⁻¹(eta)``.

    The response may be any two-valued column: 0/1, booleans, a two-level
    categorical or strings (coded by level order, the first level 0); the
    summary says which value is the success.
    """

    name: str = "bernoulli"
    links: ClassVar[tuple[str, ...]] = ("logit", "probit", "cloglog")
    discrete: ClassVar[bool] = True
    factor_like: ClassVar[bool] = True
    response_text: ClassVar[str] = "two-valued (0/1, booleans, or two levels)"
    default_check: ClassVar[str] = "bars"
    mean_name: ClassVar[str] = "prob"
    quadrature_codes: ClassVar[Mapping[str, int]] = MappingProxyType({"logit": 1, "probit": 4, "cloglog": 5})
    sums_rows: ClassVar[bool] = True

    def code_response(self, values: Any, name: str, extra: Extra) -> tuple[Array, ResponseCoding]:
        y = self._numeric(values, name)
        bad = ~np.isin(y, (0.0, 1.0))
        if bad.any():
            raise DataError(f"The response '{name}' of family 'bernoulli' must be 0 or 1 (or any two-valued "
                            f"column such as booleans or two strings), but it holds {int(bad.sum())} other "
                            f"value(s), e.g. {y[bad][0]:g}.")
        return y, ResponseCoding(("0", "1"))

    def code_levels(self, codes: Array, labels: tuple[str, ...], name: str,
                    ordered: bool = False) -> tuple[Array, ResponseCoding]:
        if len(labels) != 2:
            shown = list(labels[:5])
            raise DataError(f"The response '{name}' of family 'bernoulli' must take exactly two values, but it takes "
                            f"{len(labels)} ({shown}{' ...' if len(labels) > 5 else ''}); for more categories use "
                            "family 'cumulative' (ordered) or recode the column.")
        return np.asarray(codes, dtype=float), ResponseCoding(labels)

    def encode_response(self, values: Any, name: str, coding: ResponseCoding, extra: Extra) -> Array:
        return self.code_response(values, name, extra)[0]

    def logpdf(self, y: Array, eta: Array, dp: dict[str, Array], extra: Extra) -> Array:
        lp, lq = _log_p(self.link, eta)
        return np.where(y > 0.5, lp, lq)

    def logp_pt(self, y: Any, eta: Any, dp: dict[str, Any], extra: Extra) -> Any:
        lp, lq = _log_p_pt(self.link, eta)
        return y * lp + (1.0 - y) * lq

    def random(self, rng: np.random.Generator, eta: Array, dp: dict[str, Array], extra: Extra) -> Array:
        p = self.mean(eta, dp, extra)
        return _as_int(rng.random(np.shape(p)) < p)

    def variance(self, eta: Array, dp: dict[str, Array], extra: Extra) -> Array:
        p = self.mean(eta, dp, extra)
        return p * (1.0 - p)


@dataclass(frozen=True)
class Binomial(Family):
    """Successes out of ``trials(n)``: ``y ~ Binomial(n, p)``; ``posterior_epred`` is ``n p``, as in brms."""

    name: str = "binomial"
    links: ClassVar[tuple[str, ...]] = ("logit", "probit", "cloglog")
    additions: ClassVar[frozenset[str]] = frozenset({"trials"})
    required_additions: ClassVar[tuple[str, ...]] = ("trials",)
    discrete: ClassVar[bool] = True
    response_text: ClassVar[str] = "a count of successes (integers from 0 to the trials)"
    default_check: ClassVar[str] = "bars"
    mean_name: ClassVar[str] = "prob"
    quadrature_codes: ClassVar[Mapping[str, int]] = MappingProxyType({"logit": 1, "probit": 4, "cloglog": 5})
    sums_rows: ClassVar[bool] = True

    def missing_addition_message(self, name: str) -> str:
        return ("Family 'binomial' needs the number of trials: write 'y | trials(n) ~ ...' with a column or a "
                "number (brms 2.18 warns and takes max(y); lmmbayes asks, since a guess changes the model).")

    def check_values(self, y: Array, name: str, extra: Extra) -> None:
        _integers(y, name, self.name, "binomial responses must be whole numbers of successes, at least 0")
        if extra.trials is not None:
            bad = y > extra.trials
            if bad.any():
                raise _bad_values(y, bad, name, self.name, "a binomial response cannot exceed its trials")

    def logpdf(self, y: Array, eta: Array, dp: dict[str, Array], extra: Extra) -> Array:
        from scipy.special import gammaln

        n = _trials(extra)
        lp, lq = _log_p(self.link, eta)
        return (gammaln(n + 1) - gammaln(y + 1) - gammaln(n - y + 1)
                + np.where(y > 0, y * lp, 0.0) + np.where(n - y > 0, (n - y) * lq, 0.0))

    def logp_pt(self, y: Any, eta: Any, dp: dict[str, Any], extra: Extra) -> Any:
        import pytensor.tensor as pt

        n = _trials(extra)
        lp, lq = _log_p_pt(self.link, eta)
        return pt.gammaln(n + 1) - pt.gammaln(y + 1) - pt.gammaln(n - y + 1) + y * lp + (n - y) * lq

    def random(self, rng: np.random.Generator, eta: Array, dp: dict[str, Array], extra: Extra) -> Array:
        p = self.link_function.inverse(eta)
        n = np.broadcast_to(_trials(extra), np.shape(p)).astype(np.int64)
        return _as_int(rng.binomial(n, p))

    def mean(self, eta: Array, dp: dict[str, Array], extra: Extra) -> Array:
        return _trials(extra) * self.link_function.inverse(eta)

    def variance(self, eta: Array, dp: dict[str, Array], extra: Extra) -> Array:
        p = self.link_function.inverse(eta)
        return _trials(extra) * p * (1.0 - p)


@dataclass(frozen=True)
class Poisson(Family):
    """Counts: ``y ~ Poisson(mu)``, ``mu = g⁻¹(eta)``."""

    name: str = "poisson"
    links: ClassVar[tuple[str, ...]] = ("log", "identity", "sqrt")
    discrete: ClassVar[bool] = True
    response_text: ClassVar[str] = "counts (non-negative integers)"
    default_check: ClassVar[str] = "rootogram"
    mean_name: ClassVar[str] = "rate"
    quadrature_codes: ClassVar[Mapping[str, int]] = MappingProxyType({"log": 2})
    sums_rows: ClassVar[bool] = True

    def check_values(self, y: Array, name: str, extra: Extra) -> None:
        _integers(y, name, self.name, "counts must be non-negative integers")

    def logpdf(self, y: Array, eta: Array, dp: dict[str, Array], extra: Extra) -> Array:
        from scipy.special import gammaln, xlogy

        mu = _positive_mean(self.link_function.inverse(eta))
        with np.errstate(invalid="ignore"):
            out = xlogy(y, mu) - mu - gammaln(y + 1)
        return np.where(np.isnan(out), -np.inf, out)

    def logp_pt(self, y: Any, eta: Any, dp: dict[str, Any], extra: Extra) -> Any:
        import pytensor.tensor as pt

        if self.link == "log":  # exact and stable: y eta − exp(eta)
            return y * eta - pt.exp(eta) - pt.gammaln(y + 1)
        mu = self.link_function.inverse_pt(eta)
        return pt.switch(mu > 0, y * pt.log(pt.maximum(mu, 1e-300)) - mu - pt.gammaln(y + 1), -np.inf)

    def random(self, rng: np.random.Generator, eta: Array, dp: dict[str, Array], extra: Extra) -> Array:
        mu = np.clip(self.link_function.inverse(eta), 0.0, None)
        return _as_int(rng.poisson(mu))

    def variance(self, eta: Array, dp: dict[str, Array], extra: Extra) -> Array:
        return self.link_function.inverse(eta)


@dataclass(frozen=True)
class NegBinomial(Family):
    """Overdispersed counts: mean ``mu`` and shape ``phi``, variance ``mu + mu²/phi`` (brms's ``negbinomial``)."""

    name: str = "negbinomial"
    links: ClassVar[tuple[str, ...]] = ("log", "identity", "sqrt")
    discrete: ClassVar[bool] = True
    response_text: ClassVar[str] = "counts (non-negative integers)"
    default_check: ClassVar[str] = "rootogram"
    mean_name: ClassVar[str] = "rate"
    quadrature_codes: ClassVar[Mapping[str, int]] = MappingProxyType({"log": 3})
    sums_rows: ClassVar[bool] = False

    def dpars(self, additions: tuple[str, ...] = (), se_sigma: bool = False) -> tuple[DistParam, ...]:
        return (DistParam("shape", 0.0, math.inf, start=1.0),)

    def check_values(self, y: Array, name: str, extra: Extra) -> None:
        _integers(y, name, self.name, "counts must be non-negative integers")

    def logpdf(self, y: Array, eta: Array, dp: dict[str, Array], extra: Extra) -> Array:
        from scipy.special import gammaln, xlogy

        mu, phi = _positive_mean(self.link_function.inverse(eta)), dp["shape"]
        with np.errstate(invalid="ignore", divide="ignore"):
            out = (gammaln(y + phi) - gammaln(phi) - gammaln(y + 1) + phi * (np.log(phi) - np.log(phi + mu))
                   + xlogy(y, mu) - y * np.log(phi + mu))
        return np.where(np.isnan(out), -np.inf, out)

    def logp_pt(self, y: Any, eta: Any, dp: dict[str, Any], extra: Extra) -> Any:
        import pytensor.tensor as pt

        phi = dp["shape"]
        if self.link == "log":
            log_mu = eta
            log_total = pt.logaddexp(pt.log(phi), eta)
            return (pt.gammaln(y + phi) - pt.gammaln(phi) - pt.gammaln(y + 1) + phi * (pt.log(phi) - log_total)
                    + y * (log_mu - log_total))
        mu = self.link_function.inverse_pt(eta)
        safe = pt.maximum(mu, 1e-300)
        value = (pt.gammaln(y + phi) - pt.gammaln(phi) - pt.gammaln(y + 1) + phi * (pt.log(phi) - pt.log(phi + safe))
                 + y * (pt.log(safe) - pt.log(phi + safe)))
        return pt.switch(mu > 0, value, -np.inf)

    def random(self, rng: np.random.Generator, eta: Array, dp: dict[str, Array], extra: Extra) -> Array:
        mu = np.clip(self.link_function.inverse(eta), 1e-300, None)
        phi = np.broadcast_to(dp["shape"], np.shape(mu))
        return _as_int(rng.poisson(rng.gamma(phi, mu / phi)))  # the gamma-Poisson mixture

    def variance(self, eta: Array, dp: dict[str, Array], extra: Extra) -> Array:
        mu = self.link_function.inverse(eta)
        return mu + mu**2 / dp["shape"]


@dataclass(frozen=True)
class Student(Family):
    """Heavy tails: ``y ~ Student-t(nu, mu, sigma)``; ``nu`` is bounded below at 1 (brms's default prior gamma(2, 0.1))."""

    name: str = "student"
    links: ClassVar[tuple[str, ...]] = ("identity", "log")
    additions: ClassVar[frozenset[str]] = frozenset()
    engines: ClassVar[frozenset[str]] = frozenset({"joint"})
    location_scale: ClassVar[bool] = True
    response_text: ClassVar[str] = "numeric"

    def dpars(self, additions: tuple[str, ...] = (), se_sigma: bool = False) -> tuple[DistParam, ...]:
        scaled = self.link == "identity"
        return (DistParam("sigma", 0.0, math.inf, scales_with_response=scaled, start=0.5 if scaled else 1.0),
                DistParam("nu", 1.0, math.inf, start=10.0))

    def logpdf(self, y: Array, eta: Array, dp: dict[str, Array], extra: Extra) -> Array:
        from scipy.special import gammaln

        mu, sigma, nu = self.link_function.inverse(eta), dp["sigma"], dp["nu"]
        z = (y - mu) / sigma
        return (gammaln((nu + 1) / 2) - gammaln(nu / 2) - 0.5 * np.log(nu * math.pi) - np.log(sigma)
                - 0.5 * (nu + 1) * np.log1p(z * z / nu))

    def logp_pt(self, y: Any, eta: Any, dp: dict[str, Any], extra: Extra) -> Any:
        import pytensor.tensor as pt

        mu, sigma, nu = self.link_function.inverse_pt(eta), dp["sigma"], dp["nu"]
        z = (y - mu) / sigma
        return (pt.gammaln((nu + 1) / 2) - pt.gammaln(nu / 2) - 0.5 * pt.log(nu * math.pi) - pt.log(sigma)
                - 0.5 * (nu + 1) * pt.log1p(z * z / nu))

    def random(self, rng: np.random.Generator, eta: Array, dp: dict[str, Array], extra: Extra) -> Array:
        mu = self.link_function.inverse(eta)
        shape = np.broadcast_shapes(np.shape(mu), np.shape(dp["sigma"]), np.shape(dp["nu"]))
        return mu + dp["sigma"] * rng.standard_t(np.broadcast_to(dp["nu"], shape))

    def variance(self, eta: Array, dp: dict[str, Array], extra: Extra) -> Array:
        nu = dp["nu"]
        with np.errstate(divide="ignore", invalid="ignore"):
            v = np.where(nu > 2, dp["sigma"] ** 2 * nu / (nu - 2), np.inf)
        return np.broadcast_to(v, np.broadcast_shapes(np.shape(eta), np.shape(v)))

    def check_values(self, y: Array, name: str, extra: Extra) -> None:
        bad = ~np.isfinite(y)
        if bad.any():
            raise _bad_values(y, bad, name, self.name, "the response must be finite")


@dataclass(frozen=True)
class LogNormal(Family):
    """Positive, skewed responses: ``log y ~ N(mu, sigma)``."""

    name: str = "lognormal"
    links: ClassVar[tuple[str, ...]] = ("identity",)
    # log y is normal: the Gaussian collapsed engine integrates the random effects out exactly
    engines: ClassVar[frozenset[str]] = frozenset({"joint", "collapsed"})
    response_text: ClassVar[str] = "positive numbers"

    @property
    def prior_link(self) -> str:
        return "log"  # brms's has_logscale: defaults come from log(y)

    def dpars(self, additions: tuple[str, ...] = (), se_sigma: bool = False) -> tuple[DistParam, ...]:
        return (DistParam("sigma", 0.0, math.inf, start=1.0),)

    def check_values(self, y: Array, name: str, extra: Extra) -> None:
        bad = ~np.isfinite(y) | (y <= 0)
        if bad.any():
            raise _bad_values(y, bad, name, self.name, "lognormal responses must be positive")

    def normal_response(self, y: Array) -> tuple[Array, Array] | None:
        ly = np.log(y)
        return ly, -ly

    def logpdf(self, y: Array, eta: Array, dp: dict[str, Array], extra: Extra) -> Array:
        sigma = dp["sigma"]
        ly = np.log(y)
        z = (ly - eta) / sigma
        return -0.5 * z * z - np.log(sigma) - ly - 0.5 * _LOG_2PI

    def logp_pt(self, y: Any, eta: Any, dp: dict[str, Any], extra: Extra) -> Any:
        import pytensor.tensor as pt

        sigma = dp["sigma"]
        ly = pt.log(y)
        z = (ly - eta) / sigma
        return -0.5 * z * z - pt.log(sigma) - ly - 0.5 * _LOG_2PI

    def random(self, rng: np.random.Generator, eta: Array, dp: dict[str, Array], extra: Extra) -> Array:
        shape = np.broadcast_shapes(np.shape(eta), np.shape(dp["sigma"]))
        return np.exp(eta + dp["sigma"] * rng.standard_normal(shape))

    def mean(self, eta: Array, dp: dict[str, Array], extra: Extra) -> Array:
        return np.exp(eta + 0.5 * dp["sigma"] ** 2)

    def variance(self, eta: Array, dp: dict[str, Array], extra: Extra) -> Array:
        s2 = dp["sigma"] ** 2
        return np.expm1(s2) * np.exp(2 * eta + s2)


@dataclass(frozen=True)
class GammaFamily(Family):
    """Positive responses with constant coefficient of variation: mean ``mu``, shape ``alpha`` (brms's ``gamma``)."""

    name: str = "gamma"
    links: ClassVar[tuple[str, ...]] = ("log", "inverse", "identity")
    # log link: log-concave in eta, so each group's mode is unique (the other links are not, for every shape)
    quadrature_codes: ClassVar[Mapping[str, int]] = MappingProxyType({"log": 6})
    response_text: ClassVar[str] = "positive numbers"

    def dpars(self, additions: tuple[str, ...] = (), se_sigma: bool = False) -> tuple[DistParam, ...]:
        return (DistParam("shape", 0.0, math.inf, start=1.0),)

    def check_values(self, y: Array, name: str, extra: Extra) -> None:
        bad = ~np.isfinite(y) | (y <= 0)
        if bad.any():
            raise _bad_values(y, bad, name, self.name, "Gamma responses must be positive")

    def logpdf(self, y: Array, eta: Array, dp: dict[str, Array], extra: Extra) -> Array:
        from scipy.special import gammaln

        mu, a = _positive_mean(self.link_function.inverse(eta)), dp["shape"]
        with np.errstate(invalid="ignore", divide="ignore"):
            out = a * np.log(a / mu) - gammaln(a) + (a - 1) * np.log(y) - a * y / mu
        return np.where(np.isnan(out), -np.inf, out)

    def logp_pt(self, y: Any, eta: Any, dp: dict[str, Any], extra: Extra) -> Any:
        import pytensor.tensor as pt

        a = dp["shape"]
        if self.link == "log":
            return a * (pt.log(a) - eta) - pt.gammaln(a) + (a - 1) * pt.log(y) - a * y * pt.exp(-eta)
        mu = self.link_function.inverse_pt(eta)
        safe = pt.maximum(mu, 1e-300)
        value = a * pt.log(a / safe) - pt.gammaln(a) + (a - 1) * pt.log(y) - a * y / safe
        return pt.switch(mu > 0, value, -np.inf)

    def random(self, rng: np.random.Generator, eta: Array, dp: dict[str, Array], extra: Extra) -> Array:
        mu = np.clip(self.link_function.inverse(eta), 1e-300, None)
        a = np.broadcast_to(dp["shape"], np.shape(mu))
        return rng.gamma(a, mu / a)

    def variance(self, eta: Array, dp: dict[str, Array], extra: Extra) -> Array:
        return self.link_function.inverse(eta) ** 2 / dp["shape"]


@dataclass(frozen=True)
class Beta(Family):
    """Proportions in (0, 1): mean ``mu``, precision ``phi`` (``Beta(mu phi, (1 − mu) phi)``)."""

    name: str = "beta"
    links: ClassVar[tuple[str, ...]] = ("logit", "probit", "cloglog")
    response_text: ClassVar[str] = "proportions strictly between 0 and 1"
    mean_name: ClassVar[str] = "prop"

    def dpars(self, additions: tuple[str, ...] = (), se_sigma: bool = False) -> tuple[DistParam, ...]:
        return (DistParam("phi", 0.0, math.inf, start=2.0),)

    def check_values(self, y: Array, name: str, extra: Extra) -> None:
        bad = ~np.isfinite(y) | (y <= 0) | (y >= 1)
        if bad.any():
            raise _bad_values(y, bad, name, self.name, "beta responses must lie strictly between 0 and 1 (0 and 1 "
                              "themselves need a zero-one-inflated beta family, which lmmbayes does not support)")

    def logpdf(self, y: Array, eta: Array, dp: dict[str, Array], extra: Extra) -> Array:
        from scipy.special import gammaln

        mu, phi = self.link_function.inverse(eta), dp["phi"]
        a, b = mu * phi, (1 - mu) * phi
        return gammaln(phi) - gammaln(a) - gammaln(b) + (a - 1) * np.log(y) + (b - 1) * np.log1p(-y)

    def logp_pt(self, y: Any, eta: Any, dp: dict[str, Any], extra: Extra) -> Any:
        import pytensor.tensor as pt

        mu, phi = self.link_function.inverse_pt(eta), dp["phi"]
        a, b = mu * phi, (1 - mu) * phi
        return pt.gammaln(phi) - pt.gammaln(a) - pt.gammaln(b) + (a - 1) * pt.log(y) + (b - 1) * pt.log1p(-y)

    def random(self, rng: np.random.Generator, eta: Array, dp: dict[str, Array], extra: Extra) -> Array:
        mu = self.link_function.inverse(eta)
        phi = np.broadcast_to(dp["phi"], np.shape(mu))
        return np.clip(rng.beta(mu * phi, (1 - mu) * phi), 1e-300, 1 - 1e-16)

    def variance(self, eta: Array, dp: dict[str, Array], extra: Extra) -> Array:
        mu = self.link_function.inverse(eta)
        return mu * (1 - mu) / (1 + dp["phi"])


# -- ordinal -------------------------------------------------------------------------------------


def _log_diff(lo_f: Array, hi_f: Array, lo_s: Array, hi_s: Array, lower: Array, log1mexp: Any, where: Any) -> Array:
    """log(F(b) − F(a)) from log F and log(1 − F) at a < b, in whichever tail keeps its precision."""
    in_lower = hi_f + log1mexp(lo_f - hi_f)  # log F(b) + log(1 − F(a)/F(b))
    in_upper = lo_s + log1mexp(hi_s - lo_s)  # log S(a) + log(1 − S(b)/S(a))
    return where(lower, in_lower, in_upper)


def _log1mexp(x: Array) -> Array:
    """log(1 − exp(x)) for x <= 0, accurate near 0 and at −inf."""
    with np.errstate(divide="ignore"):
        return np.where(x > -0.6931471805599453, np.log(-np.expm1(x)), np.log1p(-np.exp(x)))


@dataclass(frozen=True)
class Cumulative(Family):
    """Ordered categories 1..K (brms's ``cumulative``): ``P(y <= k) = F(tau_k − eta)``.

    The intercept is replaced by K − 1 ordered thresholds ``tau`` (brms's
    ``b_Intercept[k]``); ``F`` is the inverse link. The response may be
    positive integers (K is their maximum, as in brms) or an ordered
    categorical (its categories in order).
    """

    name: str = "cumulative"
    links: ClassVar[tuple[str, ...]] = ("logit", "probit", "cloglog")
    discrete: ClassVar[bool] = True
    factor_like: ClassVar[bool] = True
    ordinal: ClassVar[bool] = True
    response_text: ClassVar[str] = "ordered categories (positive integers or an ordered categorical)"
    default_check: ClassVar[str] = "bars"
    mean_name: ClassVar[str] = "prob"

    def links_text(self, additions: tuple[str, ...] = (), se_sigma: bool = False) -> str:
        return f"mu = {self.link}; disc = identity"  # brms prints the (fixed) discrimination's link too

    def code_response(self, values: Any, name: str, extra: Extra) -> tuple[Array, ResponseCoding]:
        y = self._numeric(values, name)
        bad = ~np.isfinite(y) | (y < 1) | (y != np.round(y))
        if bad.any():
            raise _bad_values(y, bad, name, self.name, "family 'cumulative' needs positive integers 1, 2, ... (K "
                              "categories in order) or an ordered pandas categorical")
        k = int(y.max())
        if k < 2:
            raise DataError(f"The response '{name}' of family 'cumulative' takes one category only; an ordinal "
                            "model needs at least two.")
        missing = sorted(set(range(1, k + 1)) - set(y.astype(int).tolist()))
        if missing:  # brms's K = max(y) keeps them: their thresholds are then known from the prior only
            warn(f"The response '{name}' of family 'cumulative' has no rows in categories {missing[:10]} of "
                 f"1..{k} (K is the largest value, as in brms); the thresholds around them are identified by "
                 "their prior only. Recode to consecutive categories if they do not exist.", DataWarning)
        return y, ResponseCoding(tuple(str(v) for v in range(1, k + 1)))

    def code_levels(self, codes: Array, labels: tuple[str, ...], name: str,
                    ordered: bool = False) -> tuple[Array, ResponseCoding]:
        if not ordered:
            raise DataError(f"The response '{name}' of family 'cumulative' is categorical but not ordered "
                            f"({list(labels[:5])}{' ...' if len(labels) > 5 else ''}), so the order of its "
                            "categories is unknown; make it ordered, e.g. pd.Categorical(values, categories=[...], "
                            "ordered=True), or code it as integers 1..K.")
        if len(labels) < 2:
            raise DataError(f"The response '{name}' of family 'cumulative' takes one category only; an ordinal "
                            "model needs at least two.")
        return np.asarray(codes, dtype=float) + 1.0, ResponseCoding(labels)

    def encode_response(self, values: Any, name: str, coding: ResponseCoding, extra: Extra) -> Array:
        y = self._numeric(values, name)
        bad = ~np.isin(y, np.arange(1, len(coding.levels) + 1))
        if bad.any():
            raise _bad_values(y, bad, name, self.name, f"the model has categories 1..{len(coding.levels)}")
        return y

    # P(y = k) = F(tau_k − eta) − F(tau_{k−1} − eta), with tau_0 = −inf and tau_K = +inf
    def logpdf(self, y: Array, eta: Array, dp: dict[str, Array], extra: Extra) -> Array:
        tau = np.asarray(dp[THRESHOLDS])
        x = tau - np.asarray(eta)[..., None]  # (..., n, K − 1)
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            lf, ls = _log_p(self.link, x)
        pad = np.zeros(x.shape[:-1] + (1,))
        lf = np.concatenate([pad - np.inf, lf, pad], axis=-1)
        ls = np.concatenate([pad, ls, pad - np.inf], axis=-1)
        k = np.broadcast_to(np.asarray(y, dtype=np.int64), x.shape[:-1])[..., None]
        lo_f, hi_f = np.take_along_axis(lf, k - 1, -1)[..., 0], np.take_along_axis(lf, k, -1)[..., 0]
        lo_s, hi_s = np.take_along_axis(ls, k - 1, -1)[..., 0], np.take_along_axis(ls, k, -1)[..., 0]
        with np.errstate(invalid="ignore"):
            lower = hi_f < math.log(0.5)
            out = _log_diff(lo_f, hi_f, lo_s, hi_s, lower, _log1mexp, np.where)
        return np.where(np.isnan(out), -np.inf, out)

    def logp_pt(self, y: Any, eta: Any, dp: dict[str, Any], extra: Extra) -> Any:
        import pytensor.tensor as pt

        tau = dp[THRESHOLDS]
        x = tau[None, :] - eta[:, None]  # (n, K − 1)
        lf, ls = _log_p_pt(self.link, x)
        n = x.shape[0]
        lf = pt.concatenate([pt.full((n, 1), -np.inf), lf, pt.zeros((n, 1))], axis=1)
        ls = pt.concatenate([pt.zeros((n, 1)), ls, pt.full((n, 1), -np.inf)], axis=1)
        k = pt.cast(y, "int64")
        rows = pt.arange(n)
        lo_f, hi_f, lo_s, hi_s = lf[rows, k - 1], lf[rows, k], ls[rows, k - 1], ls[rows, k]
        return _log_diff(lo_f, hi_f, lo_s, hi_s, hi_f < math.log(0.5), pt.log1mexp, pt.switch)

    def category_probs(self, eta: Array, dp: dict[str, Array]) -> Array:
        """(..., n, K) probabilities of the categories."""
        cdf = self.link_function.inverse(np.asarray(dp[THRESHOLDS]) - np.asarray(eta)[..., None])
        pad = np.zeros(cdf.shape[:-1] + (1,))
        return np.clip(np.diff(np.concatenate([pad, cdf, pad + 1.0], axis=-1), axis=-1), 0.0, 1.0)

    def mean(self, eta: Array, dp: dict[str, Array], extra: Extra) -> Array:
        """Category probabilities, (..., n, K): brms's ``posterior_epred`` for ordinal families."""
        return self.category_probs(eta, dp)

    def random(self, rng: np.random.Generator, eta: Array, dp: dict[str, Array], extra: Extra) -> Array:
        cdf = self.link_function.inverse(np.asarray(dp[THRESHOLDS]) - np.asarray(eta)[..., None])
        u = rng.random(cdf.shape[:-1])
        return _as_int(1 + (u[..., None] > cdf).sum(axis=-1))

    def variance(self, eta: Array, dp: dict[str, Array], extra: Extra) -> Array:
        """Variance of the category number 1..K (brms treats ordinal predictions as continuous in R²)."""
        p = self.category_probs(eta, dp)
        k = np.arange(1, p.shape[-1] + 1)
        m = (p * k).sum(-1)
        return (p * k * k).sum(-1) - m * m
