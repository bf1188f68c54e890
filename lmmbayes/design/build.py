"""Join a `FormulaSpec`, a family and data into a frozen `Design`.

The design holds the encoder learnt from the training rows (the one way rows
are ever encoded), the encoded rows themselves (for in-memory data) and the
statistics later stages need: the response's summaries for brms's default
priors and for standardisation, the columns' means and scales, a fingerprint
of the response. There is deliberately no dense N x (levels x terms)
random-effects matrix: each factor keeps a per-row level index and its
(N, q) term values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError, FitError
from ..families import Family, r_mad
from ..spec import FormulaSpec
from .checks import collinear_columns, warn_collinearity
from .crossprod import ReducedRows, gaussian_response, log_jacobian
from .encoder import FactorCoding, RowEncoder, Rows, learn_encoder
from .fingerprint import response_fingerprint
from .predictors import Predictors, prediction_columns, summarise_predictors
from .frame import as_frame, check_columns, check_finite, complete_rows, warn_dropped


@dataclass(frozen=True, eq=False)
class Stats:
    """What later stages need to know about the training rows.

    Attributes
    ----------
    n_obs : int
    y_mean, y_sd : float
        Mean and SD (divisor N) of the response less its offset, on the scale where the family is
        normal (``log y`` for lognormal: `Family.normal_response`): the standardisation of
        identity-link location-scale families, and the collapsed engine's centre.
    prior_median, prior_mad : float or None
        Median and R's ``mad()`` of the response as brms's default priors see
        it (`prior_response`); None where brms
        uses fixed defaults.
    offset_mean : float
        Mean of the offsets (0 without offsets).
    x_mean, x_sd, x_rms : (p,) arrays
        Mean, SD (divisor N) and root mean square of each population-level column.
    z_rms : tuple of (q,) arrays
        Per grouping factor, the root mean square of each term's column.
    fingerprint : str
        A digest of the coded response (`.fingerprint`, the same for rows in memory and on Dask),
        to tell fits of different data apart.
    log_jacobian : float
        ``Σ w_i log t'(y_i)`` of that normal scale (lognormal: ``−Σ w_i log y_i``; 0 for the other
        families): the constant the collapsed engine's marginal likelihood of ``t(y)`` leaves out.
    """

    n_obs: int
    y_mean: float
    y_sd: float
    prior_median: float | None
    prior_mad: float | None
    offset_mean: float
    x_mean: np.ndarray
    x_sd: np.ndarray
    x_rms: np.ndarray
    z_rms: tuple[np.ndarray, ...]
    fingerprint: str
    log_jacobian: float = 0.0


@dataclass(frozen=True, eq=False)
class Design:
    """Everything the engines need, as plain arrays and names.

    Attributes
    ----------
    spec : FormulaSpec
    family : Family
    encoder : RowEncoder
        Encodes any rows like the training rows (new data, Dask partitions).
    rows : Rows or None
        The training rows; None for a design built from a Dask DataFrame,
        which keeps their cross-products in ``reduced`` instead.
    stats : Stats
    n_dropped : int
        Rows dropped for missing values.
    dropped_index : tuple
        Index labels of the dropped rows in the user's data frame.
    reduced : ReducedRows or None
    predictors : Predictors or None
        What the model remembers about each raw predictor column (numeric
        summaries or levels), for grids of predictor values; None for a fit
        file written before lmmbayes stored them.
    predictor_rows : pandas.DataFrame or None
        The fitted rows' raw values of the columns a prediction reads
        (predictors, grouping columns, ``trials()``/``se()`` columns): the
        default rows of the marginaleffects-style averages. None where the
        rows are not in memory (Dask) or for fit files written before they were stored.
    """

    spec: FormulaSpec
    family: Family
    encoder: RowEncoder
    rows: Rows | None
    stats: Stats
    n_dropped: int
    dropped_index: tuple[Any, ...]
    reduced: ReducedRows | None = field(default=None, repr=False)
    predictors: Predictors | None = field(default=None, repr=False)
    predictor_rows: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def rows_in_memory(self) -> bool:
        """False for a design built from Dask input: it holds sums, not rows."""
        return self.rows is not None

    @property
    def n_obs(self) -> int:
        return self.stats.n_obs

    @property
    def centred_intercept(self) -> bool:
        return self.spec.intercept == "centred"

    @property
    def coef_names(self) -> tuple[str, ...]:
        """Names of the columns of X (the explicit ``Intercept`` included, the centred one not)."""
        return self.encoder.coef_names

    @property
    def n_thresholds(self) -> int:
        """Ordered thresholds that replace the intercept of an ordinal family (K − 1); 0 otherwise."""
        return self.family.n_thresholds(self.encoder.coding)

    @property
    def intercept_names(self) -> tuple[str, ...]:
        """Names of the centred intercept(s): ``Intercept``, or ``Intercept[1]``... for an ordinal family."""
        if not self.centred_intercept:
            return ()
        k = self.n_thresholds
        return tuple(f"Intercept[{j}]" for j in range(1, k + 1)) if k else ("Intercept",)

    @property
    def intercept_in_eta(self) -> bool:
        """Whether the linear predictor holds an intercept (b then starts with it): not for ordinal families."""
        return self.centred_intercept and not self.n_thresholds

    @property
    def b_names(self) -> tuple[str, ...]:
        """Population-level names as reported (``Intercept`` or the thresholds first if centred)."""
        return self.intercept_names + self.coef_names

    @property
    def factors(self) -> tuple[FactorCoding, ...]:
        return self.encoder.factors

    @property
    def y(self) -> np.ndarray:
        """The coded response of the training rows (empty for a design without rows)."""
        return self.rows.y if self.rows is not None and self.rows.y is not None else np.zeros(0)

    def require_rows(self, what: str, instead: str) -> Rows:
        """The training rows; FitError naming ``what`` and what to do ``instead`` for a Dask design."""
        if self.rows is None:
            raise FitError(f"{what} needs the rows of the data, but this fit was made from a Dask DataFrame "
                           f"and keeps only their cross-products. {instead}")
        return self.rows


def _rms(M: np.ndarray) -> np.ndarray:
    return np.sqrt((M**2).mean(axis=0)) if M.shape[0] else np.zeros(M.shape[1])


def row_stats(spec: FormulaSpec, family: Family, rows: Rows) -> Stats:
    """The statistics of encoded training rows."""
    y = rows.y if rows.y is not None else np.zeros(rows.n)
    offset = rows.offset if rows.offset is not None else np.zeros(rows.n)
    normal = family.normal_response(y)
    resid = gaussian_response(normal, y, offset)
    prior = family.prior_response(y)
    return Stats(
        n_obs=rows.n, y_mean=float(resid.mean()), y_sd=float(resid.std()),
        prior_median=None if prior is None else float(np.median(prior)),
        prior_mad=None if prior is None else r_mad(prior),
        offset_mean=float(offset.mean()) if rows.offset is not None else 0.0,
        x_mean=rows.X.mean(axis=0), x_sd=rows.X.std(axis=0), x_rms=_rms(rows.X),
        z_rms=tuple(_rms(f.Z) for f in rows.factors), fingerprint=response_fingerprint(y),
        log_jacobian=log_jacobian(normal, rows.weights),
    )


def check_response_spread(spec: FormulaSpec, family: Family, stats: Stats) -> None:
    """DataError for a response a location-scale family cannot fit: a constant one."""
    if family.location_scale and "se" not in spec.additions.present and not stats.y_sd > 0:
        raise DataError(f"The response '{spec.response_name}' is constant (every value is {stats.y_mean:g}"
                        f"{' after its offset' if spec.offsets else ''}); a {family.name} model needs variation in "
                        "the response.")


def build_design(spec: FormulaSpec, family: Family, data: Any, *, fitting: bool = True,
                 check_response: bool = True) -> Design:
    """Evaluate ``spec`` on ``data`` for ``family``.

    Rows with a missing value in any column the formula uses are dropped with
    one `DataWarning` giving their count. The user's
    frame is never modified: all work happens on a copy of the needed columns.

    Parameters
    ----------
    fitting : bool
        False for `lmmbayes.get_prior`: the warning then says how many rows
        a fit would drop.
    check_response : bool
        False for simulations, which replace the response: it may then be a
        placeholder that does not vary.

    Raises
    ------
    DataError, FormulaError, FitError
    """
    family.check_additions(spec.additions.present)
    family.check_intercept(spec.intercept)
    df = as_frame(data)
    needed = spec.variables()
    check_columns(df.columns, needed, spec.formula)
    if len(df) == 0:
        raise DataError("data has no rows.")
    frame, dropped = complete_rows(df, needed)
    check_finite(frame)
    if dropped:
        warn_dropped(len(dropped), len(df), fitting=fitting)
    encoder, rows = learn_encoder(spec, family, frame)
    stats = row_stats(spec, family, rows)
    if stats.n_obs < 2:
        raise DataError(f"The data has {stats.n_obs} complete row; a model needs at least 2 observations.")
    if check_response:
        check_response_spread(spec, family, stats)
    warn_collinearity(*collinear_columns(rows.X, encoder.coef_names, spec.intercept == "centred"))
    predictors = summarise_predictors(spec, encoder, frame)
    return Design(spec, family, encoder, rows, stats, len(dropped), dropped, predictors=predictors,
                  predictor_rows=frame.loc[:, list(prediction_columns(encoder))].reset_index(drop=True))
