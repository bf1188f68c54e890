"""brms-style priors: `prior`, sets of priors, parsing ``"normal(0, 10)"``.

A prior targets a parameter by ``(class, coef, group)`` exactly as in brms.
Whether a class exists in a model (``shape`` needs a family that has it) is
checked when the priors are resolved against the model
(`lmmbayes.priors.resolve`), where a prior that matches nothing is an
error listing what can be set.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import PriorError
from ..families import dpar_names
from .distributions import Distribution, callable_distribution, lookup

#: Classes of the linear predictor and the group-level structure (``L`` is accepted for ``cor``).
STRUCTURAL = ("Intercept", "b", "sd", "cor")
#: Distributional parameters of the built-in families, with their lower bound (brms's ``dpar_bounds``).
DPAR_BOUNDS: dict[str, tuple[float, float]] = {"sigma": (0.0, math.inf), "shape": (0.0, math.inf),
                                               "nu": (1.0, math.inf), "phi": (0.0, math.inf)}
_CALL = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*\((.*)\)\s*$", re.DOTALL)


def known_classes() -> tuple[str, ...]:
    return (*STRUCTURAL, *DPAR_BOUNDS)


def parse_dist(text: Any) -> tuple[Distribution, tuple[float, ...]]:
    """Parse ``"normal(0, 10)"`` into its distribution and numeric arguments."""
    if not isinstance(text, str):
        raise PriorError(f"A prior distribution must be a string such as 'normal(0, 10)', got {text!r}.")
    stripped = text.strip()
    if stripped in ("", "flat"):
        return lookup("flat", text), ()
    match = _CALL.match(stripped)
    if not match:
        raise PriorError(f"Cannot read the prior '{text}': write a distribution call such as 'normal(0, 10)', "
                         "'student_t(3, 0, 2.5)' or 'exponential(1)'.")
    name, inner = match.group(1), match.group(2).strip()
    dist = lookup(name, text)
    args: list[float] = []
    if inner:
        for position, piece in enumerate(inner.split(","), start=1):
            try:
                args.append(float(piece.strip()))
            except ValueError:
                raise PriorError(f"Prior '{text}': argument {position} ({piece.strip()!r}) is not a number; prior "
                                 "arguments must be numeric literals.") from None
    values = tuple(args)
    dist.check_args(values, text)
    return dist, values


@dataclass(frozen=True)
class Prior:
    """One prior on one class of parameters, optionally narrowed by coef and group.

    Build it with `prior`. Priors combine with ``+`` into a `PriorSet`.
    """

    dist: str
    class_: str = "b"
    coef: str = ""
    group: str = ""
    lb: float | None = None
    ub: float | None = None
    source: str = "user"
    family: Distribution = field(default=None, repr=False, compare=False)  # type: ignore[assignment]
    args: tuple[float, ...] = field(default=(), repr=False)

    @property
    def target(self) -> tuple[str, str, str]:
        return (self.class_, self.coef, self.group)

    @property
    def is_flat(self) -> bool:
        return self.family.flat

    def describe(self) -> str:
        """Where this prior applies, for messages."""
        parts = [f"class={self.class_!r}"]
        if self.coef:
            parts.append(f"coef={self.coef!r}")
        if self.group:
            parts.append(f"group={self.group!r}")
        return f"prior({self.dist!r}, {', '.join(parts)})"

    def same_distribution(self, other: Prior) -> bool:
        return (self.family.name, self.args, self.lb, self.ub, self.family.factory) == (
            other.family.name, other.args, other.lb, other.ub, other.family.factory)

    def bounds(self) -> tuple[float, float]:
        """The interval the parameter lives on: the distribution's support cut by lb and ub."""
        s_lo, s_hi = self.family.support_bounds(self.args)
        lo = s_lo if self.lb is None else max(s_lo, self.lb)
        hi = s_hi if self.ub is None else min(s_hi, self.ub)
        return lo, hi

    def __add__(self, other: Prior | PriorSet) -> PriorSet:
        return PriorSet((self,)) + other


@dataclass(frozen=True)
class PriorSet:
    """An ordered collection of priors; ``prior(...) + prior(...)`` makes one."""

    priors: tuple[Prior, ...] = ()

    def __add__(self, other: Prior | PriorSet) -> PriorSet:
        if isinstance(other, Prior):
            return PriorSet(self.priors + (other,))
        if isinstance(other, PriorSet):
            return PriorSet(self.priors + other.priors)
        return NotImplemented

    def __iter__(self) -> Iterator[Prior]:
        return iter(self.priors)

    def __len__(self) -> int:
        return len(self.priors)


def _bound(value: Any, name: str, label: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise PriorError(f"{label}: {name} must be a number or None, got {value!r}.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PriorError(f"{label}: {name} must be a number or None, got {value!r}.") from None
    if math.isnan(number):
        raise PriorError(f"{label}: {name} must be a number or None, got NaN.")
    return number


def prior(dist: str | Callable[..., Any], class_: str = "b", coef: str = "", group: str = "",
          lb: float | None = None, ub: float | None = None) -> Prior:
    """A brms-style prior.

    Parameters
    ----------
    dist : str or callable
        A distribution call such as ``"normal(0, 10)"``, ``"student_t(3, 0, 2.5)"``,
        ``"exponential(1)"``, ``"lkj(2)"`` or ``"flat"``; or a factory
        ``f(name, **kwargs) -> PyMC variable`` (see `register_distribution`).
    class_ : str
        The parameter class: ``"Intercept"``, ``"b"``, ``"sd"``, ``"cor"`` (``"L"``
        is accepted) or a distributional parameter of the family (``"sigma"``,
        ``"shape"``, ``"nu"``, ``"phi"``).
    coef : str
        A coefficient (class ``b``), group-level term (class ``sd``) or threshold
        number (class ``Intercept`` of a cumulative model).
    group : str
        A grouping factor (classes ``sd`` and ``cor``).
    lb, ub : float, optional
        Bounds. Standard deviations and positive distributional parameters
        are bounded below at 0 already (``nu`` at 1).

    Returns
    -------
    Prior

    Raises
    ------
    PriorError
        On an unknown distribution, a wrong number of arguments, an impossible
        argument, an unknown class or bounds that contradict the distribution.
    """
    class_ = "cor" if class_ == "L" else class_
    classes = (*STRUCTURAL, *dict.fromkeys([*DPAR_BOUNDS, *dpar_names()]))
    if not isinstance(class_, str) or class_ not in classes:
        raise PriorError(f"Unknown prior class {class_!r}; valid classes are {list(classes)}.")
    for name, value in (("coef", coef), ("group", group)):
        if not isinstance(value, str):
            raise PriorError(f"prior(): {name} must be a string, got {value!r}.")
    label = f"prior({dist!r}, class_={class_!r})"
    args: tuple[float, ...]
    if callable(dist):
        family, args, text = callable_distribution(dist), (), family_label(dist)
    else:
        family, args = parse_dist(dist)
        text = dist.strip() or "flat"
    dpar = class_ not in STRUCTURAL
    if (class_ == "Intercept" and group) or (dpar and (coef or group)) or (class_ == "b" and group):
        what = "coef or group" if dpar else "group"
        raise PriorError(f"{label}: class {class_!r} takes no {what}; 'group' applies to classes 'sd' and 'cor'.")
    if class_ == "cor" and coef:
        raise PriorError(f"{label}: class 'cor' takes a group, not a coef.")
    is_lkj = family.support == "cholesky"
    if class_ == "cor" and not is_lkj:
        raise PriorError(f"{label}: class 'cor' needs an LKJ prior such as 'lkj(2)', got '{text}'.")
    if class_ != "cor" and is_lkj:
        raise PriorError(f"{label}: '{text}' is only valid for class 'cor'.")
    lo, hi = _bound(lb, "lb", label), _bound(ub, "ub", label)
    if is_lkj and (lo is not None or hi is not None):
        raise PriorError(f"{label}: bounds cannot be set on a correlation prior.")
    floor = 0.0 if class_ == "sd" else DPAR_BOUNDS.get(class_, (None, None))[0]
    if floor is not None:
        if lo is not None and lo < floor:
            what = "a standard deviation" if class_ in ("sd", "sigma") else f"bounded below at {floor:g}"
            raise PriorError(f"{label}: class {class_!r} is {what}; lb must be >= {floor:g}, got {lo}.")
        lo = floor if lo is None else lo
    if lo is not None and hi is not None and lo >= hi:
        raise PriorError(f"{label}: lb ({lo}) must be smaller than ub ({hi}).")
    if not is_lkj:
        s_lo, s_hi = family.support_bounds(args)
        if (hi is not None and hi <= s_lo) or (lo is not None and lo >= s_hi):
            raise PriorError(f"{label}: the bounds [{lo}, {hi}] leave no mass under '{text}', whose support is "
                             f"[{s_lo}, {s_hi}].")
    return Prior(text, class_, coef, group, lo, hi, "user", family, args)


def family_label(factory: Callable[..., Any]) -> str:
    return f"<{getattr(factory, '__name__', 'custom')}>"


def as_prior_set(priors: Prior | PriorSet | Iterable[Prior] | None) -> PriorSet:
    """Normalise the ``priors`` argument of `lmmbayes.fit`."""
    if priors is None:
        return PriorSet()
    if isinstance(priors, Prior):
        return PriorSet((priors,))
    if isinstance(priors, PriorSet):
        return priors
    if isinstance(priors, (str, bytes)) or not isinstance(priors, Iterable):
        raise PriorError(f"priors must be a prior(...), a sum of priors or a list of them, got {type(priors).__name__}.")
    out = PriorSet()
    for item in list(priors):
        if not isinstance(item, (Prior, PriorSet)):
            raise PriorError(f"priors must contain lmmbayes.prior(...) objects, got {type(item).__name__}: {item!r}.")
        out = out + item
    return out


def default(text: str, class_: str, lb: float | None = None, ub: float | None = None) -> Prior:
    """A default prior (source ``"default"``), parsed like a user's."""
    family, args = parse_dist(text)
    return Prior(text, class_, "", "", lb, ub, "default", family, args)
