"""Every exception and warning lmmbayes raises.

Every error a user can trigger derives from `LmmbayesError`, so
``except lmmbayes.LmmbayesError`` catches all of them. Messages name the
culprit (column, term, prior or argument) and say what would be valid.
"""

from __future__ import annotations

import os
import warnings

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class LmmbayesError(Exception):
    """Base class of every error raised by lmmbayes."""


class FormulaError(LmmbayesError):
    """The model formula cannot be parsed, uses something not allowed, or refers to something absent."""


class DataError(LmmbayesError):
    """The data cannot be used with the formula and family."""


class PriorError(LmmbayesError):
    """A prior is malformed or targets no parameter of the model."""


class FitError(LmmbayesError):
    """A fitting option is invalid or the sampler failed."""


class InaccurateIntegration(FitError):
    """The collapsed engine measured, before sampling, that its approximation would not pass its own accuracy
    check; ``method="auto"`` then fits on the joint engine instead (``why`` says what was measured)."""

    def __init__(self, why: str) -> None:
        super().__init__(f"The collapsed engine's integration is not accurate enough here: {why}. "
                         'Use method="joint".')
        self.why = why


class FitFileError(FitError):
    """A fit file cannot be written or read: missing, foreign, malformed, corrupted or too new."""


class LmmbayesWarning(UserWarning):
    """Base class of lmmbayes warnings."""


class ConvergenceWarning(LmmbayesWarning):
    """The sampler reported problems (R-hat, divergences, tree depth, E-BFMI, low ESS)."""


class DataWarning(LmmbayesWarning):
    """Rows were dropped or data was adjusted (e.g. unused factor levels)."""


class ParetoKWarning(LmmbayesWarning):
    """PSIS-LOO is unreliable for some observations (Pareto k above 0.7)."""


class WAICWarning(LmmbayesWarning):
    """WAIC is unreliable for some observations (p_waic above 0.4)."""


class IntegrationWarning(LmmbayesWarning):
    """An approximate integration of the random effects failed its accuracy check."""


def warn(message: str, category: type[Warning]) -> None:
    """Issue ``message`` attributed to the user's first line outside lmmbayes, however deep the call."""
    warnings.warn(message, category, skip_file_prefixes=(_PACKAGE_DIR,))


__all__ = [
    "ConvergenceWarning", "DataError", "DataWarning", "FitError", "FitFileError", "FormulaError",
    "IntegrationWarning", "LmmbayesError", "LmmbayesWarning", "ParetoKWarning", "PriorError", "WAICWarning",
    "warn",
]
