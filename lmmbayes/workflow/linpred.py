"""The one linear predictor: population-level part, offsets and group-level effects of any rows.

    eta = X b + offset + sum_g sum_t r_g[level(row), t] * Z_g[row, t]

with ``b`` on the original scale (``Intercept`` times a column of ones where
the intercept is centred), so no centring is needed. Prediction, the
pointwise log-likelihood (in memory and on Dask partitions), posterior
predictive checks and prior simulation all call `linear_predictor`.
Levels absent from the training data get effects simulated per draw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from ..design import Design, Rows
from ..design.encoder import FactorCoding
from ..errors import LmmbayesError
from ..families import THRESHOLDS

#: Ways to simulate the effects of grouping levels absent from the training data.
SAMPLE_NEW_LEVELS = ("uncertainty", "gaussian")


def stack(values: np.ndarray) -> np.ndarray:
    """(chain, draw, ...) -> (chain * draw, ...), chains one after the other."""
    return values.reshape((values.shape[0] * values.shape[1],) + values.shape[2:])


@dataclass(frozen=True, eq=False)
class Params:
    """The draws the linear predictor and the families need, stacked chain after chain.

    Attributes
    ----------
    b : (S, P) array
    r : dict of (S, levels, q) arrays
    sd : dict of (S, q) arrays
    cor : dict of (S, pairs) arrays
    dpars : dict of (S,) arrays
        Distributional parameters; an ordinal model's (S, K − 1) thresholds under ``THRESHOLDS``.
    """

    b: np.ndarray
    r: dict[str, np.ndarray]
    sd: dict[str, np.ndarray]
    cor: dict[str, np.ndarray]
    dpars: dict[str, np.ndarray]

    @property
    def n(self) -> int:
        return int(self.b.shape[0])


def params(posterior: xr.Dataset, design: Design, idx: np.ndarray | None = None) -> Params:
    """The draws at flat (chain-major) indices ``idx`` (all draws if None)."""
    def take(values: np.ndarray) -> np.ndarray:
        flat = stack(np.asarray(values))
        return flat if idx is None else flat[idx]

    from ..results.posterior import dpar_names

    b = take(posterior["b"].values)
    dpars = {name: take(posterior[name].values) for name in dpar_names(design)}
    k = design.n_thresholds
    if k:  # an ordinal model's thresholds go to its density, not to the linear predictor
        b, dpars[THRESHOLDS] = b[:, k:], b[:, :k]
    return Params(
        b=b,
        r={f.name: take(posterior[f"r_{f.name}"].values) for f in design.factors},
        sd={f.name: take(posterior[f"sd_{f.name}"].values) for f in design.factors},
        cor={f.name: take(posterior[f"cor_{f.name}"].values) for f in design.factors if f.cor_pairs},
        dpars=dpars,
    )


def _cholesky(R: np.ndarray) -> np.ndarray:
    """Per-draw square roots of correlation matrices; eigen-decomposition if rounding broke PD."""
    try:
        return np.linalg.cholesky(R)
    except np.linalg.LinAlgError:
        w, V = np.linalg.eigh(R)
        return V * np.sqrt(np.clip(w, 0.0, None))[..., None, :]


def new_level_effects(p: Params, f: FactorCoding, n_new: int, method: str, rng: np.random.Generator) -> np.ndarray:
    """(S, n_new, q) effects for levels absent from the training data, as brms's ``sample_new_levels``.

    ``"uncertainty"``: in each draw a new level takes the effects of a training
    level chosen at random (a different one per draw). ``"gaussian"``: effects
    drawn from the fitted normal distribution of that draw.
    """
    r_old = p.r[f.name]
    S, L, q = r_old.shape
    if method == "uncertainty":
        pick = rng.integers(L, size=(S, n_new))
        return r_old[np.arange(S)[:, None], pick, :]
    R = np.broadcast_to(np.eye(q), (S, q, q)).copy()
    if f.cor_pairs:
        for k, (i, j) in enumerate(f.cor_pairs):
            R[:, i, j] = R[:, j, i] = p.cor[f.name][:, k]
    scale = p.sd[f.name][:, :, None] * _cholesky(R)
    z = rng.standard_normal((S, q, n_new))
    return np.swapaxes(scale @ z, 1, 2)


@dataclass(frozen=True, eq=False)
class Levels:
    """Per factor of some rows: each row's level among training levels then new ones, and the new labels."""

    codes: np.ndarray
    new: tuple[str, ...]


def row_levels(index: np.ndarray, labels: np.ndarray | None) -> Levels:
    """Number the new levels of some rows ``L, L+1, ...`` in order of first appearance."""
    if labels is None or not (index < 0).any():
        return Levels(index, ())
    new: dict[str, int] = {}
    codes = index.copy()
    for i in np.flatnonzero(index < 0):
        codes[i] = -1 - new.setdefault(str(labels[i]), len(new))
    return Levels(codes, tuple(new))


def linear_predictor(p: Params, rows: Rows, factors: tuple[FactorCoding, ...], *, centred: bool,
                     sample_new_levels: str = "uncertainty", rng: np.random.Generator | None = None,
                     rows_slice: slice = slice(None)) -> np.ndarray:
    """(S, n) draws of the linear predictor of ``rows[rows_slice]``.

    Parameters
    ----------
    factors : tuple of FactorCoding
        The factors of ``rows.factors`` (in order): those whose effects are included.
    centred : bool
        Whether ``b`` starts with a centred intercept that X has no column for
        (`Design.intercept_in_eta`; an ordinal model's thresholds are apart).
    sample_new_levels : {"uncertainty", "gaussian"}
        How levels absent from the training data get effects (see `new_level_effects`).
    """
    X = rows.X[rows_slice]
    if centred:
        X = np.column_stack([np.ones(X.shape[0]), X])
    eta = p.b @ X.T
    if rows.offset is not None:
        eta += rows.offset[rows_slice][None, :]
    rng = rng if rng is not None else np.random.default_rng()
    for f, fr in zip(factors, rows.factors):
        lev = row_levels(fr.index, fr.labels)
        r = p.r[f.name]
        if lev.new:
            if sample_new_levels not in SAMPLE_NEW_LEVELS:
                raise LmmbayesError(f"Unknown sample_new_levels {sample_new_levels!r}; choose one of "
                                    f"{list(SAMPLE_NEW_LEVELS)}.")
            r = np.concatenate([r, new_level_effects(p, f, len(lev.new), sample_new_levels, rng)], axis=1)
        codes = lev.codes[rows_slice]
        codes = np.where(codes < 0, f.n_levels - 1 - codes, codes)  # new level k -> L + k
        Z = fr.Z[rows_slice]
        for t in range(Z.shape[1]):  # one (S, n) temporary per term, never (S, n, q)
            eta += r[:, codes, t] * Z[:, t]
    return eta
