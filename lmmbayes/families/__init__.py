"""Response families: brms's names, links, parameters, default priors and densities.

``lb.family("poisson", link="log")`` builds one; ``family=`` in
`lmmbayes.fit` also takes the name alone (brms's default link).
`register_family` adds a user-defined `Family`.
"""

from __future__ import annotations

from typing import Any

from ..errors import FitError
from .base import THRESHOLDS, DistParam, Extra, Family, ResponseCoding, format_number, r_mad
from .builtin import (
    Bernoulli,
    Beta,
    Binomial,
    Cumulative,
    GammaFamily,
    Gaussian,
    LogNormal,
    NegBinomial,
    Poisson,
    Student,
)
from .links import LINKS, Link

_BUILTIN: dict[str, type[Family]] = {
    "gaussian": Gaussian, "bernoulli": Bernoulli, "binomial": Binomial, "poisson": Poisson,
    "negbinomial": NegBinomial, "student": Student, "lognormal": LogNormal, "gamma": GammaFamily, "beta": Beta,
    "cumulative": Cumulative,
}
#: Other spellings brms accepts (``brmsfamily("Gamma")`` is ``gamma`` with the log link).
_ALIASES: dict[str, str] = {"Gamma": "gamma", "Beta": "beta", "negative_binomial": "negbinomial"}
_CUSTOM: dict[str, Family] = {}


def available() -> list[str]:
    """Names `family` accepts."""
    return sorted({*_BUILTIN, *_CUSTOM})


#: brms families that lmmbayes does not fit yet: named as such in the error, not as unknown.
_BRMS_NOT_YET = frozenset({
    "sratio", "cratio", "acat", "categorical", "multinomial", "dirichlet", "skew_normal",
    "exponential", "weibull", "frechet", "gen_extreme_value", "exgaussian", "shifted_lognormal", "von_mises",
    "wiener", "asym_laplace", "hurdle_poisson", "hurdle_negbinomial", "hurdle_gamma", "hurdle_lognormal",
    "zero_inflated_poisson", "zero_inflated_negbinomial", "zero_inflated_binomial", "zero_inflated_beta",
    "zero_one_inflated_beta", "geometric", "beta_binomial",
})


def family(name: Any, link: Any = None) -> Family:
    """A response family with its link, as brms's ``brmsfamily(name, link)``.

    Parameters
    ----------
    name : str
        ``"gaussian"`` and the other families listed by the families page.
    link : str, optional
        One of the family's links; brms's default when omitted.

    Raises
    ------
    FitError
        An unknown family or a link the family lacks, listing the valid ones.
    """
    if isinstance(name, Family):
        if link is not None and link != name.link:
            return type(name)(name.name, link) if type(name) in _BUILTIN.values() else _relink(name, link)
        return name
    if not isinstance(name, str):
        raise FitError(f"family must be a name such as 'gaussian' or lmmbayes.family(...), got {name!r}.")
    if link is not None and not isinstance(link, str):
        raise FitError(f"link must be a string such as 'logit', got {link!r}.")
    key = _ALIASES.get(name, name)
    if key not in _BUILTIN and key not in _CUSTOM and key.lower() in _BUILTIN:
        key = key.lower()  # "Poisson", "Bernoulli": as R's own family objects are spelled
    if key in _CUSTOM:
        return _relink(_CUSTOM[key], link) if link else _CUSTOM[key]
    if key not in _BUILTIN:
        what = ("a brms family that lmmbayes does not fit yet" if key.lower() in _BRMS_NOT_YET
                else "an unknown family")
        raise FitError(f"{name!r} is {what}; supported families: {available()}.")
    return _BUILTIN[key](key, link or "")


def _relink(fam: Family, link: str) -> Family:
    from dataclasses import replace

    if link not in fam.links:
        raise FitError(f"Family {fam.name!r} has no link {link!r}; its links are {list(fam.links)}.")
    return replace(fam, link=link)


def dpar_names() -> tuple[str, ...]:
    """Names of the distributional parameters of every known family (the prior classes they add)."""
    names: list[str] = []
    for fam in [cls(name) for name, cls in _BUILTIN.items()] + list(_CUSTOM.values()):
        for extra in ((), ("se",)):
            names += [d.name for d in fam.dpars(extra, True)]
    return tuple(dict.fromkeys(names))


def register_family(fam: Family) -> None:
    """Make a user-defined family usable by name (``family="myfamily"``).

    Parameters
    ----------
    fam : Family
        An instance of a `Family` subclass that implements ``logpdf``,
        ``logp_pt``, ``random``, ``mean`` and declares its links and
        distributional parameters.
    """
    if not isinstance(fam, Family):
        raise FitError(f"register_family needs a lmmbayes Family instance, got {type(fam).__name__}.")
    if fam.name in _BUILTIN or fam.name in _ALIASES:
        raise FitError(f"register_family: {fam.name!r} is a built-in family; choose another name.")
    for method in ("logpdf", "logp_pt", "random"):
        if getattr(type(fam), method) is getattr(Family, method):
            raise FitError(f"register_family: family {fam.name!r} does not implement {method}().")
    _CUSTOM[fam.name] = fam


__all__ = [
    "LINKS",
    "THRESHOLDS",
    "DistParam",
    "Extra",
    "Family",
    "Link",
    "ResponseCoding",
    "available",
    "dpar_names",
    "family",
    "format_number",
    "r_mad",
    "register_family",
]
