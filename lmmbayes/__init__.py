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

# Workflow functions load on first use, so `import lmmbayes` stays light (no matplotlib).
_LAZY = {
    "plot_groups": "plots",
    "plot_prior_predictive": "plots",
    "plot_trace": "plots",
    "plot_rank": "plots",
    "plot_acf": "plots",
    "plot_parallel": "plots",
    "plot_pairs": "plots",
    "plot_energy": "plots",
    "plot_ranef": "plots",
    "prior_predictive": "priorsim",
    "loo_compare": "compare",
    "load": "persist",
    "simulation_based_calibration": "sbc",
    "report": "reporting",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'lmmbayes' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])

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
    *_LAZY,
    "get_prior",
    "prior",
    "register_distribution",
]
