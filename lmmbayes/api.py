"""The public entry points and the `Fit` with brms's methods.

``fit()`` runs the pipeline (`lmmbayes.pipeline`) and wraps its result
in a `Fit`, whose methods are thin delegations to the workflow
modules that own each job. This module is the top of the layers: it may
import every other one, and none imports it.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import fields
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import pipeline
from .errors import ConvergenceWarning, FitError
from .families import Family
from .priors import Prior, PriorSet, PriorTable, prior_table
from .results.model import FitResult
from .workflow import summary as _summary


class Fit(FitResult):
    """A fitted Bayesian mixed model, with brms's summaries, predictions and checks.

    Attributes
    ----------
    design : lmmbayes.design.Design
        The data as the model saw it (after dropping rows with missing values).
    priors : lmmbayes.priors.ResolvedPriors
        The prior of every parameter, user-set or default.
    family : lmmbayes.families.Family
    engine : str
        ``"joint"``, ``"collapsed"`` or ``"prior"`` (draws from the prior).
    config : SamplerConfig
        Chains, draws, tune, seed, target_accept and sampler used.
    idata : xarray.DataTree
        ArviZ DataTree with groups ``posterior`` (brms-named blocks),
        ``sample_stats`` and ``observed_data``.
    timings : dict
        Seconds per stage.
    """

    @classmethod
    def of(cls, result: FitResult) -> Fit:
        """The Fit of a pipeline result."""
        return cls(**{f.name: getattr(result, f.name) for f in fields(FitResult)})

    # -- tables ------------------------------------------------------------------------
    @property
    def categories(self) -> tuple[str, ...]:
        """Labels of a categorical response's values in coded order: an ordinal model's categories 1..K
        (``categories[k - 1]`` is category ``k`` of `posterior_predict`), or bernoulli's (failure, success);
        empty for other families."""
        return self.design.encoder.coding.levels

    def summary(self, prob: float = 0.95) -> _summary.Summary:
        """brms's summary: print it for the familiar layout, or use its tables.

        Parameters
        ----------
        prob : float
            Probability mass of the intervals (brms's ``prob``; 0.95 gives
            ``l-95% CI`` and ``u-95% CI``).
        """
        if prob == 0.95:
            return self._summary
        return _summary.build_summary(self, prob)

    @cached_property
    def _summary(self) -> _summary.Summary:
        return _summary.build_summary(self, 0.95)

    @property
    def warnings(self) -> tuple[str, ...]:
        """The sampler and convergence warnings shown under the summary."""
        return self._summary.warnings

    @cached_property
    def sampler_report(self) -> Any:
        """Divergences, max-tree-depth hits, E-BFMI and step size per chain."""
        from .workflow.diagnostics import sampler_report

        return sampler_report(self.idata["sample_stats"].to_dataset())

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

    def draws(self, *, include_random: bool = True, format: str = "wide") -> pd.DataFrame:
        """The posterior draws with brms's names (brms's ``as_draws_df``).

        Parameters
        ----------
        include_random : bool
            Include the random effects ``r_<group>[level,term]``.
        format : {"wide", "long"}
            ``"wide"``: one row per draw, one column per parameter, plus
            ``.chain``, ``.iteration`` and ``.draw``. ``"long"``: one row per
            draw and parameter with columns ``.chain, .iteration, .draw,
            .variable, .value`` (tidybayes's ``gather_draws`` shape).
        """
        from . import _validate as check
        from .results.posterior import flat_draws

        format = check.choice(format, "format", ("wide", "long"))
        names, arr = flat_draws(self.posterior, self.design, random=include_random)
        n_chain, n_draw = arr.shape[:2]
        meta = pd.DataFrame({".chain": np.repeat(np.arange(1, n_chain + 1), n_draw),
                             ".iteration": np.tile(np.arange(1, n_draw + 1), n_chain),
                             ".draw": np.arange(1, n_chain * n_draw + 1)})
        values = arr.reshape(n_chain * n_draw, -1)
        if format == "long":
            k = len(names)
            long = meta.loc[meta.index.repeat(k)].reset_index(drop=True)
            return long.assign(**{".variable": np.tile(np.asarray(names, dtype=object), len(meta)),
                                  ".value": values.ravel()})
        return pd.concat([pd.DataFrame(values, columns=names), meta], axis=1)

    as_draws_df = draws

    def ranef_draws(self, group: str | None = None) -> pd.DataFrame:
        """Draws of a grouping factor's random effects in long form (tidybayes's ``spread_draws(r_g[g, term])``).

        Parameters
        ----------
        group : str, optional
            A grouping factor; the first one by default.

        Returns
        -------
        pandas.DataFrame
            One row per draw, level and term: ``.chain, .iteration, .draw``,
            the factor's name (its level), ``term``, and ``r_<group>`` (the effect).

        Raises
        ------
        FitError
            An unknown grouping factor (listing the model's), or a model without one.
        """
        names = [f.name for f in self.design.factors]
        if not names:
            raise FitError("This model has no group-level terms, so no random effects to draw.")
        group = names[0] if group is None else group
        if group not in names:
            raise FitError(f"ranef_draws: the model has no grouping factor {group!r}; its factors are {names}.")
        f = self.design.factors[names.index(group)]
        r = self.posterior[f"r_{group}"].values  # (chain, draw, level, term)
        C, D, L, Q = r.shape
        chain = np.repeat(np.arange(1, C + 1), D * L * Q)
        iteration = np.tile(np.repeat(np.arange(1, D + 1), L * Q), C)
        return pd.DataFrame({".chain": chain, ".iteration": iteration, ".draw": (chain - 1) * D + iteration,
                             group: np.tile(np.repeat(np.asarray(f.levels, dtype=object), Q), C * D),
                             "term": np.tile(np.asarray(f.terms, dtype=object), C * D * L),
                             f"r_{group}": r.ravel()})

    @property
    def ndraws(self) -> int:
        """Number of posterior draws, all chains together (brms's ``ndraws``)."""
        sizes = self.posterior.sizes
        return int(sizes["chain"] * sizes["draw"])

    def diagnostics(self, *, include_random: bool = True) -> Any:
        """Per-parameter R-hat, ESS and MCSE plus the sampler report (`Diagnostics`)."""
        from .workflow.diagnostics import diagnostics_table

        return diagnostics_table(self, include_random=include_random)

    def hypothesis(self, hypotheses: str | Sequence[str], class_: str | None = "b",
                   alpha: float = 0.05) -> Any:
        """brms's ``hypothesis()``: e.g. ``fit.hypothesis("Intercept - 25 * Days > 0")``.

        See `lmmbayes.workflow.hypothesis.hypothesis`: names take the ``class_``
        prefix (``"b"``: ``Days`` is ``b_Days``; None for full names such as
        ``sd_Subject__Days``); the strings are parsed by a closed grammar, never
        evaluated as code. Returns a `HypothesisResult` whose ``table`` has
        brms's columns and which prints as brms does. With
        ``sample_prior="yes"``, point hypotheses (``=``) get brms's
        Savage-Dickey evidence ratio.
        """
        from .workflow.hypothesis import hypothesis

        prior = self.prior_draws() if "prior" in self.idata.children else None
        return hypothesis(self.draws(), hypotheses, class_, alpha, prior=prior)

    def prior_draws(self) -> pd.DataFrame:
        """brms's ``prior_draws()``: the draws from the priors kept by ``sample_prior="yes"``.

        One column per parameter, brms names, as `draws` without the random
        effects; NaN for parameters whose prior is flat (and those derived from
        them, e.g. ``b_Intercept`` under a flat prior on a slope).

        Raises
        ------
        FitError
            If the fit was made without ``sample_prior="yes"``.
        """
        from .results.posterior import flat_draws

        if "prior" not in self.idata.children:
            raise FitError('This fit holds no prior draws: fit with sample_prior="yes" to keep them.')
        names, arr = flat_draws(self.idata["prior"].to_dataset(), self.design, random=False)
        return pd.DataFrame(arr.reshape(-1, arr.shape[-1]), columns=names)

    # -- prediction ----------------------------------------------------------------------
    def posterior_linpred(self, newdata: Any = None, *, transform: bool = False,
                          include_groups: bool | str | Sequence[str] = True, allow_new_levels: bool = False,
                          sample_new_levels: str = "uncertainty", draws: int | Sequence[int] | None = None,
                          seed: int | None = None) -> np.ndarray:
        """Draws of the linear predictor, (draws, rows); see `lmmbayes.workflow.predict.posterior_linpred`."""
        from .workflow.predict import posterior_linpred

        return posterior_linpred(self, newdata, transform=transform, include_groups=include_groups,
                                 allow_new_levels=allow_new_levels, sample_new_levels=sample_new_levels,
                                 draws=draws, seed=seed)

    def posterior_epred(self, newdata: Any = None, *, include_groups: bool | str | Sequence[str] = True,
                        allow_new_levels: bool = False, sample_new_levels: str = "uncertainty",
                        draws: int | Sequence[int] | None = None, seed: int | None = None) -> np.ndarray:
        """Draws of the expected response, (draws, rows); see `lmmbayes.workflow.predict.posterior_epred`."""
        from .workflow.predict import posterior_epred

        return posterior_epred(self, newdata, include_groups=include_groups, allow_new_levels=allow_new_levels,
                               sample_new_levels=sample_new_levels, draws=draws, seed=seed)

    def posterior_predict(self, newdata: Any = None, *, include_groups: bool | str | Sequence[str] = True,
                          allow_new_levels: bool = False, sample_new_levels: str = "uncertainty",
                          draws: int | Sequence[int] | None = None, seed: int | None = None) -> np.ndarray:
        """Draws of new observations, (draws, rows); see `lmmbayes.workflow.predict.posterior_predict`."""
        from .workflow.predict import posterior_predict

        return posterior_predict(self, newdata, include_groups=include_groups, allow_new_levels=allow_new_levels,
                                 sample_new_levels=sample_new_levels, draws=draws, seed=seed)

    def predict(self, newdata: Any = None, *, probs: tuple[float, ...] = (0.025, 0.975),
                include_groups: bool | str | Sequence[str] = True, allow_new_levels: bool = False,
                sample_new_levels: str = "uncertainty", draws: int | Sequence[int] | None = None,
                seed: int | None = None) -> pd.DataFrame:
        """Per-row summary of posterior_predict (brms's ``predict``): Estimate, Est.Error, Q2.5, Q97.5."""
        from .workflow.predict import predict

        return predict(self, newdata, probs=probs, include_groups=include_groups, allow_new_levels=allow_new_levels,
                       sample_new_levels=sample_new_levels, draws=draws, seed=seed)

    def fitted(self, newdata: Any = None, *, probs: tuple[float, ...] = (0.025, 0.975),
               include_groups: bool | str | Sequence[str] = True, allow_new_levels: bool = False,
               sample_new_levels: str = "uncertainty", draws: int | Sequence[int] | None = None,
               seed: int | None = None) -> pd.DataFrame:
        """Per-row summary of posterior_epred (brms's ``fitted``): Estimate, Est.Error, Q2.5, Q97.5."""
        from .workflow.predict import fitted

        return fitted(self, newdata, probs=probs, include_groups=include_groups, allow_new_levels=allow_new_levels,
                      sample_new_levels=sample_new_levels, draws=draws, seed=seed)

    # -- after the fit: effects and marginal summaries ------------------------------------------
    def conditional_effects(self, effects: str | Sequence[str] | None = None, *, conditions: Any = None,
                            include_groups: bool | str | Sequence[str] = False, prob: float = 0.95,
                            method: str = "posterior_epred", resolution: int = 100, seed: int | None = None,
                            categorical: bool = False) -> Any:
        """brms's ``conditional_effects``; see `lmmbayes.workflow.effects.conditional_effects`.

        Returns a `ConditionalEffects`: ``ce["Days"]`` is brms's table
        (``estimate__``, ``se__``, ``lower__``, ``upper__``, ...), ``ce.plot()`` the figures.
        ``categorical=True`` (ordinal and categorical responses) gives one estimate per
        category (column ``cats__``), as brms.
        """
        from .workflow.effects import conditional_effects

        return conditional_effects(self, effects, conditions=conditions, include_groups=include_groups, prob=prob,
                                   method=method, resolution=resolution, seed=seed, categorical=categorical)

    def avg_predictions(self, *, by: str | Sequence[str] | None = None, newdata: Any = None,
                        include_groups: bool | str | Sequence[str] = True, prob: float = 0.95,
                        allow_new_levels: bool = False, sample_new_levels: str = "uncertainty",
                        seed: int | None = None) -> pd.DataFrame:
        """marginaleffects's ``avg_predictions``; see `lmmbayes.workflow.margins.avg_predictions`."""
        from .workflow.margins import avg_predictions

        return avg_predictions(self, by=by, newdata=newdata, include_groups=include_groups, prob=prob,
                               allow_new_levels=allow_new_levels, sample_new_levels=sample_new_levels, seed=seed)

    def avg_comparisons(self, variables: str | Sequence[str] | None = None, *,
                        by: str | Sequence[str] | None = None, newdata: Any = None, comparison: str = "difference",
                        include_groups: bool | str | Sequence[str] = True, prob: float = 0.95,
                        allow_new_levels: bool = False, sample_new_levels: str = "uncertainty",
                        seed: int | None = None) -> pd.DataFrame:
        """marginaleffects's ``avg_comparisons``; see `lmmbayes.workflow.margins.avg_comparisons`."""
        from .workflow.margins import avg_comparisons

        return avg_comparisons(self, variables, by=by, newdata=newdata, comparison=comparison,
                               include_groups=include_groups, prob=prob, allow_new_levels=allow_new_levels,
                               sample_new_levels=sample_new_levels, seed=seed)

    def avg_slopes(self, variables: str | Sequence[str] | None = None, *, by: str | Sequence[str] | None = None,
                   newdata: Any = None, eps: float | None = None, include_groups: bool | str | Sequence[str] = True,
                   prob: float = 0.95, allow_new_levels: bool = False, sample_new_levels: str = "uncertainty",
                   seed: int | None = None) -> pd.DataFrame:
        """marginaleffects's ``avg_slopes``; see `lmmbayes.workflow.margins.avg_slopes`."""
        from .workflow.margins import avg_slopes

        return avg_slopes(self, variables, by=by, newdata=newdata, eps=eps, include_groups=include_groups,
                          prob=prob, allow_new_levels=allow_new_levels, sample_new_levels=sample_new_levels,
                          seed=seed)

    def plot_predictions(self, condition: str | Sequence[str] | None = None,
                         by: str | Sequence[str] | None = None, *, newdata: Any = None,
                         include_groups: bool | str | Sequence[str] = True, prob: float = 0.95,
                         allow_new_levels: bool = False, sample_new_levels: str = "uncertainty",
                         seed: int | None = None) -> Any:
        """marginaleffects's ``plot_predictions``; see `lmmbayes.workflow.margins.plot_predictions`."""
        from .workflow.margins import plot_predictions

        return plot_predictions(self, condition, by, newdata=newdata, include_groups=include_groups, prob=prob,
                                allow_new_levels=allow_new_levels, sample_new_levels=sample_new_levels, seed=seed)

    def plot_comparisons(self, variables: str, *, condition: str | Sequence[str] | None = None,
                         by: str | Sequence[str] | None = None, newdata: Any = None, comparison: str = "difference",
                         include_groups: bool | str | Sequence[str] = True, prob: float = 0.95,
                         allow_new_levels: bool = False, sample_new_levels: str = "uncertainty",
                         seed: int | None = None) -> Any:
        """marginaleffects's ``plot_comparisons``; see `lmmbayes.workflow.margins.plot_comparisons`."""
        from .workflow.margins import plot_comparisons

        return plot_comparisons(self, variables, condition=condition, by=by, newdata=newdata, comparison=comparison,
                                include_groups=include_groups, prob=prob, allow_new_levels=allow_new_levels,
                                sample_new_levels=sample_new_levels, seed=seed)

    def plot_slopes(self, variables: str, *, condition: str | Sequence[str] | None = None,
                    by: str | Sequence[str] | None = None, newdata: Any = None, eps: float | None = None,
                    include_groups: bool | str | Sequence[str] = True, prob: float = 0.95,
                    allow_new_levels: bool = False, sample_new_levels: str = "uncertainty",
                    seed: int | None = None) -> Any:
        """marginaleffects's ``plot_slopes``; see `lmmbayes.workflow.margins.plot_slopes`."""
        from .workflow.margins import plot_slopes

        return plot_slopes(self, variables, condition=condition, by=by, newdata=newdata, eps=eps,
                           include_groups=include_groups, prob=prob, allow_new_levels=allow_new_levels,
                           sample_new_levels=sample_new_levels, seed=seed)

    def emmeans(self, specs: str | Sequence[str], *, by: str | Sequence[str] | None = None, type: str = "link",
                prob: float = 0.95, at: dict[str, Any] | None = None, contrast: str | None = None,
                ref: str | None = None) -> Any:
        """emmeans's estimated marginal means; see `lmmbayes.workflow.margins.emmeans`.

        ``specs`` is a name, a list of names or emmeans's formula (``"~ f1 | f2"``,
        ``"pairwise ~ f1"``). Returns an `Emmeans` whose ``table`` prints as emmeans
        does, whose ``contrast(method)`` gives emmeans's contrast families
        (``pairs()`` the pairwise ones, within each level of ``by``) and whose
        ``contrasts`` is the table of ``contrast=`` (or the formula's left side).
        """
        from .workflow.margins import emmeans

        return emmeans(self, specs, by=by, type=type, prob=prob, at=at, contrast=contrast, ref=ref)

    # -- checking and comparison ------------------------------------------------------------
    def log_lik(self, *, chunk_size: int | None = None) -> np.ndarray:
        """Pointwise log-likelihood, (chain, draw, observation), computed on demand."""
        from .workflow.loglik import log_lik

        return log_lik(self, chunk_size=chunk_size)

    def loo(self, *, label: str | None = None, moment_match: bool = False, k_threshold: float | None = None,
            max_iters: int = 30, split: bool = True, cov: bool = True) -> Any:
        """PSIS-LOO (arviz-stats) from the pointwise log-likelihood; see `lmmbayes.workflow.compare.loo`.

        ``moment_match=True`` is brms's ``loo(fit, moment_match = TRUE)``: observations with a high
        Pareto k are moment matched (Paananen et al. 2021) on the joint posterior density.
        """
        from .workflow.compare import loo

        return loo(self, label=label, moment_match=moment_match, k_threshold=k_threshold, max_iters=max_iters,
                   split=split, cov=cov)

    def update(self, newdata: Any = None, formula: str | None = None, priors: Any = None,
               **sampling: Any) -> Fit:
        """brms's ``update``: refit with a new formula (``". ~ . + x"``), data, priors or sampling settings.

        See `lmmbayes.workflow.refit.update`. Warnings of the new fit are
        reported as `fit` reports them.
        """
        from .workflow.refit import update

        result = Fit.of(update(self, newdata, formula, priors, **sampling))
        for text in result.warnings:
            warnings.warn(text, ConvergenceWarning, stacklevel=2)
        return result

    def kfold(self, K: int = 10, *, folds: Any = None, group: str | None = None, data: Any = None,
              seed: int | None = None, chains: int | None = None, draws: int | None = None,
              tune: int | None = None) -> Any:
        """brms's ``kfold``: refit without each of K folds; see `lmmbayes.workflow.kfold.kfold`."""
        from .workflow.kfold import kfold

        return kfold(self, K, folds=folds, group=group, data=data, seed=seed, chains=chains, draws=draws, tune=tune)

    def bridge_sampler(self, *, seed: int | None = None, maxiter: int = 1000, tol: float = 1e-10,
                       use_neff: bool = True) -> Any:
        """brms's ``bridge_sampler``: the log marginal likelihood by bridge sampling.

        See `lmmbayes.workflow.bridge.bridge_sampler`. Every parameter needs a
        proper prior (brms's flat default on ``b`` is refused). On the
        collapsed engine the random effects are integrated out exactly and the
        bridge runs over the hyperparameters only, which makes it unusually accurate.
        """
        from .workflow.bridge import bridge_sampler

        return bridge_sampler(self, seed=seed, maxiter=maxiter, tol=tol, use_neff=use_neff)

    def bayes_factor(self, other: FitResult, *, log: bool = False, names: tuple[str, str] | None = None,
                     seed: int | None = None, maxiter: int = 1000, tol: float = 1e-10,
                     use_neff: bool = True) -> Any:
        """brms's ``bayes_factor``: this fit over ``other`` by bridge sampling.

        See `lmmbayes.workflow.bridge.bayes_factor`; prints as brms
        (``Estimated Bayes factor in favor of fit1 over fit2: 12.34000``) and has
        fields ``bf`` and ``log_bf``.
        """
        from .workflow.bridge import bayes_factor

        return bayes_factor(self, other, log=log, names=names, seed=seed, maxiter=maxiter, tol=tol,
                            use_neff=use_neff)

    def waic(self) -> Any:
        """WAIC from the pointwise log-likelihood; see `lmmbayes.workflow.compare.waic`."""
        from .workflow.compare import waic

        return waic(self)

    def bayes_r2(self, *, method: str = "model", include_groups: Any = True,
                 probs: tuple[float, ...] = (0.025, 0.975)) -> pd.DataFrame:
        """Bayesian R² (Gelman, Goodrich, Gabry and Vehtari 2019); see `lmmbayes.workflow.compare.bayes_r2`."""
        from .workflow.compare import bayes_r2

        return bayes_r2(self, method=method, include_groups=include_groups, probs=probs)

    def pp_check(self, kind: str | None = None, ndraws: int | None = 50, *, stat: Any = "mean",
                 seed: int | None = None, group: str | None = None) -> Any:
        """Posterior predictive check figure (bayesplot's kinds); see `lmmbayes.workflow.checks.pp_check`."""
        from .workflow.checks import pp_check

        return pp_check(self, kind=kind, ndraws=ndraws, stat=stat, seed=seed, group=group)

    def plot(self, kind: str = "trace", **kwargs: Any) -> Any:
        """brms's ``mcmc_plot``: kind is trace, rank, acf, parallel, pairs, energy, forest or ranef."""
        from .workflow import mcmc_plots

        return mcmc_plots.plot(self, kind, **kwargs)

    mcmc_plot = plot

    def save(self, path: Any) -> Path:
        """Write the fit to one file and return its path; `lmmbayes.load` restores it."""
        from .results.files import save

        return save(self, path)

    def __repr__(self) -> str:
        return (f"<lmmbayes.Fit {self.formula!r}: {self.family.name}, {self.nobs} observations, {self.engine} engine, "
                f"{self.config.chains} x {self.config.draws} draws>")

    def _repr_html_(self) -> str:
        return self.summary()._repr_html_()


def fit(
    formula: str,
    data: Any,
    priors: Prior | PriorSet | Iterable[Prior] | None = None,
    *,
    family: str | Family = "gaussian",
    chains: int = 4,
    draws: int = 1000,
    tune: int = 1000,
    seed: int | None = None,
    target_accept: float | None = None,
    progress: bool = True,
    method: str = "auto",
    sampler: str = "nutpie",
    sample_prior: str = "no",
) -> Fit:
    """Fit a Bayesian (generalised) linear mixed model, brms style.

    Parameters
    ----------
    formula : str
        lme4/brms syntax, e.g. ``"y ~ x + (1 + x | g)"``; addition terms
        ``y | trials(n)``, ``y | weights(w)``, ``y | se(s)`` and ``offset(z)``
        as in brms. Formulas are data: only the data's columns and the
        allow-listed functions are reachable from them.
    data : pandas.DataFrame, polars.DataFrame or dask.dataframe.DataFrame
        Never modified. Rows with missing values in the formula's columns
        are dropped with a warning (their labels: ``Fit.dropped_rows``).
        A Dask frame is reduced to cross-products partition by partition and
        fitted by the collapsed engine.
    priors : Prior, sum of priors or list of priors, optional
        See `lmmbayes.prior`; everything else gets brms's defaults.
    family : str or Family
        A family name (``"gaussian"``...) or ``lmmbayes.family(name, link=...)``.
    chains, draws, tune : int
        Number of chains, post-warmup draws per chain and warmup draws.
    seed : int, optional
        Makes the fit reproducible draw for draw.
    target_accept : float, optional
        NUTS's target acceptance (brms's ``adapt_delta``). None takes the
        engine's default: 0.8 for the joint engine, as brms; 0.95 for the
        collapsed engine, whose log-sd of a variance near zero has an
        exponential tail that at 0.8 sent about one trajectory in 4000 into a
        divergence (none in 60 x 4000 draws at 0.95).
    progress : bool
        Show the sampler's progress bar.
    method : {"auto", "collapsed", "joint"}
        The engine. ``"collapsed"`` integrates the random effects out and
        samples only the population-level effects, σ, the sd's and
        correlations, then draws the random effects exactly (Gaussian models
        with one grouping factor or two nested ones); ``"joint"`` samples
        every random effect (non-centred). ``"auto"`` picks collapsed where it
        applies (always for Dask data), joint otherwise.
    sampler : {"nutpie", "pymc"}
        nutpie (Rust NUTS, default) or PyMC's own NUTS.
    sample_prior : {"no", "yes", "only"}
        ``"yes"`` keeps as many draws from the priors beside the posterior
        (``fit.prior_draws()``; parameters with flat priors are NaN there),
        which ``hypothesis`` uses for Savage-Dickey evidence ratios of point
        hypotheses, as brms's ``sample_prior = "yes"``. ``"only"`` skips NUTS
        and returns a Fit whose draws come from the priors alone (one chain
        of ``draws``), as brms's ``sample_prior = "only"``; every parameter
        then needs a proper prior.

    Returns
    -------
    Fit

    Raises
    ------
    FormulaError, DataError, PriorError, FitError
        Naming the culprit and what would be valid.

    Warns
    -----
    ConvergenceWarning
        Divergences, R-hat above 1.05, tree-depth hits, low E-BFMI, low ESS.
    DataWarning
        Rows dropped for missing values, unused categories, collinear columns.
    """
    opts = pipeline.options(family=family, chains=chains, draws=draws, tune=tune, seed=seed,
                            target_accept=target_accept, progress=progress, method=method, sampler=sampler,
                            sample_prior=sample_prior)
    result = Fit.of(pipeline.run(formula, data, priors, opts, data_name=pipeline.data_name_of(data)))
    for text in result.warnings:
        warnings.warn(text, ConvergenceWarning, stacklevel=2)
    return result


def get_prior(formula: str, data: Any, family: str | Family = "gaussian") -> PriorTable:
    """Every parameter a prior can be set on, with brms's data-scaled default.

    Parameters
    ----------
    formula : str
    data : pandas.DataFrame, polars.DataFrame or dask.dataframe.DataFrame
    family : str or Family

    Returns
    -------
    pandas.DataFrame
        Columns ``prior, class, coef, group, source``. Printing it adds a
        note on brms's centred-intercept convention.
    """
    fam = pipeline.options(family=family).family
    return prior_table(pipeline.design_of(formula, data, fam, fitting=False))


default_prior = get_prior


def load(path: Any) -> Fit:
    """Read a fit written by `Fit.save`; the original data frame is not needed.

    Loading never evaluates or unpickles anything from the file: it is JSON
    checked against a schema, and numeric arrays whose types are allow-listed.

    Raises
    ------
    FitFileError
        If the path is not a readable lmmbayes fit file, or the file is
        malformed, corrupted, or written by a newer or older format.
    """
    from .results.files import load as _load

    return Fit.of(_load(path))


def loo_compare(*fits: Any, names: list[str] | None = None, moment_match: bool = False) -> pd.DataFrame:
    """Compare models fitted to the same data by PSIS-LOO (fits or their `loo` results), or their `kfold`
    results (brms's ``loo_compare``).

    See `lmmbayes.workflow.compare.loo_compare`.
    """
    from .workflow.compare import loo_compare as _compare

    return _compare(*fits, names=names, moment_match=moment_match)


__all__ = ["Fit", "default_prior", "fit", "get_prior", "load", "loo_compare"]
