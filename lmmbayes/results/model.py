"""The frozen result of a fit: design, priors, engine, sampler settings and the posterior DataTree."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from ..design import Design
from ..engines.sampling import SamplerConfig
from ..families import Family
from ..priors import ResolvedPriors

ENGINE_LABELS = {
    "joint": "joint (all random effects sampled by NUTS)",
    "collapsed": "collapsed (random effects integrated out, then drawn exactly)",
    "prior": "none: draws from the prior (sample_prior='only')",
}


@dataclass(frozen=True, eq=False)
class FitResult:
    """A fitted model as data; `lmmbayes.Fit` adds the methods.

    Attributes
    ----------
    design : Design
        The data as the model saw it (after dropping rows with missing
        values). For a Dask DataFrame it holds no rows, only the
        cross-products and statistics the fit needed.
    priors : ResolvedPriors
        The prior of every parameter, user-set or default.
    engine : str
        ``"joint"``, ``"collapsed"`` or ``"prior"`` (``sample_prior="only"``).
    config : SamplerConfig
        Chains, draws, tune, seed, target_accept and sampler used.
    idata : xarray.DataTree
        Groups ``posterior`` (brms-named blocks, see
        `lmmbayes.results.posterior`), ``sample_stats`` and
        ``observed_data`` (without rows when the design holds none); with
        ``sample_prior="yes"`` also ``prior``.
    timings : dict
        Seconds per stage (design, build, compile or load, sample, effects...).
    info : dict
        What the engine reported (e.g. which route evaluated the density).
    data_name : str
        The data's name for the summary header, where it could be known.
    """

    design: Design
    priors: ResolvedPriors
    engine: str
    config: SamplerConfig
    idata: xr.DataTree
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    data_name: str = "data"

    @property
    def family(self) -> Family:
        return self.design.family

    @property
    def formula(self) -> str:
        return self.design.spec.formula

    @property
    def nobs(self) -> int:
        """Number of observations used (after dropping rows with missing values)."""
        return self.design.n_obs

    @property
    def dropped_rows(self) -> tuple[Any, ...]:
        """Index labels of the user's rows dropped for missing values."""
        return self.design.dropped_index

    @property
    def prior_only(self) -> bool:
        """True for ``fit(..., sample_prior="only")``: the draws are from the prior."""
        return self.engine == "prior"

    @property
    def posterior(self) -> xr.Dataset:
        return self.idata["posterior"].to_dataset()

    @property
    def n_chains(self) -> int:
        return int(self.idata["posterior"].sizes["chain"])

    @property
    def n_draws(self) -> int:
        """Total number of posterior draws (chains times draws per chain)."""
        sizes = self.idata["posterior"].sizes
        return int(sizes["chain"] * sizes["draw"])


def same_data(a: FitResult, b: FitResult) -> bool:
    """Whether two fits were fitted to the same observations: the same response values in the same order.

    Every design keeps a fingerprint of its response (`lmmbayes.design.fingerprint`, the same for rows
    in memory and on Dask, and saved in fit files); fits in memory also compare the values themselves.
    """
    da, db = a.design, b.design
    if da.n_obs != db.n_obs or da.stats.fingerprint != db.stats.fingerprint:
        return False
    return da.rows is None or db.rows is None or bool(np.array_equal(da.y, db.y))
