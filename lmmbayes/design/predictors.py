"""What the design remembers about the raw predictors: numeric summaries or categorical levels.

`conditional_effects`, the marginaleffects-style averages and ``emmeans``
build grids of raw predictor values (a numeric predictor at its mean or
over its range, a categorical one at its reference level or at each of its
levels). They need, for every raw data column the formula reads on the
right-hand side, whether it is numeric (then its mean, SD, minimum and
maximum over the fitted rows) or categorical (then its levels in the
model's order, the reference level first). `Predictors` holds exactly that,
computed once here from the training rows (in memory) or from per-partition
moments (Dask), and stored in fit files as plain data.

Which columns: those of the population-level terms, of the group-level
terms' left-hand sides and of the offsets (role ``"predictor"``), plus the
columns of the ``trials()`` and ``se()`` addition terms (roles ``"trials"``
and ``"se"``), which a prediction needs too. Grouping factors' own columns
are not predictors unless a term also uses them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..spec import FormulaSpec
from ..spec.expr import Call, Column, columns
from .encoder import RowEncoder
from .levels import Levels

NUMERIC, CATEGORICAL = "numeric", "categorical"
#: Roles a summarised column plays.
ROLES = ("predictor", "trials", "se")


@dataclass(frozen=True)
class Predictor:
    """One raw data column used by the formula.

    Attributes
    ----------
    name : str
        The column's name in the data.
    kind : str
        ``"numeric"`` or ``"categorical"``.
    role : str
        ``"predictor"`` (right-hand side), ``"trials"`` or ``"se"`` (addition terms).
    mean, sd, min, max : float
        Over the fitted rows (numeric columns; NaN for categorical ones). ``sd``
        uses the divisor n - 1, as R's ``sd()``.
    levels : Levels or None
        The levels of a categorical column in the model's order (the reference level first).
    """

    name: str
    kind: str
    role: str
    mean: float = math.nan
    sd: float = math.nan
    min: float = math.nan
    max: float = math.nan
    levels: Levels | None = None

    @property
    def numeric(self) -> bool:
        return self.kind == NUMERIC

    @property
    def reference(self) -> Any:
        """The value a grid holds by default: the mean, or the first (reference) level."""
        if self.levels is not None:
            return self.levels.values[0]
        return self.mean


@dataclass(frozen=True)
class Predictors:
    """The summaries of every raw column the formula reads for prediction, in formula order."""

    items: tuple[Predictor, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.items)

    def of_role(self, role: str) -> tuple[Predictor, ...]:
        return tuple(p for p in self.items if p.role == role)

    def get(self, name: str) -> Predictor | None:
        return next((p for p in self.items if p.name == name), None)

    def __contains__(self, name: object) -> bool:
        return any(p.name == name for p in self.items)


def predictor_roles(spec: FormulaSpec) -> tuple[tuple[str, str], ...]:
    """(column, role) of every column `Predictors` summarises, in formula order, each once."""
    out: dict[str, str] = {}
    for t in spec.fixed:
        for c in t.columns:
            out.setdefault(c, "predictor")
    for g in spec.groups:
        for c in g.lhs_columns:
            out.setdefault(c, "predictor")
    for e in spec.offsets:
        for c in columns(e):
            out.setdefault(c, "predictor")
    for name, e in spec.additions.expressions():
        if name in ("trials", "se"):
            for c in columns(e):
                out.setdefault(c, name)
    return tuple(out.items())


def _component_levels(encoder: RowEncoder, name: str) -> Levels | None:
    """The levels the encoder learnt for ``name`` used as a category (``x``, ``C(x)``, ``factor(x)``)."""
    for c in encoder.components:
        if c.levels is None:
            continue
        inner = c.expr.args[0] if isinstance(c.expr, Call) and c.expr.fn in ("C", "factor") else c.expr
        if isinstance(inner, Column) and inner.name == name:
            return c.levels
    return None


def _is_categorical(values: pd.Series) -> bool:
    dtype = values.dtype
    return isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_bool_dtype(dtype) \
        or not pd.api.types.is_numeric_dtype(dtype)


def prediction_columns(encoder: RowEncoder) -> tuple[str, ...]:
    """The raw columns a prediction of every group-level term reads (the design's ``predictor_rows``)."""
    present = encoder.spec.additions.present
    return encoder.needed(response=False, additions=tuple(a for a in ("trials", "se") if a in present))


def summarise_predictors(spec: FormulaSpec, encoder: RowEncoder, frame: pd.DataFrame) -> Predictors:
    """The summaries from the complete training rows (numpy dtypes)."""
    items = []
    for name, role in predictor_roles(spec):
        col = frame[name]
        levels = _component_levels(encoder, name)
        if levels is None and _is_categorical(col):
            levels = Levels.learn(col, name, warn_unused=False)
        if levels is not None:
            items.append(Predictor(name, CATEGORICAL, role, levels=levels))
            continue
        x = col.to_numpy(dtype=float)
        items.append(Predictor(name, NUMERIC, role, float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else math.nan,
                               float(x.min()), float(x.max())))
    return Predictors(tuple(items))


@dataclass(frozen=True)
class Moments:
    """Count, mean, sum of squared deviations, minimum and maximum of some numbers (mergeable).

    Partial results merge exactly (Chan, Golub and LeVeque's pairwise update), so
    partitions summarised apart give the moments of the whole column.
    """

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    min: float = math.inf
    max: float = -math.inf

    @classmethod
    def of(cls, values: np.ndarray) -> Moments:
        x = np.asarray(values, dtype=float)
        if x.size == 0:
            return cls()
        with np.errstate(invalid="ignore", over="ignore"):  # infinite values are refused after the scan
            mean = float(x.mean())
            return cls(int(x.size), mean, float(((x - mean) ** 2).sum()), float(x.min()), float(x.max()))

    def __add__(self, other: Moments) -> Moments:
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        return Moments(n, self.mean + delta * other.n / n, self.m2 + other.m2 + delta**2 * self.n * other.n / n,
                       min(self.min, other.min), max(self.max, other.max))

    @property
    def sd(self) -> float:
        return math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else math.nan


def predictors_from_moments(spec: FormulaSpec, encoder: RowEncoder, moments: dict[str, Moments],
                            values: dict[str, pd.DataFrame]) -> Predictors:
    """The summaries of a Dask design: moments of the numeric columns, distinct values of the categorical ones."""
    items = []
    for name, role in predictor_roles(spec):
        levels = _component_levels(encoder, name)
        if levels is None and name in values:
            levels = Levels.learn(values[name][name], name, warn_unused=False)
        if levels is not None:
            items.append(Predictor(name, CATEGORICAL, role, levels=levels))
            continue
        m = moments[name]
        items.append(Predictor(name, NUMERIC, role, m.mean, m.sd, m.min, m.max))
    return Predictors(tuple(items))
