"""Exceptions and warnings raised by lmmbayes.

Every error a user can trigger derives from :class:`LmmbayesError`, so
``except lmmbayes.LmmbayesError`` catches all of them.
"""

from __future__ import annotations


class LmmbayesError(Exception):
    """Base class of every error raised by lmmbayes."""


class FormulaError(LmmbayesError):
    """The model formula cannot be parsed or refers to something absent."""


class DataError(LmmbayesError):
    """The data cannot be used with the formula."""


class PriorError(LmmbayesError):
    """A prior is malformed or targets no parameter of the model."""


class FitError(LmmbayesError):
    """A fitting option is invalid or the sampler failed."""


class LmmbayesWarning(UserWarning):
    """Base class of lmmbayes warnings."""


class ConvergenceWarning(LmmbayesWarning):
    """The sampler reported problems (R-hat, divergences, tree depth, E-BFMI)."""


class DataWarning(LmmbayesWarning):
    """Rows were dropped or data was adjusted (e.g. unused factor levels)."""
