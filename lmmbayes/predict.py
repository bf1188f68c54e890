"""Predictions from a fitted model, as brms's ``posterior_epred``, ``posterior_predict``,
``fitted`` and ``predict``.

Draw arrays use brms's layout: one row per posterior draw (chains one after the
other), one column per data row. The linear predictor of a row is

    mu = sum_k b_k x_k + sum_g sum_t r_g[level(row), t] * Z_g[row, t]

with ``b`` on the original scale (``Intercept`` times a column of ones when the
intercept is centred), so predictions need no centring.

New data is evaluated with the formulae objects kept in the :class:`Design`
(stateful transforms such as ``scale(x)`` reuse the training mean and SD).
Levels of grouping factors never seen in training need ``allow_new_levels=True``;
their effects are then simulated per draw (see ``sample_new_levels``).
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import formulae as fm
import numpy as np
import pandas as pd

from .design import Design, Factor, as_pandas, require_rows
from .errors import DataError, LmmbayesError

#: Ways to simulate the effects of grouping levels absent from the training data.
SAMPLE_NEW_LEVELS = ("uncertainty", "gaussian")


@dataclass(frozen=True)
class FactorRows:
    """One grouping factor evaluated on the rows to predict.

    Attributes
    ----------
    factor : Factor
    codes : numpy.ndarray
        (n,) level per row: ``0..L-1`` for training levels, ``L + k`` for the
        ``k``-th entry of ``new_levels``.
    Z : numpy.ndarray
        (n, q) values of the factor's terms.
    new_levels : tuple of str
        Labels not seen in training, in order of first appearance.
    """

    factor: Factor
    codes: np.ndarray
    Z: np.ndarray
    new_levels: tuple[str, ...]


@dataclass(frozen=True)
class PredictionRows:
    """The rows to predict: population columns (brms order of ``b``) and group terms."""

    X: np.ndarray
    factors: tuple[FactorRows, ...]
    index: pd.Index

    @property
    def n(self) -> int:
        return int(self.X.shape[0])


# -- argument checks ------------------------------------------------------------

def _groups(design: Design, include_groups: Any) -> tuple[Factor, ...]:
    """The factors ``include_groups`` selects (True or None: all, False: none, or names)."""
    if include_groups is True or include_groups is None:  # None as brms's re_formula = NULL
        return design.factors
    if include_groups is False:
        return ()
    names = [include_groups] if isinstance(include_groups, str) else include_groups
    if not isinstance(names, Sequence) or not all(isinstance(n, str) for n in names):
        raise LmmbayesError(
            "include_groups must be True (all group-level terms), False (population-level only) "
            f"or a list of grouping factor names, got {include_groups!r}."
        )
    known = [f.name for f in design.factors]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise LmmbayesError(
            f"include_groups names unknown grouping factor(s) {unknown}; this model's grouping "
            f"factors are {known}."
        )
    return tuple(f for f in design.factors if f.name in set(names))


def n_draws(fit: Any) -> int:
    """Total number of posterior draws (chains times draws per chain)."""
    sigma = fit.idata["posterior"]["sigma"]
    return int(sigma.shape[0] * sigma.shape[1])


def draw_indices(total: int, draws: Any) -> np.ndarray:
    """Flat (chain-major) indices of the draws to use.

    ``None`` keeps every draw; an integer ``k`` keeps ``k`` draws evenly spaced
    over all chains (deterministic, so repeated calls agree); a sequence of
    integers picks those flat draw indices.
    """
    if draws is None:
        return np.arange(total)
    if isinstance(draws, numbers.Integral) and not isinstance(draws, bool):
        if not 1 <= draws <= total:
            raise LmmbayesError(f"draws must be between 1 and the {total} posterior draws, got {draws}.")
        return np.arange(int(draws), dtype=np.int64) * total // int(draws)  # distinct, evenly spaced
    try:
        idx = np.asarray(draws)
    except Exception:  # noqa: BLE001 - anything unusable is the same user error
        idx = np.asarray([])
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer) \
            or idx.min() < 0 or idx.max() >= total:
        raise LmmbayesError(
            f"draws must be None, a number of draws (1 to {total}) or a sequence of flat draw "
            f"indices in [0, {total}), got {draws!r}."
        )
    return idx.astype(np.int64)


def _rng(seed: Any) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
        raise LmmbayesError(f"seed must be None or a non-negative integer, got {seed!r}.")
    return np.random.default_rng(seed)


# -- rows: the fitted data or new data -------------------------------------------------

def fitted_rows(design: Design, groups: tuple[Factor, ...]) -> PredictionRows:
    """The training rows as the model saw them."""
    X = design.X
    if design.centred_intercept:
        X = np.column_stack([np.ones(design.n_obs), X])
    factors = tuple(FactorRows(f, f.index, f.Z, ()) for f in groups)
    return PredictionRows(X, factors, pd.RangeIndex(design.n_obs))


def _needed_columns(design: Design, groups: tuple[Factor, ...]) -> list[tuple[str, str]]:
    """(column, role) pairs newdata must provide."""
    spec = design.spec
    out: list[tuple[str, str]] = []
    out += [(v, "population-level") for v in sorted(fm.model_description(spec.fixed).var_names)]
    chosen = {f.name for f in groups}
    for g in spec.groups:
        if g.factor in chosen:
            out += [(v, f"group-level ({g.source})") for v in sorted(fm.model_description(g.lhs).var_names)]
            out += [(v, f"grouping factor '{g.factor}'") for v in g.factor_vars]
    seen: set[str] = set()
    return [(c, r) for c, r in out if not (c in seen or seen.add(c))]


def _known_levels(matrix: Any, name: str) -> list[Any] | None:
    """Training levels formulae recorded for the categorical component ``name``."""
    for term in getattr(matrix, "terms", {}).values():
        for comp in getattr(term, "components", ()):
            if getattr(comp, "name", None) == name and getattr(comp, "levels", None) is not None:
                return list(comp.levels)
    return None


_UNSEEN = re.compile(r"The levels \((.*)\) in '(.*)' are not present in the original data set")


def _evaluate_new(matrix: Any, frame: pd.DataFrame, where: str) -> np.ndarray:
    """Evaluate a formulae matrix on new rows; formulae's errors become DataErrors."""
    try:
        return np.asarray(np.asarray(matrix.evaluate_new_data(frame)), dtype=float)
    except ValueError as exc:
        match = _UNSEEN.search(str(exc))
        if match is None:
            raise DataError(f"Could not evaluate the {where} terms on newdata: {exc}") from None
        unseen, column = match.group(1), match.group(2)
        known = _known_levels(matrix, column)
        listing = f": {[str(k) for k in known]}" if known is not None else ""
        raise DataError(
            f"newdata column '{column}' has level(s) ({unseen}) absent from the data the model was "
            f"fitted on, so no {where} coefficient exists for them; use only levels seen in "
            f"training{listing}."
        ) from None
    except KeyError as exc:
        raise DataError(f"newdata lacks the column {exc.args[0]!r} used by the {where} terms.") from None
    except Exception as exc:  # noqa: BLE001 - formulae's internal errors, reworded
        raise DataError(f"Could not evaluate the {where} terms on newdata: {exc}") from None


def _row_labels(frame: pd.DataFrame, variables: tuple[str, ...]) -> np.ndarray:
    """Level label per row as :mod:`lmmbayes.design` builds them (``str``, joined with ``_``)."""
    cols = [frame[v].astype(object).map(str).to_numpy() for v in variables]
    if len(cols) == 1:
        return cols[0].astype(object)
    return np.array(["_".join(parts) for parts in zip(*cols)], dtype=object)


def new_rows(design: Design, newdata: Any, groups: tuple[Factor, ...]) -> PredictionRows:
    """Evaluate ``newdata`` like the training data; never modifies the user's frame.

    Raises
    ------
    DataError
        newdata is not a data frame, has no rows, lacks a column the model
        needs, has missing values there, or a categorical predictor level the
        model never saw.
    """
    if newdata is not None and not hasattr(newdata, "columns"):
        raise DataError(
            f"newdata must be a pandas or polars DataFrame with the model's predictor columns, "
            f"got {type(newdata).__name__}."
        )
    df = as_pandas(newdata)
    if len(df) == 0:
        raise DataError("newdata has no rows.")
    needed = _needed_columns(design, groups)
    missing = [(c, r) for c, r in needed if c not in df.columns]
    if missing:
        roles = ", ".join(f"'{c}': {r}" for c, r in missing)
        hint = " (or leave the group-level terms out with include_groups=False)" \
            if any(r.startswith(("group", "grouping")) for _, r in missing) else ""
        raise DataError(f"newdata lacks the column(s) {[c for c, _ in missing]} that the model needs "
                        f"({roles}); add them{hint}.")
    columns = [c for c, _ in needed]
    # A private copy: formulae and the level mapping never touch the user's frame.
    frame = df.loc[:, columns].copy().reset_index(drop=True)
    na = [c for c in columns if frame[c].isna().any()]
    if na:
        counts = ", ".join(f"'{c}': {int(frame[c].isna().sum())} of {len(frame)} rows" for c in na)
        raise DataError(
            f"newdata has missing values in {na} ({counts}); predictions need every predictor. "
            "Drop or fill those rows first."
        )
    n = len(frame)
    if design.b_names:
        X = _evaluate_new(design.fixed_matrix, frame, "population-level")
        if X.shape != (n, len(design.b_names)):  # formulae changed the columns: never silently misalign
            raise DataError(
                f"newdata produced {X.shape[1]} population-level columns, the model has "
                f"{len(design.b_names)} ({list(design.b_names)})."
            )
    else:
        X = np.zeros((n, 0))
    factors = []
    for f in groups:
        Z = np.concatenate([_evaluate_new(m, frame, f"group-level ('{f.name}')")
                            for m in f.term_matrices], axis=1)
        labels = _row_labels(frame, f.variables)
        position = {lev: k for k, lev in enumerate(f.levels)}
        codes = np.empty(n, dtype=np.int64)
        new: dict[str, int] = {}
        for i, lab in enumerate(labels):
            k = position.get(lab)
            if k is None:
                k = f.n_levels + new.setdefault(lab, len(new))
            codes[i] = k
        factors.append(FactorRows(f, codes, Z, tuple(new)))
    return PredictionRows(X, tuple(factors), df.index)


def prediction_rows(design: Design, newdata: Any, include_groups: Any,
                    allow_new_levels: bool) -> PredictionRows:
    """The rows to predict (fitted data when ``newdata`` is None), checked for unseen levels."""
    groups = _groups(design, include_groups)
    if newdata is None:
        require_rows(design, "Predicting the fitted rows (newdata=None)",
                     "Pass newdata= a pandas DataFrame with the predictor and grouping columns.")
    rows = fitted_rows(design, groups) if newdata is None else new_rows(design, newdata, groups)
    unseen = [fr for fr in rows.factors if fr.new_levels]
    if unseen and not allow_new_levels:
        what = "; ".join(
            f"factor '{fr.factor.name}': {_preview(fr.new_levels)} (known levels: {_preview(fr.factor.levels)})"
            for fr in unseen)
        raise DataError(
            f"newdata has grouping levels the model was not fitted on: {what}. Pass "
            "allow_new_levels=True to simulate their effects from the fitted group-level "
            "distribution, or include_groups=False for population-level predictions."
        )
    return rows


def _preview(levels: Sequence[str], limit: int = 10) -> str:
    shown = list(levels[:limit])
    return f"{shown}{' ...' if len(levels) > limit else ''}"


# -- draws ------------------------------------------------------------------------------

def stack_draws(values: np.ndarray) -> np.ndarray:
    """(chain, draw, ...) -> (chain * draw, ...), chains one after the other."""
    return values.reshape((values.shape[0] * values.shape[1],) + values.shape[2:])


def _cholesky(R: np.ndarray) -> np.ndarray:
    """Per-draw square roots of correlation matrices; eigen-decomposition if rounding broke PD."""
    try:
        return np.linalg.cholesky(R)
    except np.linalg.LinAlgError:
        w, V = np.linalg.eigh(R)
        return V * np.sqrt(np.clip(w, 0.0, None))[..., None, :]


def _new_level_effects(posterior: Any, f: Factor, idx: np.ndarray, r_old: np.ndarray,
                       n_new: int, method: str, rng: np.random.Generator) -> np.ndarray:
    """(S, n_new, q) effects for levels absent from the training data."""
    S, L, q = r_old.shape
    if method == "uncertainty":
        # brms: each draw borrows the effects of a randomly chosen training level.
        pick = rng.integers(L, size=(S, n_new))
        return r_old[np.arange(S)[:, None], pick, :]
    sd = stack_draws(np.asarray(posterior[f"sd_{f.name}"].values))[idx]
    R = np.broadcast_to(np.eye(q), (S, q, q)).copy()
    if f.cor_pairs:
        cor = stack_draws(np.asarray(posterior[f"cor_{f.name}"].values))[idx]
        for k, (i, j) in enumerate(f.cor_pairs):
            R[:, i, j] = R[:, j, i] = cor[:, k]
    scale = sd[:, :, None] * _cholesky(R)  # diag(sd) @ Lcorr per draw
    z = rng.standard_normal((S, q, n_new))
    return np.swapaxes(scale @ z, 1, 2)


def linear_predictor(fit: Any, rows: PredictionRows, idx: np.ndarray, *,
                     sample_new_levels: str = "uncertainty",
                     rng: np.random.Generator | None = None,
                     row_slice: slice = slice(None)) -> np.ndarray:
    """(len(idx), rows) draws of mu for the rows in ``row_slice``."""
    posterior = fit.idata["posterior"]
    b = stack_draws(np.asarray(posterior["b"].values))[idx]
    mu = b @ rows.X[row_slice].T
    for fr in rows.factors:
        f = fr.factor
        r = stack_draws(np.asarray(posterior[f"r_{f.name}"].values))[idx]
        if fr.new_levels:
            extra = _new_level_effects(posterior, f, idx, r, len(fr.new_levels), sample_new_levels,
                                       rng if rng is not None else np.random.default_rng())
            r = np.concatenate([r, extra], axis=1)
        codes, Z = fr.codes[row_slice], fr.Z[row_slice]
        for t in range(Z.shape[1]):  # one (S, n) temporary per term, never (S, n, q)
            mu += r[:, codes, t] * Z[:, t]
    return mu


def _check_method(sample_new_levels: Any) -> str:
    if sample_new_levels not in SAMPLE_NEW_LEVELS:
        raise LmmbayesError(
            f"Unknown sample_new_levels {sample_new_levels!r}; choose one of {list(SAMPLE_NEW_LEVELS)}."
        )
    return sample_new_levels


def _draws(fit: Any, newdata: Any, include_groups: Any, allow_new_levels: bool,
           sample_new_levels: str, draws: Any, seed: Any, noise: bool) -> tuple[np.ndarray, pd.Index]:
    """(draws, rows) of mu, plus residual noise if ``noise``; and the rows' index."""
    method = _check_method(sample_new_levels)
    rng = _rng(seed)
    idx = draw_indices(n_draws(fit), draws)
    rows = prediction_rows(fit.design, newdata, include_groups, bool(allow_new_levels))
    mu = linear_predictor(fit, rows, idx, sample_new_levels=method, rng=rng)
    if noise:
        sigma = stack_draws(np.asarray(fit.idata["posterior"]["sigma"].values))[idx]
        mu += sigma[:, None] * rng.standard_normal(mu.shape)
    return mu, rows.index


# -- public -----------------------------------------------------------------------------

def posterior_epred(fit: Any, newdata: Any = None, *, include_groups: bool | str | Sequence[str] = True,
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
        at random, a different one per draw, so the draws carry the spread of
        the levels seen. ``"gaussian"``: in each draw, effects drawn from the
        fitted normal distribution, ``diag(sd) @ Lcorr @ z`` with
        ``z ~ N(0, I)`` from that draw's ``sd`` and ``cor``. Either way, rows
        sharing a new label share its effects within a draw, and every new
        level gets its own.
    draws : int or sequence of int, optional
        ``k``: ``k`` draws evenly spaced over all chains; a sequence: those
        flat draw indices (chain-major); None: all draws.
    seed : int, optional
        Seeds the simulation of new levels.

    Returns
    -------
    numpy.ndarray
        (draws, rows): one row per posterior draw, chains one after the other.

    Raises
    ------
    DataError
        Bad newdata (see :func:`new_rows`) or unseen grouping levels without
        ``allow_new_levels``.
    """
    return _draws(fit, newdata, include_groups, allow_new_levels, sample_new_levels, draws, seed, False)[0]


def posterior_predict(fit: Any, newdata: Any = None, *, include_groups: bool | str | Sequence[str] = True,
                      allow_new_levels: bool = False, sample_new_levels: str = "uncertainty",
                      draws: int | Sequence[int] | None = None, seed: int | None = None) -> np.ndarray:
    """Draws of new observations: :func:`posterior_epred` plus Gaussian noise with each draw's sigma.

    Same parameters and layout as :func:`posterior_epred`; ``seed`` also seeds the noise.
    """
    return _draws(fit, newdata, include_groups, allow_new_levels, sample_new_levels, draws, seed, True)[0]


def summarise_draws(draws: np.ndarray, index: pd.Index,
                    probs: tuple[float, ...] = (0.025, 0.975)) -> pd.DataFrame:
    """Per column of (draws, rows): Estimate (mean), Est.Error (SD) and quantiles, brms's layout."""
    from .summary import describe

    table = describe(list(range(draws.shape[1])), draws[None, :, :], probs)
    table.index = index
    return table


def _table(fit: Any, newdata: Any, probs: tuple[float, ...], kwargs: dict[str, Any],
           noise: bool, where: str) -> pd.DataFrame:
    options = {"include_groups": True, "allow_new_levels": False, "sample_new_levels": "uncertainty",
               "draws": None, "seed": None}
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        raise TypeError(f"{where}() got unexpected keyword argument(s) {unknown}; valid: {sorted(options)}.")
    options.update(kwargs)
    draws, index = _draws(fit, newdata, noise=noise, **options)
    return summarise_draws(draws, index, probs)


def fitted(fit: Any, newdata: Any = None, *, probs: tuple[float, ...] = (0.025, 0.975),
           **kwargs: Any) -> pd.DataFrame:
    """brms's ``fitted``: per-row summary of :func:`posterior_epred`.

    Parameters
    ----------
    fit, newdata
        As :func:`posterior_epred`.
    probs : tuple of float
        Quantiles to report (brms's ``Q2.5`` and ``Q97.5`` by default).
    **kwargs
        ``include_groups``, ``allow_new_levels``, ``sample_new_levels``,
        ``draws``, ``seed`` as for :func:`posterior_epred`.

    Returns
    -------
    pandas.DataFrame
        One row per data row (newdata's index, or 0..N-1 for the fitted data);
        columns ``Estimate`` (mean), ``Est.Error`` (SD), ``Q2.5``, ``Q97.5``.
    """
    return _table(fit, newdata, probs, kwargs, False, "fitted")


def predict(fit: Any, newdata: Any = None, *, probs: tuple[float, ...] = (0.025, 0.975),
            **kwargs: Any) -> pd.DataFrame:
    """brms's ``predict``: per-row summary of :func:`posterior_predict` (same layout as :func:`fitted`)."""
    return _table(fit, newdata, probs, kwargs, True, "predict")
