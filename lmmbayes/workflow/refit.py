"""Refitting a model: brms's ``update``, and what `kfold` shares with it.

A refit reuses everything the fit knows: its formula (or brms's ``. ~ . + x``
shorthand of it), family, the priors the user set, the engine and the
sampler settings, and the data it was fitted to where the fit can rebuild
them. Nothing is compiled again where nothing needs it: collapsed fits
through the C kernel never compile, and the others hit PyTensor's and numba's
caches for a model structure they have compiled before.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..design.frame import as_frame, complete_rows
from ..errors import DataError, DataWarning, FitError, warn
from ..priors import Prior, as_prior_set
from ..priors.resolve import applies_to
from ..results.model import FitResult
from ..engines.sampling import DEFAULT_TARGET_ACCEPT
from ..spec import parse_formula
from ..spec.parse import update_formula


def fitted_data(fit: FitResult, data: Any, what: str) -> pd.DataFrame:
    """The complete rows ``fit`` was fitted to, with every column its formula reads.

    ``data`` (the frame passed to `lmmbayes.fit`) is checked against the fit;
    without it the rows are rebuilt from the fit's predictors and response,
    where that gives back what the formula reads.
    """
    spec = fit.design.spec
    if data is not None:
        frame, _ = complete_rows(as_frame(data), spec.variables())
        if len(frame) != fit.nobs:
            raise DataError(f"{what}: data has {len(frame)} complete rows for this formula, but the model was fitted "
                            f"to {fit.nobs}; pass the data the model was fitted to.")
        return frame.reset_index(drop=True)
    raw = fit.design.predictor_rows
    name = spec.response_name
    if raw is None or name not in spec.variables() or "weights" in spec.additions.present or fit.family.factor_like:
        raise FitError(f"{what} needs the data the model was fitted to for this fit (the fit keeps its predictors "
                       "but not, in the form the formula reads, its response or weights): pass the data.")
    return raw.assign(**{name: fit.design.y}).reset_index(drop=True)


def user_priors(fit: FitResult) -> list[Prior]:
    """The priors the user set (the defaults are recomputed from whatever data a refit gets)."""
    return list({id(p): p for _, p in fit.priors.table if p.source == "user"}.values())


#: Sampling settings `update` passes on; the others keep the fit's.
SAMPLING = ("chains", "draws", "tune", "seed", "target_accept", "progress", "method", "sampler", "sample_prior",
            "family")


def update(fit: FitResult, newdata: Any = None, formula: str | None = None, priors: Any = None,
           **sampling: Any) -> FitResult:
    """brms's ``update``: the model refitted with what changed.

    Parameters
    ----------
    fit : Fit
    newdata : pandas.DataFrame, optional
        New data; by default the data the model was fitted to (rebuilt from
        the fit where it can be; otherwise pass it here).
    formula : str, optional
        A new formula, or brms's shorthand on the old one: ``". ~ . + x"``
        adds a term, ``". ~ . - x"`` removes one, ``"log(y) ~ ."`` changes the
        response (`lmmbayes.spec.parse.update_formula`).
    priors : Prior, list or sum of priors, optional
        Replace the priors the user set; by default they are kept (and the
        defaults recomputed from the data).
    **sampling
        ``chains``, ``draws``, ``tune``, ``seed``, ``target_accept``,
        ``progress``, ``method``, ``sampler``, ``sample_prior``, ``family``:
        the fit's own unless given.

    Returns
    -------
    FitResult
        The new fit (the caller wraps it as a `lmmbayes.Fit`).

    Raises
    ------
    FormulaError, FitError, DataError
        A bad formula or option, or data that cannot be rebuilt.
    """
    from .. import pipeline

    unknown = sorted(set(sampling) - set(SAMPLING))
    if unknown:
        raise FitError(f"update() got unknown option(s) {unknown}; it takes newdata, formula, priors and "
                       f"{list(SAMPLING)}.")
    new_formula = fit.formula if formula is None else update_formula(fit.formula, formula)
    if newdata is None:
        data = fitted_data(fit, None, "update()")
        missing = [v for v in parse_formula(new_formula).variables() if v not in data.columns]
        if missing:
            raise FitError(f"update(): the formula {new_formula!r} reads {missing}, which the fit does not keep; "
                           "pass newdata= with those columns.")
    else:
        data = newdata
    c = fit.config
    same_model = formula is None and newdata is None and "family" not in sampling
    # a target_accept that is not the engine's default was the user's: keep it
    default = DEFAULT_TARGET_ACCEPT.get(fit.engine)
    opts = {"family": fit.family, "chains": c.chains, "draws": c.draws, "tune": c.tune, "seed": c.seed,
            "target_accept": None if c.target_accept == default else c.target_accept, "progress": c.progress,
            "method": fit.engine if same_model and not fit.prior_only else "auto", "sampler": c.sampler,
            "sample_prior": "only" if fit.prior_only else "yes" if "prior" in fit.idata.children else "no",
            **sampling}
    options = pipeline.options(**opts)
    if priors is None:
        chosen = user_priors(fit)
        if new_formula != fit.formula:  # a prior on a term the new formula dropped has nothing to apply to
            design = pipeline.design_of(new_formula, data, options.family, options.method)
            dropped = [p.describe() for p in chosen if not applies_to(p, design)]
            chosen = [p for p in chosen if applies_to(p, design)]
            if dropped:
                warn(f"update(): the new formula has no parameter for {', '.join(dropped)}; dropped.", DataWarning)
    else:
        chosen = list(as_prior_set(priors))
    # new data carry their own name (or none): the old name would mislabel the summary
    name = fit.data_name if newdata is None else pipeline.data_name_of(newdata)
    return pipeline.run(new_formula, data, chosen, options, data_name=name)
