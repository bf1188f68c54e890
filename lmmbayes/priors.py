"""brms-style priors: :func:`prior`, sets of priors, data-scaled defaults, :func:`get_prior`.

A prior targets a parameter by ``(class, coef, group)`` exactly as in brms.
User priors are checked against the table of settable parameters (what
:func:`get_prior` shows); one that matches nothing is an error, never
silently ignored. The most specific prior wins (``b`` with a ``coef`` beats
``b``; ``sd`` with ``group`` and ``coef`` beats ``sd`` with ``group``, which
beats ``sd``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .design import Design, r_mad
from .distributions import Distribution, callable_distribution, lookup
from .errors import PriorError

#: Parameter classes a prior can target, as in brms (``L`` is accepted for ``cor``).
CLASSES = ("Intercept", "b", "sd", "cor", "sigma")
_BOUNDED_BELOW = ("sd", "sigma")
_CALL = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*\((.*)\)\s*$", re.S)

CENTRED_INTERCEPT_NOTE = (
    "Note: class 'Intercept' is the intercept of the model with centred "
    "predictors (brms's convention); b_Intercept is reported on the original "
    "scale. For a prior on the uncentred intercept write 'y ~ 0 + Intercept + ...' "
    "and set class='b', coef='Intercept'."
)


def format_number(value: float) -> str:
    """Print a number as brms does: ``3``, ``288.7``, ``0``."""
    return f"{value:.10g}"


def parse_dist(text: str) -> tuple[Distribution, tuple[float, ...]]:
    """Parse ``"normal(0, 10)"`` into its distribution and numeric arguments."""
    if not isinstance(text, str):
        raise PriorError(f"A prior distribution must be a string such as 'normal(0, 10)', got {text!r}.")
    stripped = text.strip()
    if stripped in ("", "flat"):
        return lookup("flat", text), ()
    match = _CALL.match(stripped)
    if not match:
        raise PriorError(
            f"Cannot read the prior '{text}': write a distribution call such as "
            "'normal(0, 10)', 'student_t(3, 0, 2.5)' or 'exponential(1)'."
        )
    name, inner = match.group(1), match.group(2).strip()
    dist = lookup(name, text)
    args: list[float] = []
    if inner:
        for position, piece in enumerate(inner.split(","), start=1):
            try:
                args.append(float(piece.strip()))
            except ValueError:
                raise PriorError(
                    f"Prior '{text}': argument {position} ({piece.strip()!r}) is not a number; "
                    "prior arguments must be numeric literals."
                ) from None
    values = tuple(args)
    dist.check_args(values, text)
    return dist, values


@dataclass(frozen=True)
class Prior:
    """One prior on one class of parameters, optionally narrowed by coef and group.

    Build it with :func:`prior`. Priors combine with ``+`` into a :class:`PriorSet`.
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
        return self.family.name == "flat"

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
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PriorError(f"{label}: {name} must be a number or None, got {value!r}.") from None
    if math.isnan(number):
        raise PriorError(f"{label}: {name} must be a number or None, got NaN.")
    return number


def prior(
    dist: str | Callable[..., Any],
    class_: str = "b",
    coef: str = "",
    group: str = "",
    lb: float | None = None,
    ub: float | None = None,
) -> Prior:
    """A brms-style prior.

    Parameters
    ----------
    dist : str or callable
        A distribution call such as ``"normal(0, 10)"``, ``"student_t(3, 0, 2.5)"``,
        ``"exponential(1)"``, ``"lkj(2)"`` or ``"flat"``; or a factory
        ``f(name, **kwargs) -> PyMC variable`` (see :func:`register_distribution`).
    class_ : {"Intercept", "b", "sd", "cor", "sigma"}
        The parameter class (``"L"`` is accepted for ``"cor"``).
    coef : str
        A coefficient (class ``b``) or group-level term (class ``sd``).
    group : str
        A grouping factor (classes ``sd`` and ``cor``).
    lb, ub : float, optional
        Bounds. Classes ``sd`` and ``sigma`` are bounded below at 0 already.

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
    if class_ not in CLASSES:
        raise PriorError(f"Unknown prior class {class_!r}; valid classes are {list(CLASSES)}.")
    for name, value in (("coef", coef), ("group", group)):
        if not isinstance(value, str):
            raise PriorError(f"prior(): {name} must be a string, got {value!r}.")
    label = f"prior({dist!r}, class_={class_!r})"
    if callable(dist):
        family, args, text = callable_distribution(dist), (), family_label(dist)
    else:
        family, args = parse_dist(dist)
        text = dist.strip() or "flat"
    if class_ in ("Intercept", "sigma") and coef:
        raise PriorError(f"{label}: class {class_!r} has no coefficients; leave coef empty.")
    if class_ in ("Intercept", "b", "sigma") and group:
        raise PriorError(
            f"{label}: class {class_!r} is not group-specific; 'group' applies to classes 'sd' and 'cor'."
        )
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
    if class_ in _BOUNDED_BELOW:
        if lo is not None and lo < 0:
            raise PriorError(f"{label}: class {class_!r} is a standard deviation; lb must be >= 0, got {lo}.")
        lo = 0.0 if lo is None else lo
    if lo is not None and hi is not None and lo >= hi:
        raise PriorError(f"{label}: lb ({lo}) must be smaller than ub ({hi}).")
    if not is_lkj:
        s_lo, s_hi = family.support_bounds(args)
        if (hi is not None and hi <= s_lo) or (lo is not None and lo >= s_hi):
            raise PriorError(
                f"{label}: the bounds [{lo}, {hi}] leave no mass under '{text}', whose "
                f"support is [{s_lo}, {s_hi}]."
            )
    return Prior(text, class_, coef, group, lo, hi, "user", family, args)


def family_label(factory: Callable[..., Any]) -> str:
    return f"<{getattr(factory, '__name__', 'custom')}>"


def as_prior_set(priors: Prior | PriorSet | Iterable[Prior] | None) -> PriorSet:
    """Normalise the ``priors`` argument of :func:`lmmbayes.fit`."""
    if priors is None:
        return PriorSet()
    if isinstance(priors, Prior):
        return PriorSet((priors,))
    if isinstance(priors, PriorSet):
        return priors
    if isinstance(priors, (str, bytes)) or not isinstance(priors, Iterable):
        raise PriorError(
            f"priors must be a prior(...), a sum of priors or a list of them, got {type(priors).__name__}."
        )
    items = list(priors)
    for item in items:
        if not isinstance(item, (Prior, PriorSet)):
            raise PriorError(
                f"priors must contain lmmbayes.prior(...) objects, got {type(item).__name__}: {item!r}."
            )
    out = PriorSet()
    for item in items:
        out = out + item
    return out


# --- defaults --------------------------------------------------------------

def default_scale(y: np.ndarray) -> float:
    """brms's data scale: ``max(2.5, mad(y))`` rounded to one decimal."""
    return _scale_from_mad(r_mad(y))


def _scale_from_mad(mad: float) -> float:
    return round(max(2.5, mad), 1)


def _default(text: str, class_: str, coef: str = "", group: str = "") -> Prior:
    made = prior(text, class_=class_)
    return Prior(made.dist, class_, coef, group, made.lb, made.ub, "default", made.family, made.args)


@dataclass(frozen=True)
class Slot:
    """One settable parameter: what get_prior lists and what a prior resolves to."""

    class_: str
    coef: str = ""
    group: str = ""


def slots(design: Design) -> list[Slot]:
    """Every parameter a prior can be set on, in brms's order."""
    out = [Slot("b", c) for c in design.coef_names]
    if design.centred_intercept:
        out.append(Slot("Intercept"))
    for f in design.factors:
        out += [Slot("sd", t, f.name) for t in f.terms]
    for f in design.factors:
        if f.cor_pairs:
            out.append(Slot("cor", "", f.name))
    out.append(Slot("sigma"))
    return out


def default_priors(design: Design) -> dict[str, Prior]:
    """brms's data-scaled class-level defaults for this response."""
    # Median and MAD come from the design: a design without rows (Dask input) keeps them.
    scale = format_number(_scale_from_mad(design.y_mad))
    centre = format_number(round(design.y_median, 1))
    return {
        "b": _default("flat", "b"),
        "Intercept": _default(f"student_t(3, {centre}, {scale})", "Intercept"),
        "sd": _default(f"student_t(3, 0, {scale})", "sd"),
        "cor": _default("lkj(1)", "cor"),
        "sigma": _default(f"student_t(3, 0, {scale})", "sigma"),
    }


def _matches(p: Prior, s: Slot) -> bool:
    return (
        p.class_ == s.class_
        and (not p.coef or p.coef == s.coef)
        and (not p.group or p.group == s.group)
    )


def _specificity(p: Prior) -> int:
    return 2 * bool(p.coef) + bool(p.group)


@dataclass(frozen=True)
class ResolvedPriors:
    """The prior of every parameter slot, after defaults and specificity."""

    table: tuple[tuple[Slot, Prior], ...]

    def get(self, class_: str, coef: str = "", group: str = "") -> Prior:
        for s, p in self.table:
            if (s.class_, s.coef, s.group) == (class_, coef, group):
                return p
        raise KeyError((class_, coef, group))

    def frame(self) -> pd.DataFrame:
        """Resolved priors as brms's prior_summary shows them."""
        rows = [
            {
                "prior": p.dist,
                "class": s.class_,
                "coef": s.coef,
                "group": s.group,
                "lb": "" if p.lb is None else format_number(p.lb),
                "ub": "" if p.ub is None else format_number(p.ub),
                "source": p.source,
            }
            for s, p in self.table
        ]
        return pd.DataFrame(rows, columns=["prior", "class", "coef", "group", "lb", "ub", "source"])


def _settable_listing(design: Design) -> str:
    table = prior_table(design)
    rows = [
        "  " + ", ".join(f"{k}={r[k]!r}" for k in ("class", "coef", "group") if r[k] or k == "class")
        for _, r in table.iterrows()
    ]
    return "Parameters that can be set (as get_prior() lists them):\n" + "\n".join(rows)


def resolve_priors(design: Design, priors: PriorSet) -> ResolvedPriors:
    """Combine user priors with the defaults, checking every user prior is used.

    Raises
    ------
    PriorError
        If a prior matches no parameter, or the same target gets two
        different priors.
    """
    table = slots(design)
    by_target: dict[tuple[str, str, str], Prior] = {}
    for p in priors:
        if not any(_matches(p, s) for s in table):
            hint = ""
            if p.class_ == "cor" and p.group and any(f.name == p.group for f in design.factors):
                hint = (f" Grouping factor '{p.group}' has no correlated terms: a correlation "
                        "needs at least two terms in one (a + b | g) block.")
            raise PriorError(f"{p.describe()} matches no parameter of this model.{hint}\n"
                             + _settable_listing(design))
        old = by_target.get(p.target)
        if old is not None and not old.same_distribution(p):
            raise PriorError(
                f"Two different priors target the same parameters: {old.describe()} and "
                f"{p.describe()}; keep one."
            )
        by_target[p.target] = p
    defaults = default_priors(design)
    resolved = []
    for s in table:
        candidates = [p for p in by_target.values() if _matches(p, s)]
        if candidates:
            chosen = max(candidates, key=_specificity)
        else:
            chosen = defaults[s.class_]
        resolved.append((s, chosen))
    return ResolvedPriors(tuple(resolved))


class PriorTable(pd.DataFrame):
    """The DataFrame :func:`get_prior` returns; printing it adds the centred-intercept note."""

    _metadata = ["note"]

    @property
    def _constructor(self) -> type[PriorTable]:
        return PriorTable

    def __repr__(self) -> str:
        text = super().__repr__()
        note = getattr(self, "note", "")
        return f"{text}\n\n{note}" if note else text


def prior_table(design: Design) -> PriorTable:
    """brms's ``default_prior()`` table: class rows, then the specific ones."""
    defaults = default_priors(design)
    rows: list[dict[str, str]] = []
    classes_present = list(dict.fromkeys(s.class_ for s in slots(design)))
    for s in slots(design):
        if s.class_ in classes_present:
            if s.class_ in ("b", "sd", "cor"):
                rows.append({"prior": defaults[s.class_].dist, "class": s.class_, "coef": "",
                             "group": "", "source": "default"})
            classes_present.remove(s.class_)
        if s.class_ == "sd" and not any(r["class"] == "sd" and r["group"] == s.group for r in rows):
            rows.append({"prior": defaults["sd"].dist, "class": "sd", "coef": "", "group": s.group,
                         "source": "(vectorized)"})
        inherited = s.class_ in ("b", "sd", "cor") and (s.coef or s.group)
        rows.append({"prior": defaults[s.class_].dist, "class": s.class_, "coef": s.coef,
                     "group": s.group, "source": "(vectorized)" if inherited else "default"})
    table = PriorTable(rows, columns=["prior", "class", "coef", "group", "source"])
    table.note = CENTRED_INTERCEPT_NOTE if design.centred_intercept else ""
    return table
