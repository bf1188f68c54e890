"""lmmbayes: Bayesian mixed models with brms's formulas, priors, families and summaries.

>>> import lmmbayes as lb
>>> data = lb.datasets.load_bounce_times()
>>> priors = [lb.prior("normal(200, 1)", class_="Intercept"),
...           lb.prior("normal(0, 10)", class_="sd", group="county")]
>>> fit = lb.fit("bounce_time ~ std_age + (1 + std_age | county)", data, priors)
>>> print(fit.summary())

``import lmmbayes`` is light: PyMC, PyTensor, nutpie, numba, matplotlib and
arviz-plots load only when a call needs them.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import (
    ConvergenceWarning,
    DataError,
    DataWarning,
    FitError,
    FitFileError,
    FormulaError,
    IntegrationWarning,
    LmmbayesError,
    LmmbayesWarning,
    ParetoKWarning,
    PriorError,
    WAICWarning,
)

__version__ = "0.2.0"

# Everything else loads on first use, so that `import lmmbayes` stays light.
_LAZY = {
    "fit": "api", "get_prior": "api", "default_prior": "api", "load": "api", "loo_compare": "api", "Fit": "api",
    "prior": "priors", "Prior": "priors", "PriorSet": "priors", "register_distribution": "priors",
    "family": "families", "register_family": "families", "Family": "families",
    "datasets": None,
    "plot_groups": "workflow.plots", "plot_prior_predictive": "workflow.plots",
    "plot_trace": "workflow.mcmc_plots", "plot_rank": "workflow.mcmc_plots", "plot_acf": "workflow.mcmc_plots",
    "plot_parallel": "workflow.mcmc_plots", "plot_pairs": "workflow.mcmc_plots", "plot_energy": "workflow.mcmc_plots",
    "plot_forest": "workflow.mcmc_plots", "plot_ranef": "workflow.mcmc_plots",
    "prior_predictive": "workflow.priorsim",
    "simulation_based_calibration": "workflow.sbc",
    "report": "workflow.report",
    "conditional_effects": "workflow.effects",
    "avg_predictions": "workflow.margins", "avg_comparisons": "workflow.margins", "avg_slopes": "workflow.margins",
    "emmeans": "workflow.margins", "plot_predictions": "workflow.margins",
    "plot_comparisons": "workflow.margins", "plot_slopes": "workflow.margins",
    "kfold": "workflow.kfold",
    "bridge_sampler": "workflow.bridge", "bayes_factor": "workflow.bridge",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = _LAZY[name]
        if module is None:
            return importlib.import_module(f".{name}", __name__)
        return getattr(importlib.import_module(f".{module}", __name__), name)
    raise AttributeError(f"module 'lmmbayes' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "ConvergenceWarning", "DataError", "DataWarning", "FitError", "FitFileError", "FormulaError", "IntegrationWarning",
    "LmmbayesError", "LmmbayesWarning", "ParetoKWarning", "PriorError", "WAICWarning", *_LAZY,
]
