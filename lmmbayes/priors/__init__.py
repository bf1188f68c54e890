"""Priors: the distribution table, ``prior()``, brms's defaults (owned by the families), resolution, ``get_prior``."""

from .distributions import Distribution, available, lookup, register_distribution
from .prior import Prior, PriorSet, as_prior_set, parse_dist, prior
from .resolve import (
           CENTRED_INTERCEPT_NOTE,
           PriorTable,
           ResolvedPriors,
           Slot,
           prior_table,
           resolve_priors,
           slots,
)

__all__ = ["CENTRED_INTERCEPT_NOTE", "Distribution", "Prior", "PriorSet", "PriorTable", "ResolvedPriors", "Slot",
           "as_prior_set", "available", "lookup", "parse_dist", "prior", "prior_table", "register_distribution",
           "resolve_priors", "slots"]
