"""Link functions: the map from the mean to the linear predictor, its inverse, in numpy and PyTensor."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special

Array = np.ndarray


@dataclass(frozen=True)
class Link:
    """One link function.

    Attributes
    ----------
    name : str
        brms's name (``"logit"``, ``"log"``, ...).
    forward : callable
        ``g(mu)``, numpy.
    inverse : callable
        ``g⁻¹(eta)``, numpy.
    inverse_pt : callable
        ``g⁻¹(eta)`` as a PyTensor expression (PyTensor is imported only when called).
    """

    name: str
    forward: Callable[[Array], Array]
    inverse: Callable[[Array], Array]
    inverse_pt: Callable[[Any], Any]


def _pt() -> Any:
    import pytensor.tensor as pt

    return pt


def _probit_pt(eta: Any) -> Any:
    pt = _pt()
    return 0.5 * pt.erfc(-eta / np.sqrt(2.0))


def _cloglog_inverse(eta: Array) -> Array:
    return -np.expm1(-np.exp(eta))


LINKS: dict[str, Link] = {link.name: link for link in (
    Link("identity", lambda mu: mu, lambda eta: eta, lambda eta: eta),
    Link("log", np.log, np.exp, lambda eta: _pt().exp(eta)),
    Link("logit", special.logit, special.expit, lambda eta: _pt().sigmoid(eta)),
    Link("probit", special.ndtri, special.ndtr, _probit_pt),
    Link("cloglog", lambda mu: np.log(-np.log1p(-mu)), _cloglog_inverse,
         lambda eta: -_pt().expm1(-_pt().exp(eta))),
    Link("inverse", lambda mu: 1.0 / mu, lambda eta: 1.0 / eta, lambda eta: 1.0 / eta),
    Link("sqrt", np.sqrt, lambda eta: eta**2, lambda eta: eta**2),
)}
