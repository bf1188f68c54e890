"""Predictions from a Fit: brms's posterior_epred, posterior_predict, fitted, predict.

Draw arrays have brms's layout, (draws, rows). New data are evaluated with
the formulae objects stored in the design, so categorical coding and
stateful transforms such as ``scale(x)`` use the training data's values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .design import Design, Factor, as_pandas
from .errors import DataError, LmmbayesError
from .summary import describe

NEW_LEVELS = ("uncertainty", "gaussian")


@dataclass(frozen=True)
class _Rows:
    """The rows to predict: population columns (brms order) and per-factor inputs."""

    X: np.ndarray
    index: dict[str, np.ndarray]  # level per row; -1 - k marks the k-th new level
    Z: dict[str, np.ndarray]
    new_levels: dict[str, list[str]]
    labels: pd.Index


def _training_rows(design: Design) -> _Rows:
    ones = np.ones((design.n_obs, 1))
    X = np.hstack([ones, design.X]) if design.centred_intercept else design.X
    return _Rows(X, {f.name: f.index for f in design.factors}, {f.name: f.Z for f in design.factors},
                 {f.name: [] for f in design.factors}, pd.RangeIndex(design.n_obs))


def _evaluate(matrix: Any, frame: pd.DataFrame, what: str) -> np.ndarray:
    try:
        return np.asarray(np.asarray(matrix.evaluate_new_data(frame)), dtype=float)
    except ValueError as exc:
        # formulae: "The levels (q) in 'c' are not present in the original data set."
        raise DataError(f"newdata cannot be used for {what}: {exc} Use only levels seen in training.") from None
    except KeyError as exc:
        raise DataError(f"newdata lacks the column {exc.args[0]!r} needed for {what}.") from None


def _factor_rows(f: Factor, frame: pd.DataFrame, allow_new_levels: bool) -> tuple[np.ndarray, list[str]]:
    labels = frame[list(f.variables)].astype(str).agg("_".join, axis=1).to_numpy()
    known = {level: k for k, level in enumerate(f.levels)}
    unseen = sorted({lab for lab in labels if lab not in known})
    if unseen and not allow_new_levels:
        raise DataError(
            f"newdata has levels of '{f.name}' not seen in training: {unseen[:10]}"
            f"{' ...' if len(unseen) > 10 else ''}. Pass allow_new_levels=True to draw their effects "
            f"from the fitted population distribution (known levels: {list(f.levels[:10])}"
            f"{' ...' if f.n_levels > 10 else ''})."
        )
    new_code = {lab: -1 - k for k, lab in enumerate(unseen)}
    index = np.array([known.get(lab, new_code.get(lab, 0)) for lab in labels], dtype=np.int64)
    return index, unseen


def _predictor_columns(design: Design, groups: list[str]) -> list[str]:
    """Columns a prediction needs: population predictors and the included group terms."""
    import formulae as fm

    spec = design.spec
    names = sorted(fm.model_description(f"{spec.response} ~ {spec.fixed}").var_names
                   - fm.model_description(f"{spec.response} ~ 1").var_names)
    for g in spec.groups:
        if g.factor in groups:
            names += sorted(fm.model_description(g.lhs).var_names) + list(g.factor_vars)
    return list(dict.fromkeys(n for n in names if n))


def _new_rows(design: Design, newdata: Any, groups: list[str], allow_new_levels: bool) -> _Rows:
    frame = as_pandas(newdata)
    needed = _predictor_columns(design, groups)
    missing = [v for v in needed if v not in frame.columns]
    if missing:
        raise DataError(f"newdata lacks the column(s) {missing} that the model uses; it has {list(frame.columns)}.")
    bad = [v for v in needed if frame[v].isna().any()]
    if bad:
        raise DataError(f"newdata has missing values in {bad}; fill or drop those rows before predicting.")
    frame = frame.loc[:, needed].reset_index(drop=True)
    X = _evaluate(design.fixed_matrix, frame, "the population-level terms")
    index, Z, new = {}, {}, {}
    for f in design.factors:
        if f.name not in groups:
            continue
        index[f.name], new[f.name] = _factor_rows(f, frame, allow_new_levels)
        Z[f.name] = np.hstack([_evaluate(m, frame, f"the group-level terms of '{f.name}'")
                               for m in f.term_matrices])
    return _Rows(X, index, Z, new, pd.Index(as_pandas(newdata).index))


def _groups(design: Design, include_groups: Any) -> list[str]:
    names = [f.name for f in design.factors]
    if include_groups is True or include_groups is None:
        return names
    if include_groups is False:
        return []
    chosen = [include_groups] if isinstance(include_groups, str) else list(include_groups)
    unknown = [g for g in chosen if g not in names]
    if unknown:
        raise LmmbayesError(f"include_groups names unknown grouping factors {unknown}; the model has {names}.")
    return chosen


def _draw_subset(n_total: int, draws: Any, rng: np.random.Generator) -> np.ndarray:
    if draws is None:
        return np.arange(n_total)
    if isinstance(draws, bool) or not isinstance(draws, (int, np.integer)) or not 1 <= draws <= n_total:
        raise LmmbayesError(f"draws must be an integer between 1 and {n_total}, got {draws!r}.")
    return np.sort(rng.choice(n_total, size=int(draws), replace=False))


def _new_level_effects(fit: Any, f: Factor, picks: np.ndarray, n_new: int, how: str,
                       rng: np.random.Generator) -> np.ndarray:
    """(S, n_new, q) effects for unseen levels, one independent set per draw."""
    post = fit.posterior
    if how == "uncertainty":  # brms: the effects of a randomly chosen existing level, per draw
        r = post[f"r_{f.name}"].values.reshape((-1, f.n_levels, len(f.terms)))[picks]
        chosen = rng.integers(0, f.n_levels, size=(len(picks), n_new))
        return np.take_along_axis(r, chosen[..., None], axis=1)
    sd = post[f"sd_{f.name}"].values.reshape((-1, len(f.terms)))[picks]
    R = np.broadcast_to(np.eye(len(f.terms)), (len(picks), len(f.terms), len(f.terms))).copy()
    if f.cor_pairs:
        cor = post[f"cor_{f.name}"].values.reshape((-1, len(f.cor_pairs)))[picks]
        for k, (i, j) in enumerate(f.cor_pairs):
            R[:, i, j] = R[:, j, i] = cor[:, k]
    L = sd[:, :, None] * np.linalg.cholesky(R)
    z = rng.standard_normal((len(picks), n_new, len(f.terms)))
    return np.einsum("sij,snj->sni", L, z)


def _linear_predictor(fit: Any, newdata: Any, include_groups: Any, allow_new_levels: bool,
                      sample_new_levels: str, draws: Any, seed: Any) -> tuple[np.ndarray, np.ndarray, pd.Index]:
    if sample_new_levels not in NEW_LEVELS:
        raise LmmbayesError(f"sample_new_levels must be one of {list(NEW_LEVELS)}, got {sample_new_levels!r}.")
    design = fit.design
    groups = _groups(design, include_groups)
    rows = _training_rows(design) if newdata is None else _new_rows(design, newdata, groups, allow_new_levels)
    rng = np.random.default_rng(seed)
    post = fit.posterior
    b = post["b"].values.reshape((-1, len(design.b_names)))
    picks = _draw_subset(b.shape[0], draws, rng)
    eta = b[picks] @ rows.X.T
    for f in design.factors:
        if f.name not in groups:
            continue
        r = post[f"r_{f.name}"].values.reshape((-1, f.n_levels, len(f.terms)))[picks]
        index = rows.index[f.name]
        known = index >= 0
        effects = np.zeros((len(picks), len(index), len(f.terms)))
        effects[:, known] = r[:, index[known]]
        if (~known).any():
            new = _new_level_effects(fit, f, picks, len(rows.new_levels[f.name]), sample_new_levels, rng)
            effects[:, ~known] = new[:, -1 - index[~known]]
        eta += (effects * rows.Z[f.name][None]).sum(axis=-1)
    sigma = post["sigma"].values.reshape(-1)[picks]
    return eta, sigma, rows.labels


def posterior_epred(fit: Any, newdata: Any = None, *, include_groups: Any = True, allow_new_levels: bool = False,
                    sample_new_levels: str = "uncertainty", draws: int | None = None,
                    seed: int | None = None) -> np.ndarray:
    """Draws of the expected response (the linear predictor), shape (draws, rows).

    Parameters
    ----------
    fit : Fit
    newdata : DataFrame, optional
        Rows to predict; the fitted data when None. Needs every predictor
        column; the response may be absent. Never modified.
    include_groups : bool or list of str
        True: all group-level effects; False: population level only (brms's
        ``re_formula = NA``); a list: only those grouping factors.
    allow_new_levels : bool
        Unseen grouping levels are an error unless True.
    sample_new_levels : {"uncertainty", "gaussian"}
        For unseen levels: "uncertainty" (brms's default) uses, per draw, the
        effects of a randomly chosen existing level; "gaussian" draws them
        from the fitted multivariate normal (sd and correlations of that draw).
    draws : int, optional
        Use a random subset of this many posterior draws (reproducible with ``seed``).
    seed : int, optional
    """
    return _linear_predictor(fit, newdata, include_groups, allow_new_levels, sample_new_levels, draws, seed)[0]


def posterior_predict(fit: Any, newdata: Any = None, *, include_groups: Any = True,
                      allow_new_levels: bool = False, sample_new_levels: str = "uncertainty",
                      draws: int | None = None, seed: int | None = None) -> np.ndarray:
    """Draws of new observations (expected response plus Gaussian noise), shape (draws, rows).

    Same arguments as :func:`posterior_epred`.
    """
    eta, sigma, _ = _linear_predictor(fit, newdata, include_groups, allow_new_levels, sample_new_levels,
                                      draws, seed)
    rng = np.random.default_rng(None if seed is None else [seed, 1])
    return eta + sigma[:, None] * rng.standard_normal(eta.shape)


def _table(draws: np.ndarray, index: pd.Index, probs: tuple[float, ...]) -> pd.DataFrame:
    table = describe([""] * draws.shape[1], draws[None], probs)
    table.index = index
    return table


def fitted(fit: Any, newdata: Any = None, *, probs: tuple[float, ...] = (0.025, 0.975), **kwargs: Any) -> pd.DataFrame:
    """Per-row summary of :func:`posterior_epred`: Estimate, Est.Error, Q2.5, Q97.5."""
    eta, _, labels = _linear_predictor(fit, newdata, kwargs.pop("include_groups", True),
                                       kwargs.pop("allow_new_levels", False),
                                       kwargs.pop("sample_new_levels", "uncertainty"),
                                       kwargs.pop("draws", None), kwargs.pop("seed", None))
    _no_extra(kwargs)
    return _table(eta, labels, probs)


def predict(fit: Any, newdata: Any = None, *, probs: tuple[float, ...] = (0.025, 0.975), **kwargs: Any) -> pd.DataFrame:
    """Per-row summary of :func:`posterior_predict`: Estimate, Est.Error, Q2.5, Q97.5."""
    labels = _training_rows(fit.design).labels if newdata is None else pd.Index(as_pandas(newdata).index)
    return _table(posterior_predict(fit, newdata, **kwargs), labels, probs)


def _no_extra(kwargs: dict[str, Any]) -> None:
    if kwargs:
        raise LmmbayesError(f"Unknown argument(s) {sorted(kwargs)}; see help(lmmbayes.predict.posterior_epred).")
