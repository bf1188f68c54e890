"""lmmbayes: Bayesian linear mixed models with brms's formulas, priors and summaries.

>>> import lmmbayes as lb
>>> data = lb.datasets.load_bounce_times()
>>> priors = [lb.prior("normal(200, 1)", class_="Intercept"),
...           lb.prior("normal(0, 10)", class_="sd", group="county")]
>>> fit = lb.fit("bounce_time ~ std_age + (1 + std_age | county)", data, priors)
>>> print(fit.summary())
"""

from __future__ import annotations

from . import datasets
from .api import default_prior, fit, get_prior
from .distributions import register_distribution
from .errors import (
    ConvergenceWarning,
    DataError,
    DataWarning,
    FitError,
    FormulaError,
    LmmbayesError,
    LmmbayesWarning,
    PriorError,
)
from .fit import Fit
from .priors import Prior, PriorSet, prior

__version__ = "0.1.0"

__all__ = [
    "ConvergenceWarning",
    "DataError",
    "DataWarning",
    "Fit",
    "FitError",
    "FormulaError",
    "LmmbayesError",
    "LmmbayesWarning",
    "Prior",
    "PriorError",
    "PriorSet",
    "datasets",
    "default_prior",
    "fit",
    "get_prior",
    "prior",
    "register_distribution",
]
