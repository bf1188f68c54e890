"""Priors against a model: the settable parameters, brms's defaults, resolution, ``get_prior``'s table.

A user prior that matches no parameter is an error listing what can be set,
never silently ignored. The most specific prior wins (``b`` with a ``coef``
beats ``b``; ``sd`` with ``group`` and ``coef`` beats ``sd`` with ``group``,
which beats ``sd``). Default priors come from the family
(`lmmbayes.families.Family.default_priors`); this module only resolves
them.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ..design import Design
from ..errors import PriorError
from .prior import Prior, PriorSet, default

CENTRED_INTERCEPT_NOTE = (
    "Note: class 'Intercept' is the intercept of the model with centred predictors (brms's convention); "
    "b_Intercept is reported on the original scale. For a prior on the uncentred intercept write "
    "'y ~ 0 + Intercept + ...' and set class='b', coef='Intercept'."
)

THRESHOLDS_NOTE = (
    "Note: class 'Intercept' holds the ordered thresholds of the model with centred predictors (brms's "
    "convention), one per coef 1..K-1; b_Intercept[k] is reported on the original scale."
)


def format_bound(value: float | None) -> str:
    return "" if value is None else f"{value:.10g}"


@dataclass(frozen=True)
class Slot:
    """One settable parameter: what get_prior lists and what a prior resolves to."""

    class_: str
    coef: str = ""
    group: str = ""


def slots(design: Design) -> list[Slot]:
    """Every parameter a prior can be set on, in brms's order."""
    out = [Slot("b", c) for c in design.coef_names]
    if design.n_thresholds:
        out += [Slot("Intercept", str(k)) for k in range(1, design.n_thresholds + 1)]
    elif design.centred_intercept:
        out.append(Slot("Intercept"))
    for f in design.factors:
        out += [Slot("sd", t, f.name) for t in f.terms]
    for f in design.factors:
        if f.cor_pairs:
            out.append(Slot("cor", "", f.name))
    add = design.spec.additions
    out += [Slot(d.name) for d in design.family.dpars(add.present, add.se_sigma)]
    return out


def class_bounds(design: Design) -> dict[str, tuple[float, float]]:
    """Bounds each class imposes whatever its prior: sd at 0, distributional parameters at their support."""
    add = design.spec.additions
    out = {"sd": (0.0, float("inf"))}
    for d in design.family.dpars(add.present, add.se_sigma):
        out[d.name] = (d.lower, d.upper)
    return out


def default_priors(design: Design) -> dict[str, Prior]:
    """brms's data-scaled class-level defaults for this response and family."""
    st, add = design.stats, design.spec.additions
    texts = design.family.default_priors(st.prior_median, st.prior_mad, st.offset_mean, add.present, add.se_sigma)
    bounds = class_bounds(design)
    out = {"b": default("flat", "b"), "cor": default("lkj(1)", "cor")}
    for cls, text in texts.items():
        lo, hi = bounds.get(cls, (None, None))
        out[cls] = default(text, cls, lo if lo not in (None, float("-inf")) else None,
                           hi if hi not in (None, float("inf")) else None)
    return out


def _matches(p: Prior, s: Slot) -> bool:
    return p.class_ == s.class_ and (not p.coef or p.coef == s.coef) and (not p.group or p.group == s.group)


def applies_to(p: Prior, design: Design) -> bool:
    """Whether prior ``p`` targets some parameter of ``design``."""
    return any(_matches(p, s) for s in slots(design))


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
        rows = [{"prior": p.dist, "class": s.class_, "coef": s.coef, "group": s.group, "lb": format_bound(p.lb),
                 "ub": format_bound(p.ub), "source": p.source} for s, p in self.table]
        return pd.DataFrame(rows, columns=["prior", "class", "coef", "group", "lb", "ub", "source"])

    def flat(self) -> list[Slot]:
        """Slots whose prior is flat (improper)."""
        return [s for s, p in self.table if p.is_flat]


def _settable_listing(design: Design) -> str:
    table = prior_table(design)
    rows = ["  " + ", ".join(f"{k}={r[k]!r}" for k in ("class", "coef", "group") if r[k] or k == "class")
            for _, r in table.iterrows()]
    return "Parameters that can be set (as get_prior() lists them):\n" + "\n".join(rows)


def resolve_priors(design: Design, priors: PriorSet) -> ResolvedPriors:
    """Combine user priors with the defaults, checking every user prior is used.

    Raises
    ------
    PriorError
        If a prior matches no parameter, or the same target gets two different priors.
    """
    table = slots(design)
    bounds = class_bounds(design)
    by_target: dict[tuple[str, str, str], Prior] = {}
    for p in priors:
        if not any(_matches(p, s) for s in table):
            hint = ""
            if p.class_ == "cor" and p.group and any(f.name == p.group for f in design.factors):
                hint = (f" Grouping factor '{p.group}' has no correlated terms: a correlation needs at least two "
                        "terms in one (a + b | g) block.")
            elif p.class_ not in {s.class_ for s in table} and p.class_ not in ("b", "sd", "cor", "Intercept"):
                hint = f" Family {design.family.name!r} has no parameter {p.class_!r}."
            raise PriorError(f"{p.describe()} matches no parameter of this model.{hint}\n" + _settable_listing(design))
        old = by_target.get(p.target)
        if old is not None and not old.same_distribution(p):
            raise PriorError(f"Two different priors target the same parameters: {old.describe()} and "
                             f"{p.describe()}; keep one.")
        lo, hi = bounds.get(p.class_, (float("-inf"), float("inf")))
        p_lo, p_hi = p.bounds()
        if max(lo, p_lo) >= min(hi, p_hi):
            raise PriorError(f"{p.describe()} leaves no mass where {p.class_} lives ([{lo:g}, {hi:g}]).")
        by_target[p.target] = p
    defaults = default_priors(design)
    resolved = []
    for s in table:
        candidates = [p for p in by_target.values() if _matches(p, s)]
        chosen = max(candidates, key=_specificity) if candidates else defaults[s.class_]
        resolved.append((s, chosen))
    return ResolvedPriors(tuple(resolved))


class PriorTable(pd.DataFrame):
    """The DataFrame `get_prior` returns; printing it adds the centred-intercept note."""

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
        vector = s.class_ in ("b", "sd", "cor") or (s.class_ == "Intercept" and bool(s.coef))  # thresholds
        if s.class_ in classes_present:
            if vector:
                rows.append({"prior": defaults[s.class_].dist, "class": s.class_, "coef": "", "group": "",
                             "source": "default"})
            classes_present.remove(s.class_)
        if s.class_ == "sd" and not any(r["class"] == "sd" and r["group"] == s.group for r in rows):
            rows.append({"prior": defaults["sd"].dist, "class": "sd", "coef": "", "group": s.group,
                         "source": "(vectorized)"})
        inherited = vector and bool(s.coef or s.group)
        rows.append({"prior": defaults[s.class_].dist, "class": s.class_, "coef": s.coef, "group": s.group,
                     "source": "(vectorized)" if inherited else "default"})
    table = PriorTable(rows, columns=["prior", "class", "coef", "group", "source"])
    table.note = (THRESHOLDS_NOTE if design.n_thresholds else
                  CENTRED_INTERCEPT_NOTE if design.centred_intercept else "")
    return table
