"""Predictive model checking and comparison: PSIS-LOO, WAIC, ``loo_compare`` and Bayesian R²,
as brms's ``loo``, ``waic``, ``loo_compare`` and ``bayes_R2``.

``loo`` hands arviz-stats the whole draws x rows log-likelihood while it stays
under 2**26 values (512 MB); beyond that, and for every fit of a Dask
DataFrame, it goes over the rows in chunks with the Pareto smoothing
vectorised over rows (`.psis`): the same elpd, p_loo and Pareto k for
every row, without the draws x rows matrix.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from scipy.special import logsumexp

from .. import _validate as check
from ..design import Rows
from ..errors import (
    DataError,
    FitError,
    LmmbayesError,
    LmmbayesWarning,
    ParetoKWarning,
    WAICWarning,
    warn,
)
from ..results.model import FitResult, same_data
from .loglik import PointwiseLogLik, evaluator, log_lik
from .psis import loo_pointwise

#: Pareto k above which PSIS-LOO is unreliable for an observation (Vehtari et al. 2024).
PARETO_K_LIMIT = 0.7
#: p_waic of one observation above which WAIC is unreliable (the loo package's rule).
P_WAIC_LIMIT = 0.4
#: Largest (draws x rows) log-likelihood matrix (512 MB) that loo() builds whole for a fit in
#: memory, to hand arviz-stats; a larger one goes in row chunks through `.psis`.
WHOLE_MATRIX = 2**26


def _terms(kind: str, reff: float) -> Any:
    def fn(ll: np.ndarray) -> tuple[np.ndarray, ...]:
        if kind == "waic":
            return logsumexp(ll, axis=0) - math.log(ll.shape[0]), ll.var(axis=0, ddof=1)
        return loo_pointwise(ll, reff)
    return fn


@dataclass(frozen=True, eq=False)
class _PartitionTerms:
    """Pointwise LOO or WAIC terms of one partition's encoded rows (shipped to Dask workers)."""

    ev: PointwiseLogLik
    kind: str
    reff: float

    def __call__(self, rows: Rows) -> tuple[np.ndarray, ...]:
        return self.ev.reduce(rows, _terms(self.kind, self.reff))


def _concat(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    return tuple(np.concatenate([x, y]) for x, y in zip(a, b))


def _pointwise(fit: FitResult, kind: str, what: str) -> tuple[np.ndarray, ...]:
    """Per-row LOO terms (elpd_i, Pareto k, p_loo_i) or WAIC terms (lppd_i, p_waic_i), in row chunks."""
    reff = relative_efficiency(fit) if kind == "loo" else 1.0
    ev = evaluator(fit)
    if fit.design.rows is not None:
        return ev.reduce(fit.design.rows, _terms(kind, reff))
    reduced = fit.design.reduced
    source = None if reduced is None else reduced.source
    if source is None:
        raise FitError(f"{what} of a fit made from a Dask DataFrame goes over the rows again, on the Dask frame the "
                       "fit was made from; this fit was read from a file and does not have it. Refit from the Dask "
                       "frame, or compare models on the data in memory.")
    empty = tuple(np.zeros(0) for _ in range(3 if kind == "loo" else 2))
    return source.map_rows(_PartitionTerms(ev, kind, reff), empty, _concat)


def relative_efficiency(fit: FitResult) -> float:
    """PSIS's r_eff as ``arviz_stats.loo`` computes it: mean ESS over all posterior values / draws."""
    import arviz_stats  # noqa: F401  (registers the .azstats accessor)

    posterior = fit.posterior
    if fit.n_chains == 1:
        return 1.0
    ess = posterior.azstats.ess(method="mean")
    return float(np.hstack([ess[v].values.ravel() for v in ess.data_vars]).mean() / fit.n_draws)


def _loo_in_chunks(fit: FitResult) -> Any:
    from arviz_stats.base import array_stats
    from arviz_stats.utils import ELPDDataLOO

    elpd_i, pareto_k, p_loo_i = _pointwise(fit, "loo", "PSIS-LOO")
    total = fit.n_draws
    elpd, se, p_loo, _ = array_stats.loo_summary(elpd_i, p_loo_i)
    good_k = min(1 - 1 / np.log10(total), 0.7) if total > 1 else 0.7
    obs = {"obs": np.arange(elpd_i.size)}
    return ELPDDataLOO(
        elpd=float(elpd), se=float(se), p=float(p_loo), n_samples=total, n_data_points=int(elpd_i.size),
        scale="log", warning=bool((pareto_k > good_k).any()), good_k=good_k,
        elpd_i=xr.DataArray(elpd_i, dims=["obs"], coords=obs), pareto_k=xr.DataArray(pareto_k, dims=["obs"], coords=obs),
        approx_posterior=False, p_loo_i=xr.DataArray(p_loo_i, dims=["obs"], coords=obs),
    )


def _log_lik_tree(fit: FitResult, ll: np.ndarray) -> xr.DataTree:
    """A temporary DataTree with posterior, log_likelihood and observed_data groups."""
    n_chain, n_draw, n = ll.shape
    coords = {"chain": np.arange(n_chain), "draw": np.arange(n_draw), "obs": np.arange(n)}
    return xr.DataTree.from_dict({
        "posterior": fit.posterior,
        "log_likelihood": xr.Dataset({"y": (("chain", "draw", "obs"), ll)}, coords=coords),
        "observed_data": xr.Dataset({"y": (("obs",), fit.design.y)}, coords={"obs": coords["obs"]}),
    })


def loo(fit: FitResult, *, label: str | None = None, moment_match: bool = False, k_threshold: float | None = None,
        max_iters: int = 30, split: bool = True, cov: bool = True) -> Any:
    """PSIS-LOO cross-validation (Vehtari, Gelman and Gabry 2017) with arviz-stats.

    Parameters
    ----------
    fit : Fit
    label : str, optional
        Name of the model in the warning (default: its formula).
    moment_match : bool
        brms's ``moment_match = TRUE``: observations whose Pareto k exceeds
        ``k_threshold`` are importance-sampled again from draws moved by moment
        matching (Paananen et al. 2021; arviz-stats's ``loo_moment_match``) on
        the joint posterior over every parameter (`lmmbayes.workflow.moment_match`).
        Needs the fitted rows in memory.
    k_threshold : float, optional
        Pareto k above which an observation is moment matched; default the loo
        package's ``min(1 - 1 / log10(S), 0.7)`` for S draws.
    max_iters : int
        Most moment-matching steps per observation (the loo package's 30).
    split, cov : bool
        The loo package's options: importance-sample half of the draws moved
        and half unmoved (split), and match covariances as well as means and
        variances (cov, only with at least 10 draws per parameter).

    Returns
    -------
    arviz_stats.ELPDDataLOO
        ``elpd`` (elpd_loo), ``se``, ``p`` (p_loo), pointwise ``elpd_i`` and
        ``pareto_k``; printing it gives the loo package's table. After moment
        matching ``influence_pareto_k`` holds the Pareto k before it.

    Raises
    ------
    LmmbayesError
        Fewer than 25 posterior draws (PSIS smooths a tail of at least 5).
    FitError
        Moment matching of a fit without its rows (Dask input) or of prior draws.

    Warns
    -----
    ParetoKWarning
        When some observations have Pareto k above 0.7 (after moment matching, if
        asked), naming the model and how many.
    """
    from arviz_stats import loo as az_loo

    total = fit.n_draws
    if total < 25:
        raise LmmbayesError(f"PSIS-LOO needs at least 25 posterior draws (chains x draws); this fit has {total}. "
                            "Refit with more draws.")
    moment_match = check.flag(moment_match, "moment_match")
    if k_threshold is not None:
        k_threshold = check.real(k_threshold, "k_threshold")
    max_iters = check.count(max_iters, "max_iters")
    split, cov = check.flag(split, "split"), check.flag(cov, "cov")
    if moment_match:
        from .moment_match import check_matchable

        check_matchable(fit)
    with warnings.catch_warnings(), np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")  # arviz-stats warns without naming the model; lmmbayes warns below instead
        # moment matching needs the whole matrix (arviz-stats reads it); its joint density needs the rows anyway
        if fit.design.rows is not None and (moment_match or total * fit.design.n_obs <= WHOLE_MATRIX):
            tree = _log_lik_tree(fit, log_lik(fit))
            result = az_loo(tree, pointwise=True, var_name="y")
            limit = (min(1 - 1 / math.log10(total), PARETO_K_LIMIT) if k_threshold is None else k_threshold)
            if moment_match and bool((np.asarray(result.pareto_k) > limit).any()):
                from .moment_match import moment_match as match

                result = match(fit, tree, result, k_threshold=k_threshold, max_iters=max_iters, split=split, cov=cov)
        else:
            result = _loo_in_chunks(fit)
    # loo_compare checks that results it is given are of the same data
    result.fingerprint = fit.design.stats.fingerprint
    k = np.asarray(result.pareto_k).reshape(-1)
    high = int((k > PARETO_K_LIMIT).sum())
    if high:
        hint = ("even after moment matching; consider K-fold cross-validation" if moment_match
                else "consider moment matching (loo(moment_match=True)) or K-fold cross-validation")
        warn(f"Model {label or repr(fit.formula)}: {high} of {k.size} observations have Pareto k > {PARETO_K_LIMIT}, "
             f"so PSIS-LOO is unreliable for them; {hint}.", ParetoKWarning)
    return result


@dataclass(frozen=True)
class WAIC:
    """The widely applicable information criterion (Watanabe 2010), loo-package style.

    Attributes
    ----------
    elpd_waic, se_elpd_waic, p_waic, se_p_waic, waic, se_waic : float
    n_samples, n_data_points : int
    pointwise : pandas.DataFrame
        Columns ``elpd_waic``, ``p_waic``, ``waic``, one row per observation.
    """

    elpd_waic: float
    se_elpd_waic: float
    p_waic: float
    se_p_waic: float
    waic: float
    se_waic: float
    n_samples: int
    n_data_points: int
    pointwise: pd.DataFrame

    @property
    def elpd(self) -> float:
        return self.elpd_waic

    @property
    def se(self) -> float:
        return self.se_elpd_waic

    @property
    def p(self) -> float:
        return self.p_waic

    def estimates(self) -> pd.DataFrame:
        """brms's ``waic(fit)$estimates``: Estimate and SE of elpd_waic, p_waic, waic."""
        return pd.DataFrame({"Estimate": [self.elpd_waic, self.p_waic, self.waic],
                             "SE": [self.se_elpd_waic, self.se_p_waic, self.se_waic]},
                            index=["elpd_waic", "p_waic", "waic"])

    def __str__(self) -> str:
        table = self.estimates().to_string(float_format=lambda v: f"{v:.1f}")
        return f"Computed from {self.n_samples} by {self.n_data_points} log-likelihood matrix.\n\n{table}"


def waic(fit: FitResult) -> WAIC:
    """WAIC from the pointwise log-likelihood, as the loo package computes it.

    ``lppd_i = log mean_s exp(ll_si)``, ``p_waic_i = var_s(ll_si)``,
    ``elpd_waic = sum_i (lppd_i - p_waic_i)`` with ``SE = sqrt(N var_i(elpd_i))``.

    Warns
    -----
    WAICWarning
        When some ``p_waic_i`` exceed 0.4 (WAIC unreliable; use `loo`).
    """
    lppd, p_i = _pointwise(fit, "waic", "WAIC")
    n_samples, n = fit.n_draws, lppd.size
    elpd_i = lppd - p_i
    root_n = math.sqrt(n)
    se_elpd = float(root_n * elpd_i.std(ddof=1)) if n > 1 else float("nan")
    se_p = float(root_n * p_i.std(ddof=1)) if n > 1 else float("nan")
    high = int((p_i > P_WAIC_LIMIT).sum())
    if high:
        warn(f"Model {fit.formula!r}: {high} of {n} observations have p_waic > {P_WAIC_LIMIT}; WAIC is unreliable "
             "for them, use loo() instead.", WAICWarning)
    pointwise = pd.DataFrame({"elpd_waic": elpd_i, "p_waic": p_i, "waic": -2 * elpd_i})
    elpd = float(elpd_i.sum())
    return WAIC(elpd, se_elpd, float(p_i.sum()), se_p, -2 * elpd, 2 * se_elpd, n_samples, n, pointwise)


def _named(fits: tuple[Any, ...], names: Any) -> tuple[list[str], list[Any]]:
    if len(fits) == 1 and isinstance(fits[0], dict):
        items = list(fits[0].items())
        if names is not None:
            raise LmmbayesError("loo_compare: give names either as the keys of a dict or with names=, not both.")
        return [str(k) for k, _ in items], [v for _, v in items]
    if len(fits) == 1 and isinstance(fits[0], (list, tuple)):
        fits = tuple(fits[0])
    fits_list = list(fits)
    if names is None:
        labels = [getattr(f, "formula", "?") for f in fits_list]
        return [lab if labels.count(lab) == 1 else f"{lab} [{k}]" for k, lab in enumerate(labels, start=1)], fits_list
    labels = [names] if isinstance(names, str) else list(names)
    if len(labels) != len(fits_list) or len(set(labels)) != len(labels) or not all(isinstance(n, str) for n in labels):
        raise LmmbayesError(f"names must give one distinct string per fit ({len(fits_list)} fits), got {names!r}.")
    return labels, fits_list


def loo_compare(*fits: Any, names: list[str] | None = None, moment_match: bool = False) -> pd.DataFrame:
    """Compare models fitted to the same data by PSIS-LOO, like brms's ``loo_compare``.

    Parameters
    ----------
    *fits : Fit, or one list or dict of fits
        Two or more fits of the same observations; a dict's keys name them.
        `kfold` results instead of fits compare by k-fold cross-validation
        (columns ``elpd_kfold``, ``se_elpd_kfold``, ``p_kfold``, ``kfoldic``).
        `loo` results (e.g. ``fit.loo(moment_match=True)``) may stand for fits,
        as the loo package's ``loo_compare`` takes loo objects.
    names : list of str, optional
        Row labels; default the formulas (or the dict's keys; ``model1``,
        ``model2``... for loo results).
    moment_match : bool
        Compute each fit's LOO with moment matching (see `loo`).

    Returns
    -------
    pandas.DataFrame
        Best model first. Columns ``elpd_diff`` (difference to the best, 0 for
        the best), ``se_diff`` (SE of the paired pointwise differences),
        ``elpd_loo``, ``se_elpd_loo``, ``p_loo``, ``looic``, ``se_looic`` and
        ``n_high_k`` (observations with Pareto k > 0.7). It prints whole.

    Raises
    ------
    LmmbayesError
        Fewer than two fits, or names that do not match them.
    DataError
        Fits of different data (different numbers of observations or responses),
        whatever the engine.
    """
    labels, items = _named(fits, names)
    if len(items) < 2:
        raise LmmbayesError(f"loo_compare needs at least two fits to compare, got {len(items)}.")
    from .kfold import KFold

    if all(isinstance(f, KFold) for f in items):
        return _compare_kfold(labels, items)
    from arviz_stats.utils import ELPDDataLOO

    bad = [type(f).__name__ for f in items if not isinstance(f, (FitResult, ELPDDataLOO))]
    if bad:
        raise LmmbayesError(f"loo_compare takes lmmbayes Fit objects or their loo() results, got {bad}.")
    if names is None and not isinstance(fits[0], dict):
        labels = [lab if isinstance(f, FitResult) else f"model{k}" for k, (lab, f) in enumerate(zip(labels, items), 1)]
    moment_match = check.flag(moment_match, "moment_match")
    fitted = [(lab, f) for lab, f in zip(labels, items) if isinstance(f, FitResult)]
    for label, f in fitted[1:]:  # before any LOO is computed
        _refuse(label, fitted[0][0], f, fitted[0][1])
    results = [loo(f, label=f"'{lab}'", moment_match=moment_match) if isinstance(f, FitResult) else f
               for lab, f in zip(labels, items)]
    for label, r in zip(labels[1:], results[1:]):
        _refuse(label, labels[0], r, results[0])
    elpd_i = [np.asarray(r.elpd_i).reshape(-1) for r in results]
    best = int(np.argmax([r.elpd for r in results]))
    n = elpd_i[0].size
    rows = []
    for label, r, e in zip(labels, results, elpd_i):
        diff = e - elpd_i[best]
        se_diff = float(math.sqrt(n) * diff.std(ddof=1)) if n > 1 else float("nan")
        k = np.asarray(r.pareto_k).reshape(-1)
        rows.append({"elpd_diff": float(diff.sum()), "se_diff": se_diff, "elpd_loo": float(r.elpd),
                     "se_elpd_loo": float(r.se), "p_loo": float(r.p), "looic": -2 * float(r.elpd),
                     "se_looic": 2 * float(r.se), "n_high_k": int((k > PARETO_K_LIMIT).sum())})
    table = CompareTable(rows, index=pd.Index(labels, name="model"))
    order = np.argsort(-table["elpd_loo"].to_numpy(), kind="stable")
    return table.iloc[order]


def _refuse(label: str, ref_label: str, a: Any, b: Any) -> None:
    """Raise `DataError` unless two fits, or two loo results (which know their data's fingerprint), share data."""
    if isinstance(a, FitResult):
        if same_data(a, b):
            return
        what = (f"{a.nobs} vs {b.nobs} observations" if a.nobs != b.nobs
                else "the same number of observations but different responses")
    elif a.n_data_points != b.n_data_points:
        what = f"{a.n_data_points} vs {b.n_data_points} observations"
    elif getattr(a, "fingerprint", None) != getattr(b, "fingerprint", None):
        what = "the same number of observations but different responses"
    else:
        return
    raise DataError(f"loo_compare needs models fitted to the same data: '{label}' and '{ref_label}' were "
                    f"fitted to different data ({what}; e.g. other rows dropped for missing values).")


def _compare_kfold(labels: list[str], results: list[Any]) -> pd.DataFrame:
    """loo_compare of `kfold` results: the same table with brms's ``elpd_kfold`` columns."""
    ref = results[0]
    for label, r in zip(labels[1:], results[1:]):
        if r.fingerprint != ref.fingerprint or r.elpd_i.size != ref.elpd_i.size:
            raise DataError(f"loo_compare needs k-fold results of the same data: '{label}' and '{labels[0]}' differ.")
    best = int(np.argmax([r.elpd for r in results]))
    n = ref.elpd_i.size
    rows = []
    for r in results:
        diff = r.elpd_i - results[best].elpd_i
        rows.append({"elpd_diff": float(diff.sum()), "se_diff": float(math.sqrt(n) * diff.std(ddof=1)),
                     "elpd_kfold": r.elpd, "se_elpd_kfold": r.se, "p_kfold": r.p, "kfoldic": r.kfoldic,
                     "se_kfoldic": 2 * r.se})
    table = CompareTable(rows, index=pd.Index(labels, name="model"))
    return table.iloc[np.argsort(-table["elpd_kfold"].to_numpy(), kind="stable")]


class CompareTable(pd.DataFrame):
    """``loo_compare``'s table: prints whole, whatever pandas's display width."""

    @property
    def _constructor(self) -> type[CompareTable]:
        return CompareTable

    def __repr__(self) -> str:
        with pd.option_context("display.width", 10_000, "display.max_columns", None):
            return super().__repr__()


def bayes_r2(fit: FitResult, *, method: str = "model", include_groups: Any = True,
             probs: tuple[float, ...] = (0.025, 0.975)) -> pd.DataFrame:
    """Bayesian R² (Gelman, Goodrich, Gabry and Vehtari 2019), one value per draw.

    Parameters
    ----------
    method : {"model", "residual"}
        ``"model"`` (default): ``var(mu) / (var(mu) + mean variance of y given
        the draw)``, with the family's variance (``sigma^2`` for gaussian), as in
        the paper and rstanarm. ``"residual"``: ``var(mu) / (var(mu) +
        var(y - mu))``, as brms's ``bayes_R2`` computes it.
    include_groups : bool or list of str
        Which group-level terms ``mu`` includes (see
        `lmmbayes.workflow.predict.posterior_epred`); False gives the
        population-level ("marginal") R².
    probs : tuple of float

    Returns
    -------
    pandas.DataFrame
        One row ``R2`` with ``Estimate``, ``Est.Error`` and the quantiles.
    """
    from .linpred import params
    from .predict import posterior_epred, prediction_rows, summarise_draws

    if method not in ("model", "residual"):
        raise LmmbayesError(f"Unknown bayes_r2 method {method!r}; choose 'model' or 'residual'.")
    fit.design.require_rows("bayes_r2()", "Compute it on a fit of the data in memory.")
    mu = posterior_epred(fit, include_groups=include_groups)
    if mu.ndim == 3:  # ordinal: brms's ordinal_probs_continuous, the expected category, with its warning
        warn("Predictions are treated as continuous variables in bayes_r2, which is likely invalid for ordinal "
             "families (as brms warns).", LmmbayesWarning)
        mu = mu @ np.arange(1.0, mu.shape[2] + 1.0)
    var_mu = mu.var(axis=1, ddof=1)
    if method == "model":
        from .linpred import linear_predictor

        rows, chosen = prediction_rows(fit, None, include_groups, False)
        p = params(fit.posterior, fit.design)
        eta = linear_predictor(p, rows, chosen, centred=fit.design.intercept_in_eta)
        var_res = fit.family.variance(eta, {k: v[:, None] for k, v in p.dpars.items()}, rows.extra).mean(axis=1)
    else:
        var_res = (fit.design.y[None, :] - mu).var(axis=1, ddof=1)
    r2 = var_mu / (var_mu + var_res)
    return summarise_draws(r2[:, None], pd.Index(["R2"]), probs)
