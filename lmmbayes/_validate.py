"""Every argument check, in one place: one rule for counts, seeds, probabilities and choices.

Each check returns the value in its canonical type or raises the given
lmmbayes error class with a message that names the argument, shows what
was passed and says what is valid.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import numpy as np

from .errors import LmmbayesError

T = TypeVar("T")
Error = type[LmmbayesError]

#: Seeds are non-negative integers below this bound (numpy's SeedSequence accepts any, nutpie u64).
SEED_LIMIT = 2**63


def is_integer(value: Any) -> bool:
    """True for Python and numpy integers, never for booleans."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def count(value: Any, name: str, *, minimum: int = 1, error: Error = LmmbayesError) -> int:
    """An integer ``>= minimum``."""
    if not is_integer(value) or value < minimum:
        what = "a positive integer" if minimum == 1 else (
            "a non-negative integer" if minimum == 0 else f"an integer >= {minimum}")
        raise error(f"{name} must be {what}, got {value!r}.")
    return int(value)


def seed(value: Any, name: str = "seed", *, error: Error = LmmbayesError) -> int:
    """A non-negative integer seed; a fresh random one for None."""
    if value is None:
        return int(np.random.SeedSequence().generate_state(1, dtype=np.uint32)[0])
    if not is_integer(value) or not 0 <= value < SEED_LIMIT:
        raise error(f"{name} must be None or a non-negative integer below 2**63, got {value!r}.")
    return int(value)


def rng(value: Any, name: str = "seed", *, error: Error = LmmbayesError) -> np.random.Generator:
    """A numpy Generator from None, a seed or a Generator."""
    if isinstance(value, np.random.Generator):
        return value
    if value is None:
        return np.random.default_rng()
    return np.random.default_rng(seed(value, name, error=error))


def probability(value: Any, name: str, *, error: Error = LmmbayesError, allow_none: bool = False) -> float | None:
    """A number strictly between 0 and 1."""
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) \
            or not 0 < float(value) < 1:
        none = "None or " if allow_none else ""
        raise error(f"{name} must be {none}a number strictly between 0 and 1, got {value!r}.")
    return float(value)


def probabilities(values: Any, name: str = "probs", *, error: Error = LmmbayesError) -> tuple[float, ...]:
    """A non-empty sequence of numbers strictly between 0 and 1."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise error(f"{name} must be a sequence of numbers strictly between 0 and 1, got {values!r}.")
    items = list(values)
    if not items:
        raise error(f"{name} must hold at least one number strictly between 0 and 1, got {values!r}.")
    return tuple(probability(v, f"each of {name}", error=error) for v in items)  # type: ignore[misc]


def choice(value: Any, name: str, options: Sequence[T], *, error: Error = LmmbayesError) -> T:
    """One of ``options`` (compared with ==; strings are matched exactly)."""
    for option in options:
        if isinstance(value, type(option)) and value == option:
            return option
    raise error(f"Unknown {name} {value!r}; choose one of {list(options)}.")


def flag(value: Any, name: str, *, error: Error = LmmbayesError) -> bool:
    """A boolean (Python or numpy)."""
    if not isinstance(value, (bool, np.bool_)):
        raise error(f"{name} must be True or False, got {value!r}.")
    return bool(value)


def real(value: Any, name: str, *, error: Error = LmmbayesError, positive: bool = False) -> float:
    """A finite real number (positive if asked)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not np.isfinite(float(value)) \
            or (positive and value <= 0):
        what = "a positive finite number" if positive else "a finite number"
        raise error(f"{name} must be {what}, got {value!r}.")
    return float(value)


def text(value: Any, name: str, *, error: Error = LmmbayesError, empty: bool = True) -> str:
    """A string (non-empty unless ``empty``)."""
    if not isinstance(value, str) or (not empty and not value):
        raise error(f"{name} must be a {'non-empty ' if not empty else ''}string, got {value!r}.")
    return value


def path(value: Any, name: str = "path", *, error: Error = LmmbayesError) -> str:
    """A file-system path given as a string or path-like object."""
    if isinstance(value, (str, os.PathLike)):
        result = os.fspath(value)
        if isinstance(result, str) and result:
            return result
    raise error(f"{name} must be a file path (a string or pathlib.Path), got {value!r}.")


def keywords(given: dict[str, Any], allowed: Iterable[str], where: str, *,
             error: Error = LmmbayesError) -> None:
    """Refuse keyword arguments outside ``allowed``, listing the valid ones."""
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise error(f"{where}() got unexpected keyword argument(s) {unknown}; valid: {sorted(allowed)}.")
