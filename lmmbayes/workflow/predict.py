"""Predictions, as brms's ``posterior_linpred``, ``posterior_epred``, ``posterior_predict``, ``fitted`` and ``predict``.

Draw arrays use brms's layout: one row per posterior draw (chains one after
the other), one column per data row. New data are encoded by the design's
one row encoder (stateful transforms such as ``scale(x)`` or ``poly(x, 2)``
reuse the training state; categorical and grouping levels are matched by
value). Levels of grouping factors never seen in training need
``allow_new_levels=True``; their effects are then simulated per draw.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .. import _validate as check
from ..design import Rows
from ..design.encoder import FactorCoding, FactorRows
from ..design.frame import as_frame, check_finite, complete_rows
from ..design.levels import level_label
from ..errors import DataError, LmmbayesError
from ..results.model import FitResult
from .linpred import SAMPLE_NEW_LEVELS, Params, linear_predictor, params

#: Addition terms a prediction needs from new data (weights only weigh the likelihood).
PREDICTION_ADDITIONS = ("trials", "se")


def groups(fit: FitResult, include_groups: Any) -> tuple[FactorCoding, ...]:
    """The factors ``include_groups`` selects (True or None: all, False: none, or names)."""
    design = fit.design
    if include_groups is True or include_groups is None:  # None as brms's re_formula = NULL
        return design.factors
    if include_groups is False:
        return ()
    names = [include_groups] if isinstance(include_groups, str) else include_groups
    if not isinstance(names, Sequence) or not all(isinstance(n, str) for n in names):
        raise LmmbayesError("include_groups must be True (all group-level terms), False (population-level only) "
                            f"or a list of grouping factor names, got {include_groups!r}.")
    known = [f.name for f in design.factors]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise LmmbayesError(f"include_groups names unknown grouping factor(s) {unknown}; this model's grouping "
                            f"factors are {known}.")
    return tuple(f for f in design.factors if f.name in set(names))


def draw_indices(total: int, draws: Any) -> np.ndarray:
    """Flat (chain-major) indices of the draws to use.

    ``None`` keeps every draw; an integer ``k`` keeps ``k`` draws evenly spaced
    over all chains (deterministic, so repeated calls agree); a sequence of
    integers picks those flat draw indices.
    """
    if draws is None:
        return np.arange(total)
    if check.is_integer(draws):
        if not 1 <= draws <= total:
            raise LmmbayesError(f"draws must be between 1 and the {total} posterior draws, got {draws}.")
        return np.arange(int(draws), dtype=np.int64) * total // int(draws)
    try:
        idx = np.asarray(draws)
    except Exception:
        idx = np.asarray([])
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0 \
            or idx.max() >= total:
        raise LmmbayesError(f"draws must be None, a number of draws (1 to {total}) or a sequence of flat draw "
                            f"indices in [0, {total}), got {draws!r}.")
    return idx.astype(np.int64)


def _roles(fit: FitResult, chosen: tuple[FactorCoding, ...]) -> list[tuple[str, str]]:
    """(column, role) pairs new data must provide."""
    spec = fit.design.spec
    from ..spec.expr import columns

    out: list[tuple[str, str]] = []
    for t in spec.fixed:
        out += [(c, "population-level") for c in t.columns]
    for e in spec.offsets:
        out += [(c, "offset") for c in columns(e)]
    names = {f.name for f in chosen}
    for g in spec.groups:
        if g.factor in names:
            out += [(c, f"group-level ({g.source})") for c in g.lhs_columns]
            out += [(c, f"grouping factor '{g.factor}'") for c in g.factor_vars]
    for name, e in spec.additions.expressions():
        if name in PREDICTION_ADDITIONS:
            out += [(c, f"{name}()") for c in columns(e)]
    seen: set[str] = set()
    return [(c, r) for c, r in out if not (c in seen or seen.add(c))]  # type: ignore[func-returns-value]


def new_rows(fit: FitResult, newdata: Any, chosen: tuple[FactorCoding, ...]) -> Rows:
    """Encode ``newdata`` as the training rows were; never modifies the user's frame.

    Raises
    ------
    DataError
        newdata is not a data frame, has no rows, lacks a column the model
        needs, has missing or infinite values there, or a categorical level
        the model never saw.
    """
    df = as_frame(newdata, "newdata")
    if len(df) == 0:
        raise DataError("newdata has no rows.")
    needed = _roles(fit, chosen)
    missing = [(c, r) for c, r in needed if c not in df.columns]
    if missing:
        roles = ", ".join(f"'{c}': {r}" for c, r in missing)
        hint = " (or leave the group-level terms out with include_groups=False)" \
            if any(r.startswith(("group", "grouping")) for _, r in missing) else ""
        raise DataError(f"newdata lacks the column(s) {[c for c, _ in missing]} that the model needs ({roles}); "
                        f"add them{hint}.")
    frame, _ = complete_rows(df, tuple(c for c, _ in needed), what="newdata", drop=False)
    check_finite(frame, "newdata")
    present = tuple(a for a in PREDICTION_ADDITIONS if a in fit.design.spec.additions.present)
    rows = fit.design.encoder.encode(frame, response=False, groups=tuple(f.name for f in chosen), what="newdata",
                                     additions=present)
    for f, fr in zip(chosen, rows.factors):
        _check_new_labels(f, fr, frame)
    return rows


def _check_new_labels(f: FactorCoding, fr: FactorRows, frame: pd.DataFrame) -> None:
    """DataError where new levels' brms labels are ambiguous.

    New levels are told apart by their labels (rows sharing one share its
    simulated effects), and brms matches levels by label. So a new level
    combination labelled like a training level (``('N_p', '1')`` and the
    training level ``('N', 'p_1')``, both ``N_p_1``), or two different new
    combinations with one label, would silently be the wrong level.
    """
    new = fr.index < 0
    if fr.labels is None or not new.any():
        return
    labels = fr.labels[new]
    clash = sorted(set(map(str, labels)) & set(f.levels))
    if clash:
        raise DataError(f"newdata: grouping factor '{f.name}' has a new level combination labelled {clash[0]!r}, "
                        f"the label of a different level of the training data (brms joins the values of "
                        f"{list(f.variables)} with '_'); rename the values so that the labels are unique, e.g. "
                        "without '_'.")
    if len(f.variables) < 2:
        return
    parts = pd.DataFrame({v: [level_label(x) for x in frame[v].to_numpy()[new]] for v in f.variables})
    parts["label"] = labels
    combos = parts.drop_duplicates(ignore_index=True)
    twice = combos["label"].duplicated(keep=False)
    if twice.any():
        label = combos.loc[twice, "label"].iloc[0]
        shown = [tuple(r) for r in combos.loc[combos["label"] == label, list(f.variables)].itertuples(index=False)]
        raise DataError(f"newdata: grouping factor '{f.name}': the new level combinations {shown[0]} and "
                        f"{shown[1]} would both be labelled {label!r} (brms joins the values of "
                        f"{list(f.variables)} with '_'); rename the values so that the labels are unique, e.g. "
                        "without '_'.")


def prediction_rows(fit: FitResult, newdata: Any, include_groups: Any,
                    allow_new_levels: bool) -> tuple[Rows, tuple[FactorCoding, ...]]:
    """The rows to predict (the fitted rows when ``newdata`` is None) and the factors they include."""
    chosen = groups(fit, include_groups)
    if newdata is None:
        rows = fit.design.require_rows("Predicting the fitted rows (newdata=None)",
                                       "Pass newdata= a pandas DataFrame with the predictor and grouping columns.")
        keep = [k for k, f in enumerate(fit.design.factors) if f in chosen]
        rows = Rows(rows.X, rows.offset, tuple(rows.factors[k] for k in keep), rows.y, rows.extra, rows.weights,
                    pd.RangeIndex(rows.n))
        return rows, chosen
    rows = new_rows(fit, newdata, chosen)
    unseen = [(f, fr) for f, fr in zip(chosen, rows.factors) if (fr.index < 0).any()]
    if unseen and not check.flag(allow_new_levels, "allow_new_levels"):
        what = "; ".join(
            f"factor '{f.name}': {_preview(sorted(set(map(str, _labels(fr)[fr.index < 0]))))} (known levels: "
            f"{_preview(list(f.levels))})" for f, fr in unseen)
        raise DataError(f"newdata has grouping levels the model was not fitted on: {what}. Pass "
                        "allow_new_levels=True to simulate their effects from the fitted group-level "
                        "distribution, or include_groups=False for population-level predictions.")
    return rows, chosen


def _labels(fr: Any) -> np.ndarray:
    assert fr.labels is not None  # the encoder records labels wherever a level is new
    return np.asarray(fr.labels)


def _preview(levels: Sequence[str], limit: int = 10) -> str:
    shown = list(levels[:limit])
    return f"{shown}{' ...' if len(levels) > limit else ''}"


def _check_sample_new_levels(sample_new_levels: Any) -> None:
    if sample_new_levels not in SAMPLE_NEW_LEVELS:
        raise LmmbayesError(f"Unknown sample_new_levels {sample_new_levels!r}; choose one of "
                            f"{list(SAMPLE_NEW_LEVELS)}.")


def _linpred(fit: FitResult, newdata: Any, include_groups: Any, allow_new_levels: bool, sample_new_levels: str,
             draws: Any, seed: Any) -> tuple[np.ndarray, Params, Rows, np.random.Generator]:
    _check_sample_new_levels(sample_new_levels)
    rng = check.rng(seed)
    idx = draw_indices(fit.n_draws, draws)
    rows, chosen = prediction_rows(fit, newdata, include_groups, allow_new_levels)
    p = params(fit.posterior, fit.design, idx)
    eta = linear_predictor(p, rows, chosen, centred=fit.design.intercept_in_eta,
                           sample_new_levels=sample_new_levels, rng=rng)
    return eta, p, rows, rng


# -- public ---------------------------------------------------------------------------------


def posterior_linpred(fit: FitResult, newdata: Any = None, *, transform: bool = False,
                      include_groups: bool | str | Sequence[str] = True, allow_new_levels: bool = False,
                      sample_new_levels: str = "uncertainty", draws: int | Sequence[int] | None = None,
                      seed: int | None = None) -> np.ndarray:
    """Draws of the linear predictor (brms's ``posterior_linpred``), (draws, rows).

    ``transform=True`` applies the inverse link (the mean of the response for
    most families, before trials are multiplied in for binomial). For an
    ordinal family the linear predictor excludes the thresholds, and
    ``transform=True`` gives the category probabilities (draws, rows, K).
    Other parameters as `posterior_epred`.
    """
    eta, p, rows, _ = _linpred(fit, newdata, include_groups, allow_new_levels, sample_new_levels, draws, seed)
    if not check.flag(transform, "transform"):
        return eta
    if fit.family.ordinal:  # the inverse link needs the thresholds: the category probabilities, as brms
        return fit.family.mean(eta, {k: v[:, None] for k, v in p.dpars.items()}, rows.extra)
    return fit.family.link_function.inverse(eta)


def posterior_epred(fit: FitResult, newdata: Any = None, *, include_groups: bool | str | Sequence[str] = True,
                    allow_new_levels: bool = False, sample_new_levels: str = "uncertainty",
                    draws: int | Sequence[int] | None = None, seed: int | None = None) -> np.ndarray:
    """Draws of the expected response (brms's ``posterior_epred``).

    Parameters
    ----------
    fit : Fit
    newdata : pandas.DataFrame or polars.DataFrame, optional
        Rows to predict; needs every predictor column (not the response). By
        default the data the model was fitted on (after dropping rows with
        missing values). Never modified.
    include_groups : bool, str or list of str
        ``True`` (or None): all group-level terms (brms ``re_formula = NULL``);
        ``False``: population-level only (``re_formula = NA``); names of
        grouping factors (``"county"``, ``["a", "a:b"]``): only those.
    allow_new_levels : bool
        Allow grouping levels absent from the training data; otherwise they
        are a DataError naming them.
    sample_new_levels : {"uncertainty", "gaussian"}
        How new levels get effects, as in brms. ``"uncertainty"`` (default):
        in each draw a new level takes the effects of a training level chosen
        at random, a different one per draw. ``"gaussian"``: in each draw,
        effects drawn from the fitted normal distribution. Rows sharing a new
        label share its effects within a draw.
    draws : int or sequence of int, optional
        ``k``: ``k`` draws evenly spaced over all chains; a sequence: those
        flat draw indices (chain-major); None: all draws.
    seed : int, optional
        Seeds the simulation of new levels.

    Returns
    -------
    numpy.ndarray
        (draws, rows): one row per posterior draw, chains one after the other.
        For an ordinal family (``cumulative``), (draws, rows, K): the
        probability of each category, as brms.

    Raises
    ------
    DataError
        Bad newdata or unseen grouping levels without ``allow_new_levels``.
    """
    eta, p, rows, _ = _linpred(fit, newdata, include_groups, allow_new_levels, sample_new_levels, draws, seed)
    return fit.family.mean(eta, {k: v[:, None] for k, v in p.dpars.items()}, rows.extra)


def epred_chunks(fit: FitResult, newdata: Any, rows_per_chunk: int, *,
                 include_groups: bool | str | Sequence[str] = True, allow_new_levels: bool = False,
                 sample_new_levels: str = "uncertainty", seed: int | None = None
                 ) -> Iterator[tuple[slice, np.ndarray]]:
    """`posterior_epred` of ``newdata`` in blocks of at most ``rows_per_chunk`` rows: (columns, (draws, block)).

    The rows are encoded once, so new grouping levels are numbered over all
    of them, and each block's simulation is seeded afresh with ``seed``: with
    an integer seed every block equals the same columns of
    ``posterior_epred(fit, newdata, seed=seed, ...)`` exactly, and rows of
    one new level share its simulated effects across blocks (``seed=None``
    draws one seed for all the blocks).
    """
    _check_sample_new_levels(sample_new_levels)
    seed = check.seed(seed)  # None: a fresh one, the same for every block
    rows, chosen = prediction_rows(fit, newdata, include_groups, allow_new_levels)
    p = params(fit.posterior, fit.design)
    dpars = {k: v[:, None] for k, v in p.dpars.items()}
    for start in range(0, rows.n, rows_per_chunk):
        part = slice(start, min(start + rows_per_chunk, rows.n))
        eta = linear_predictor(p, rows, chosen, centred=fit.design.intercept_in_eta,
                               sample_new_levels=sample_new_levels, rng=check.rng(seed), rows_slice=part)
        yield part, fit.family.mean(eta, dpars, rows.extra.take(part))


def posterior_predict(fit: FitResult, newdata: Any = None, *, include_groups: bool | str | Sequence[str] = True,
                      allow_new_levels: bool = False, sample_new_levels: str = "uncertainty",
                      draws: int | Sequence[int] | None = None, seed: int | None = None) -> np.ndarray:
    """Draws of new observations from the family given each posterior draw (brms's ``posterior_predict``).

    Same parameters and layout as `posterior_epred`; ``seed`` also seeds
    the noise. Discrete families give integers; an ordinal family gives the
    category numbers 1..K, as brms (their labels: ``fit.categories``).
    """
    eta, p, rows, rng = _linpred(fit, newdata, include_groups, allow_new_levels, sample_new_levels, draws, seed)
    return fit.family.random(rng, eta, {k: v[:, None] for k, v in p.dpars.items()}, rows.extra)


def summarise_draws(draws: np.ndarray, index: pd.Index, probs: tuple[float, ...] = (0.025, 0.975)) -> pd.DataFrame:
    """Per column of (draws, rows): Estimate (mean), Est.Error (SD) and quantiles, brms's layout."""
    from .summary import describe

    table = describe([str(k) for k in range(draws.shape[1])], draws[None, :, :], probs)
    table.index = index
    return table


_TABLE_OPTIONS = ("include_groups", "allow_new_levels", "sample_new_levels", "draws", "seed")


def fitted(fit: FitResult, newdata: Any = None, *, probs: tuple[float, ...] = (0.025, 0.975),
           **kwargs: Any) -> pd.DataFrame:
    """brms's ``fitted``: per-row summary of `posterior_epred`.

    Parameters
    ----------
    fit, newdata
        As `posterior_epred`.
    probs : tuple of float
        Quantiles to report (brms's ``Q2.5`` and ``Q97.5`` by default).
    **kwargs
        ``include_groups``, ``allow_new_levels``, ``sample_new_levels``,
        ``draws``, ``seed`` as for `posterior_epred`.

    Returns
    -------
    pandas.DataFrame
        One row per data row (newdata's index, or 0..N-1 for the fitted data);
        columns ``Estimate`` (mean), ``Est.Error`` (SD), ``Q2.5``, ``Q97.5``.
        For an ordinal family the columns are two-level, (statistic,
        ``"P(Y = k)"``): ``table["Estimate"]`` holds each category's mean
        probability, as brms's (rows, statistic, category) array.
    """
    check.keywords(kwargs, _TABLE_OPTIONS, "fitted", error=TypeError)  # type: ignore[arg-type]  # as Python does
    index = _index(fit, newdata)
    epred = posterior_epred(fit, newdata, **kwargs)
    if epred.ndim == 2:
        return summarise_draws(epred, index, probs)
    # ordinal: one block of statistics per category, as brms's (rows, statistic, category) array
    blocks = [summarise_draws(epred[:, :, k], index, probs) for k in range(epred.shape[2])]
    columns = pd.MultiIndex.from_product([list(blocks[0].columns), [_category(k) for k in range(len(blocks))]])
    return pd.DataFrame(np.stack([b.to_numpy() for b in blocks], axis=-1).reshape(len(index), -1), index=index,
                        columns=columns)


def predict(fit: FitResult, newdata: Any = None, *, probs: tuple[float, ...] = (0.025, 0.975),
            **kwargs: Any) -> pd.DataFrame:
    """brms's ``predict``: per-row summary of `posterior_predict` (same layout as `fitted`).

    For an ordinal family, as brms: one column ``"P(Y = k)"`` per category,
    the share of predictive draws in it.
    """
    check.keywords(kwargs, _TABLE_OPTIONS, "predict", error=TypeError)  # type: ignore[arg-type]
    index = _index(fit, newdata)
    draws = posterior_predict(fit, newdata, **kwargs)
    if not fit.family.ordinal:
        return summarise_draws(draws, index, probs)
    # ordinal: the share of draws in each category, brms's P(Y = k) columns
    K = fit.design.n_thresholds + 1
    shares = {_category(k): (draws == k + 1).mean(axis=0) for k in range(K)}
    return pd.DataFrame(shares, index=index)


def _category(k: int) -> str:
    """brms's label of category ``k`` (0-based) in ordinal tables."""
    return f"P(Y = {k + 1})"


def _index(fit: FitResult, newdata: Any) -> pd.Index:
    if newdata is None:
        return pd.RangeIndex(fit.design.n_obs)
    return as_frame(newdata, "newdata").index
