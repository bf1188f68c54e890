"""The frozen :class:`Fit`: thin methods over the summary and diagnostics modules."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from . import summary as _summary
from .design import Design
from .diagnostics import SamplerReport, advice, sampler_report
from .posterior import flat_draws
from .priors import ResolvedPriors
from .sampling import SamplerConfig

ENGINE_LABELS = {
    "joint": "joint (all random effects sampled by NUTS)",
    "collapsed": "collapsed (random effects integrated out, then drawn exactly)",
}


@dataclass(frozen=True, eq=False)
class Fit:
    """A fitted Bayesian linear mixed model.

    Attributes
    ----------
    design : Design
        The data as the model saw it (after dropping rows with missing values).
        For a Dask DataFrame it holds no rows (``design.rows_in_memory`` is
        False): only the cross-products and statistics the fit needed.
    priors : ResolvedPriors
        The prior of every parameter, user-set or default.
    family : str
    engine : str
        ``"joint"`` or ``"collapsed"``.
    config : SamplerConfig
        Chains, draws, tune, seed, target_accept and sampler used.
    idata : xarray.DataTree
        ArviZ DataTree with groups ``posterior`` (brms-named blocks, see
        :mod:`lmmbayes.posterior`), ``sample_stats`` and ``observed_data``
        (without rows when the design holds none).
    timings : dict
        Seconds spent building, compiling and sampling.
    """

    design: Design
    priors: ResolvedPriors
    family: str
    engine: str
    config: SamplerConfig
    idata: xr.DataTree
    timings: dict[str, float] = field(default_factory=dict)

    # -- basic facts ---------------------------------------------------------
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
        return self.idata["posterior"].attrs.get("sample_prior") == "only"

    @property
    def posterior(self) -> xr.Dataset:
        return self.idata["posterior"].to_dataset()

    @cached_property
    def sampler_report(self) -> SamplerReport:
        """Divergences, max-tree-depth hits, E-BFMI and step size per chain."""
        return sampler_report(self.idata["sample_stats"].to_dataset())

    # -- tables --------------------------------------------------------------
    def summary(self) -> _summary.Summary:
        """brms's summary: print it for the familiar layout, or use its tables."""
        return self._summary

    @cached_property
    def _summary(self) -> _summary.Summary:
        c = self.config
        header = (
            ("Family", self.family),
            ("Links", "mu = identity; sigma = identity"),
            ("Formula", self.formula),
            ("Data", f"data (Number of observations: {self.nobs})"),
            ("Draws", f"{c.chains} chains, each with iter = {c.tune + c.draws}; warmup = {c.tune}; "
                      f"thin = 1;\n         total post-warmup draws = {c.chains * c.draws}"),
            ("Engine", "none: draws from the prior (sample_prior='only')" if self.prior_only
             else ENGINE_LABELS[self.engine]),
        )
        source = "drawn from the prior" if self.prior_only else f"sampled using {c.sampler} (NUTS)"
        footer = (
            f"Draws were {source}. For each parameter, Bulk_ESS\n"
            "and Tail_ESS are effective sample size measures, and Rhat is the potential\n"
            "scale reduction factor on split chains (at convergence, Rhat = 1)."
        )
        base = _summary.build_summary(self.posterior, self.design, header, (), footer)
        rhat = base.to_frame()["Rhat"].to_numpy(dtype=float)
        rhat_max = float(np.nanmax(rhat)) if np.isfinite(rhat).any() else float("nan")
        warns = advice(self.sampler_report, rhat_max, c.target_accept)
        return _summary.Summary(base.header, base.group_blocks, base.fixed, base.spec, warns, footer)

    @property
    def warnings(self) -> tuple[str, ...]:
        """The sampler and convergence warnings shown under the summary."""
        return self._summary.warnings

    def posterior_summary(self, probs: tuple[float, ...] = (0.025, 0.975)) -> pd.DataFrame:
        """Every parameter by its brms name: Estimate, Est.Error and quantiles."""
        return _summary.posterior_summary(self.posterior, self.design, probs)

    def fixef(self, probs: tuple[float, ...] = (0.025, 0.975)) -> pd.DataFrame:
        """Population-level effects (``Intercept`` on the original scale)."""
        return _summary.fixef(self.posterior, self.design, probs)

    def ranef(self, probs: tuple[float, ...] = (0.025, 0.975)) -> dict[str, pd.DataFrame]:
        """Group-level deviations per factor, rows indexed by (level, term)."""
        return _summary.ranef(self.posterior, self.design, probs)

    def coef(self, probs: tuple[float, ...] = (0.025, 0.975)) -> dict[str, pd.DataFrame]:
        """Population plus group-level effects per factor and level."""
        return _summary.coef(self.posterior, self.design, probs)

    def varcorr(self, probs: tuple[float, ...] = (0.025, 0.975)) -> dict[str, dict[str, pd.DataFrame]]:
        """Standard deviations and correlations per factor, and the residual SD."""
        return _summary.varcorr(self.posterior, self.design, probs)

    VarCorr = varcorr

    def prior_summary(self) -> pd.DataFrame:
        """The prior of every parameter: prior, class, coef, group, lb, ub, source."""
        return self.priors.frame()

    def draws(self, *, include_random: bool = True) -> pd.DataFrame:
        """One row per draw with ``.chain``, ``.iteration``, ``.draw`` and brms-named columns."""
        names, arr = flat_draws(self.posterior, self.design, random=include_random)
        n_chain, n_draw = arr.shape[:2]
        frame = pd.DataFrame(arr.reshape(n_chain * n_draw, -1), columns=names)
        meta = pd.DataFrame({
            ".chain": np.repeat(np.arange(1, n_chain + 1), n_draw),
            ".iteration": np.tile(np.arange(1, n_draw + 1), n_chain),
            ".draw": np.arange(1, n_chain * n_draw + 1),
        })
        return pd.concat([frame, meta], axis=1)

    # -- workflow: thin delegations to the modules that own each job -------------
    def diagnostics(self) -> Any:
        """Per-parameter R-hat, ESS and MCSE plus the sampler report (see :mod:`lmmbayes.diagnostics`)."""
        from .diagnostics import diagnostics_table

        return diagnostics_table(self)

    def posterior_epred(self, newdata: Any = None, **kwargs: Any) -> np.ndarray:
        """Draws of the expected response, (draws, rows). See :func:`lmmbayes.predict.posterior_epred`."""
        from .predict import posterior_epred

        return posterior_epred(self, newdata, **kwargs)

    def posterior_predict(self, newdata: Any = None, **kwargs: Any) -> np.ndarray:
        """Draws of new observations, (draws, rows). See :func:`lmmbayes.predict.posterior_predict`."""
        from .predict import posterior_predict

        return posterior_predict(self, newdata, **kwargs)

    def predict(self, newdata: Any = None, **kwargs: Any) -> pd.DataFrame:
        """Per-row summary of posterior_predict: Estimate, Est.Error, Q2.5, Q97.5."""
        from .predict import predict

        return predict(self, newdata, **kwargs)

    def fitted(self, newdata: Any = None, **kwargs: Any) -> pd.DataFrame:
        """Per-row summary of posterior_epred: Estimate, Est.Error, Q2.5, Q97.5."""
        from .predict import fitted

        return fitted(self, newdata, **kwargs)

    def log_lik(self, **kwargs: Any) -> np.ndarray:
        """Pointwise log-likelihood, (chain, draw, observation), computed on demand."""
        from .compare import log_lik

        return log_lik(self, **kwargs)

    def loo(self, **kwargs: Any) -> Any:
        """PSIS-LOO (arviz-stats) from the pointwise log-likelihood."""
        from .compare import loo

        return loo(self, **kwargs)

    def waic(self, **kwargs: Any) -> Any:
        """WAIC from the pointwise log-likelihood."""
        from .compare import waic

        return waic(self, **kwargs)

    def bayes_r2(self, **kwargs: Any) -> pd.DataFrame:
        """Bayesian R-squared (Gelman, Goodrich, Gabry and Vehtari 2019)."""
        from .compare import bayes_r2

        return bayes_r2(self, **kwargs)

    def pp_check(self, kind: str = "dens_overlay", ndraws: int = 50, **kwargs: Any) -> Any:
        """Posterior predictive check figure: "dens_overlay", "hist" or "stat"."""
        from .checks import pp_check

        return pp_check(self, kind=kind, ndraws=ndraws, **kwargs)

    def plot(self, kind: str = "trace", **kwargs: Any) -> Any:
        """brms's ``mcmc_plot``: kind is trace, rank, acf, parallel, pairs, energy or ranef."""
        from . import plots

        return plots.plot(self, kind, **kwargs)

    def save(self, path: Any) -> Path:
        """Write the fit to one file and return its path; :func:`lmmbayes.load` restores it."""
        from .persist import save

        return save(self, path)

    def __repr__(self) -> str:
        return (f"<lmmbayes.Fit {self.formula!r}: {self.nobs} observations, {self.engine} engine, "
                f"{self.config.chains} x {self.config.draws} draws>")
