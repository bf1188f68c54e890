"""Predictive model checking and comparison: pointwise log-likelihood, PSIS-LOO, WAIC,
``loo_compare`` and Bayesian R², as brms's ``log_lik``, ``loo``, ``waic``,
``loo_compare`` and ``bayes_R2``.

The pointwise log-likelihood is computed on demand from the draws, conditional
on the drawn random effects (as brms does), in row chunks so that temporaries
stay bounded for large N. It is never stored on the Fit: ``loo`` and ``waic``
build a temporary DataTree with a ``log_likelihood`` group and leave
``fit.idata`` untouched.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from scipy.special import logsumexp

from .design import require_rows
from .errors import DataError, FitError, LmmbayesError, LmmbayesWarning
from .predict import draw_indices, fitted_rows, linear_predictor, stack_draws, summarise_draws
from .psis import loo_pointwise

#: Pareto k above which PSIS-LOO is unreliable for an observation (Vehtari et al. 2024).
PARETO_K_LIMIT = 0.7
#: p_waic of one observation above which WAIC is unreliable (the loo package's rule).
P_WAIC_LIMIT = 0.4
#: Elements of one (draws x rows) temporary when computing the log-likelihood in chunks.
_CHUNK_ELEMENTS = 2**22
#: Largest (draws x rows) log-likelihood matrix (512 MB) that loo() builds whole for a fit in
#: memory, to hand arviz-stats; a larger one goes in row chunks through :mod:`lmmbayes.psis`.
_WHOLE_MATRIX = 2**26


class ParetoKWarning(LmmbayesWarning):
    """PSIS-LOO is unreliable for some observations (Pareto k above 0.7)."""


class WAICWarning(LmmbayesWarning):
    """WAIC is unreliable for some observations (p_waic above 0.4)."""


def _n_samples(fit: Any) -> int:
    """Posterior draws of a fit, all chains together."""
    return int(np.prod(fit.idata["posterior"]["sigma"].shape))


def _check_chunk(chunk_size: Any, n_samples: int) -> int:
    if chunk_size is None:
        return max(1, _CHUNK_ELEMENTS // max(1, n_samples))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise LmmbayesError(f"chunk_size must be a positive integer (rows per chunk), got {chunk_size!r}.")
    return int(chunk_size)


def log_lik(fit: Any, *, chunk_size: int | None = None) -> np.ndarray:
    """Pointwise Gaussian log-likelihood of the fitted data.

    ``log N(y_i | mu_i, sigma)`` per draw, with ``mu_i`` including the drawn
    random effects of observation ``i``'s levels.

    Parameters
    ----------
    fit : Fit
    chunk_size : int, optional
        Rows per chunk; by default about 4 million draw-row pairs at a time.

    Returns
    -------
    numpy.ndarray
        (chain, draw, N).
    """
    design = fit.design
    require_rows(design, "The whole (draws x rows) pointwise log-likelihood",
                 "loo(), waic() and loo_compare() work on it partition by partition; for the matrix "
                 "itself, use a pandas sample of the data (ddf.sample(frac=...).compute()).")
    n_chain, n_draw = fit.idata["posterior"]["sigma"].shape
    out = np.empty((n_chain * n_draw, design.n_obs))
    for part, ll in _log_lik_chunks(fit, _check_chunk(chunk_size, n_chain * n_draw)):
        out[:, part] = ll
    return out.reshape(n_chain, n_draw, design.n_obs)


def _log_lik_chunks(fit: Any, chunk: int) -> Iterator[tuple[slice, np.ndarray]]:
    """(rows, (draws x rows) log-likelihood) of a fit in memory, ``chunk`` rows at a time."""
    design = fit.design
    posterior = fit.idata["posterior"]
    idx = draw_indices(_n_samples(fit), None)
    sigma = stack_draws(np.asarray(posterior["sigma"].values))[:, None]
    log_norm = -np.log(sigma) - 0.5 * math.log(2 * math.pi)
    rows = fitted_rows(design, design.factors)
    for start in range(0, design.n_obs, chunk):
        part = slice(start, min(start + chunk, design.n_obs))
        z = (design.y[part][None, :] - linear_predictor(fit, rows, idx, row_slice=part)) / sigma
        yield part, log_norm - 0.5 * z * z


def _pointwise_terms(kind: str, ll: np.ndarray, reff: float) -> tuple[np.ndarray, ...]:
    """Per row of a (draws, rows) log-likelihood: PSIS-LOO's (elpd_i, Pareto k, p_loo_i) for
    ``kind="loo"``, WAIC's (lppd_i, p_waic_i) for ``kind="waic"``."""
    if kind == "waic":
        return logsumexp(ll, axis=0) - math.log(ll.shape[0]), ll.var(axis=0, ddof=1)
    return loo_pointwise(ll, reff)


def _pointwise(fit: Any, kind: str, what: str) -> tuple[np.ndarray, ...]:
    """:func:`_pointwise_terms` of every row, in row chunks (partition by partition for Dask)."""
    reff = _relative_efficiency(fit) if kind == "loo" else 1.0
    chunk = _check_chunk(None, _n_samples(fit))
    if not fit.design.rows_in_memory:
        return _pointwise_by_partition(fit, kind, what, reff, chunk)
    out = [np.empty(fit.design.n_obs) for _ in range(3 if kind == "loo" else 2)]
    for part, ll in _log_lik_chunks(fit, chunk):
        for k, values in enumerate(_pointwise_terms(kind, ll, reff)):
            out[k][part] = values
    return tuple(out)


@dataclass(frozen=True, eq=False)
class _Pointwise:
    """Pointwise LOO or WAIC terms of one partition's rows (shipped to Dask workers).

    ``kind="loo"`` gives PSIS-LOO's elpd_i, Pareto k and p_loo_i
    (:func:`lmmbayes.psis.loo_pointwise`, vectorised over rows) with the
    relative efficiency ``reff`` of the whole posterior, so each row gets what
    ``arviz_stats.loo`` on the whole matrix gives it; ``kind="waic"`` gives
    lppd_i and p_waic_i. Draws are stacked chains first, as :func:`log_lik`
    does, and computed in chunks of ``chunk`` rows.
    """

    kind: str
    b: np.ndarray  # (S, P), the intercept first where the design centres it
    sigma: np.ndarray  # (S,)
    r: tuple[np.ndarray, ...]  # per factor (S, levels, q)
    centred: bool
    reff: float
    chunk: int

    def __call__(self, X: np.ndarray, y: np.ndarray, indexes: list[np.ndarray],
                 Zs: list[np.ndarray]) -> tuple[np.ndarray, ...]:
        if self.centred:
            X = np.column_stack([np.ones(len(y)), X])
        out = [np.empty(len(y)) for _ in range(3 if self.kind == "loo" else 2)]
        log_norm = -np.log(self.sigma)[:, None] - 0.5 * math.log(2 * math.pi)
        for start in range(0, len(y), self.chunk):
            part = slice(start, min(start + self.chunk, len(y)))
            mu = self.b @ X[part].T
            for r, idx, Z in zip(self.r, indexes, Zs):
                for t in range(Z.shape[1]):
                    mu += r[:, idx[part], t] * Z[part, t]
            z = (y[part][None, :] - mu) / self.sigma[:, None]
            for k, values in enumerate(_pointwise_terms(self.kind, log_norm - 0.5 * z * z, self.reff)):
                out[k][part] = values
        return tuple(out)


def _pointwise_by_partition(fit: Any, kind: str, what: str, reff: float, chunk: int) -> tuple[np.ndarray, ...]:
    """:class:`_Pointwise` terms of every row of a Dask fit, in the frame's row order."""
    source = fit.design.reduced.source
    if source is None:
        raise FitError(
            f"{what} of a fit made from a Dask DataFrame goes over the rows again, on the Dask "
            "frame the fit was made from; this fit was read from a file and does not have it. "
            "Refit from the Dask frame, or compare models on the data in memory."
        )
    posterior = fit.idata["posterior"]
    fn = _Pointwise(
        kind=kind, b=stack_draws(np.asarray(posterior["b"].values)),
        sigma=stack_draws(np.asarray(posterior["sigma"].values)),
        r=tuple(stack_draws(np.asarray(posterior[f"r_{f.name}"].values)) for f in fit.design.factors),
        centred=fit.design.centred_intercept, reff=reff, chunk=chunk,
    )
    return source.map_rows(fn, _concat)


def _concat(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    return tuple(np.concatenate([x, y]) for x, y in zip(a, b))


def _relative_efficiency(fit: Any) -> float:
    """PSIS's r_eff as ``arviz_stats.loo`` computes it: mean ESS over all posterior values / draws."""
    import arviz_stats  # noqa: F401  (registers the .azstats accessor)

    posterior = fit.idata["posterior"].to_dataset()
    n_chain, n_draw = posterior["sigma"].shape
    if n_chain == 1:
        return 1.0
    ess = posterior.azstats.ess(method="mean")
    return float(np.hstack([ess[v].values.ravel() for v in ess.data_vars]).mean() / (n_chain * n_draw))


def _loo_in_chunks(fit: Any) -> Any:
    """PSIS-LOO row chunk by row chunk (on the partitions of a Dask fit), see :func:`loo`."""
    from arviz_stats.base import array_stats
    from arviz_stats.utils import ELPDDataLOO

    elpd_i, pareto_k, p_loo_i = _pointwise(fit, "loo", "PSIS-LOO")
    total = _n_samples(fit)
    elpd, se, p_loo, _ = array_stats.loo_summary(elpd_i, p_loo_i)
    good_k = min(1 - 1 / np.log10(total), 0.7) if total > 1 else 0.7
    obs = {"obs": np.arange(elpd_i.size)}
    return ELPDDataLOO(
        elpd=float(elpd), se=float(se), p=float(p_loo), n_samples=total, n_data_points=int(elpd_i.size),
        scale="log", warning=bool((pareto_k > good_k).any()), good_k=good_k,
        elpd_i=xr.DataArray(elpd_i, dims=["obs"], coords=obs), pareto_k=xr.DataArray(pareto_k, dims=["obs"], coords=obs),
        approx_posterior=False, p_loo_i=xr.DataArray(p_loo_i, dims=["obs"], coords=obs),
    )


def _log_lik_tree(fit: Any, ll: np.ndarray) -> xr.DataTree:
    """A temporary DataTree with posterior, log_likelihood and observed_data groups."""
    n_chain, n_draw, n = ll.shape
    coords = {"chain": np.arange(n_chain), "draw": np.arange(n_draw), "obs": np.arange(n)}
    return xr.DataTree.from_dict({
        "posterior": fit.idata["posterior"].to_dataset(),  # for the relative efficiency (reff)
        "log_likelihood": xr.Dataset({"y": (("chain", "draw", "obs"), ll)}, coords=coords),
        "observed_data": xr.Dataset({"y": (("obs",), fit.design.y)}, coords={"obs": coords["obs"]}),
    })


def _model_label(fit: Any) -> str:
    return f"'{fit.formula}'"


def loo(fit: Any, *, label: str | None = None) -> Any:
    """PSIS-LOO cross-validation (Vehtari, Gelman and Gabry 2017) with arviz-stats.

    Parameters
    ----------
    fit : Fit
    label : str, optional
        Name of the model in the warning (default: its formula).

    Returns
    -------
    arviz_stats.ELPDData
        ``elpd`` (elpd_loo), ``se``, ``p`` (p_loo), pointwise ``elpd_i`` and
        ``pareto_k``; printing it gives the loo package's table.

    A fit whose draws x rows log-likelihood would pass 2**26 values (512
    MB: 4000 draws by 16,777 rows) goes over the rows in chunks instead and
    keeps only the pointwise results (no ``log_weights``), with the Pareto
    smoothing vectorised over rows (:mod:`lmmbayes.psis`); the numbers are
    the same as from the whole matrix. So does every fit from a Dask
    DataFrame, partition by partition; that needs the Dask frame the fit was
    made from, so a Dask fit read back with :func:`lmmbayes.load` cannot.

    Raises
    ------
    LmmbayesError
        Fewer than 25 posterior draws (PSIS smooths a tail of at least 5).

    Warns
    -----
    ParetoKWarning
        When some observations have Pareto k above 0.7, naming the model and
        how many observations.
    """
    from arviz_stats import loo as az_loo

    total = _n_samples(fit)
    if total < 25:
        raise LmmbayesError(f"PSIS-LOO needs at least 25 posterior draws (chains x draws); this fit has "
                            f"{total}. Refit with more draws.")
    with warnings.catch_warnings(), np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        # arviz-stats warns without naming the model; lmmbayes warns below instead.
        warnings.filterwarnings("ignore", message=".*[Pp]areto.*")
        warnings.filterwarnings("ignore", message=".*[Ee]stimated shape parameter.*")
        if fit.design.rows_in_memory and total * fit.design.n_obs <= _WHOLE_MATRIX:
            result = az_loo(_log_lik_tree(fit, log_lik(fit)), pointwise=True, var_name="y")
        else:
            result = _loo_in_chunks(fit)
    k = np.asarray(result.pareto_k).reshape(-1)
    high = int((k > PARETO_K_LIMIT).sum())
    if high:
        warnings.warn(
            f"Model {label or _model_label(fit)}: {high} of {k.size} observations have Pareto k > "
            f"{PARETO_K_LIMIT}, so PSIS-LOO is unreliable for them; consider K-fold "
            "cross-validation or moment matching.",
            ParetoKWarning,
            stacklevel=2,
        )
    return result


@dataclass(frozen=True)
class WAIC:
    """The widely applicable information criterion (Watanabe 2010), loo-package style.

    Attributes
    ----------
    elpd_waic, se_elpd_waic : float
    p_waic, se_p_waic : float
    waic, se_waic : float
        ``-2 * elpd_waic`` and its SE.
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

    # The names arviz-stats's ELPDData uses, so LOO and WAIC read alike.
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
        return (f"Computed from {self.n_samples} by {self.n_data_points} log-likelihood matrix.\n\n"
                f"{table}")


def waic(fit: Any) -> WAIC:
    """WAIC from the pointwise log-likelihood (computed here; arviz-stats has none).

    ``lppd_i = log mean_s exp(ll_si)``, ``p_waic_i = var_s(ll_si)``,
    ``elpd_waic = sum_i (lppd_i - p_waic_i)`` with ``SE = sqrt(N var_i(elpd_i))``,
    as the loo package computes them.

    Warns
    -----
    WAICWarning
        When some ``p_waic_i`` exceed 0.4 (WAIC unreliable; use :func:`loo`).

    A fit from a Dask DataFrame computes the pointwise terms partition by
    partition, as :func:`loo` does.
    """
    lppd, p_i = _pointwise(fit, "waic", "WAIC")  # row chunk by row chunk, never the whole matrix
    n_samples, n = _n_samples(fit), lppd.size
    elpd_i = lppd - p_i
    root_n = math.sqrt(n)
    se_elpd = float(root_n * elpd_i.std(ddof=1)) if n > 1 else float("nan")
    se_p = float(root_n * p_i.std(ddof=1)) if n > 1 else float("nan")
    high = int((p_i > P_WAIC_LIMIT).sum())
    if high:
        warnings.warn(
            f"Model {_model_label(fit)}: {high} of {n} observations have p_waic > {P_WAIC_LIMIT}; "
            "WAIC is unreliable for them, use loo() instead.",
            WAICWarning,
            stacklevel=2,
        )
    pointwise = pd.DataFrame({"elpd_waic": elpd_i, "p_waic": p_i, "waic": -2 * elpd_i})
    elpd = float(elpd_i.sum())
    return WAIC(elpd, se_elpd, float(p_i.sum()), se_p, -2 * elpd, 2 * se_elpd, n_samples, n, pointwise)


def _names(fits: tuple[Any, ...], names: Any) -> list[str]:
    if names is None:
        labels = [f.formula for f in fits]
        # Same formula twice (e.g. other priors): number them so rows stay distinct.
        return [lab if labels.count(lab) == 1 else f"{lab} [{k}]" for k, lab in enumerate(labels, start=1)]
    labels = [names] if isinstance(names, str) else list(names)
    if len(labels) != len(fits) or len(set(labels)) != len(labels) \
            or not all(isinstance(n, str) for n in labels):
        raise LmmbayesError(
            f"names must give one distinct string per fit ({len(fits)} fits), got {names!r}."
        )
    return labels


def loo_compare(*fits: Any, names: list[str] | None = None) -> pd.DataFrame:
    """Compare models fitted to the same data by PSIS-LOO, like brms's ``loo_compare``.

    Parameters
    ----------
    *fits : Fit
        Two or more fits of the same observations.
    names : list of str, optional
        Row labels; default the formulas.

    Returns
    -------
    pandas.DataFrame
        Best model first. Columns ``elpd_diff`` (difference to the best, 0 for
        the best), ``se_diff`` (SE of the paired pointwise differences,
        ``sqrt(N) * sd(elpd_i - elpd_i[best])``), ``elpd_loo``, ``se_elpd_loo``,
        ``p_loo``, ``looic``, ``se_looic`` and ``n_high_k`` (observations with
        Pareto k > 0.7). A difference of several ``se_diff`` is a clear one.

    Raises
    ------
    LmmbayesError
        Fewer than two fits, or names that do not match them.
    DataError
        Fits of different data (different numbers of observations or responses).

    Warns
    -----
    ParetoKWarning
        Per model with Pareto k > 0.7 somewhere, naming the model.
    """
    from .fit import Fit

    if len(fits) == 1 and isinstance(fits[0], (list, tuple)):
        fits = tuple(fits[0])
    if len(fits) < 2:
        raise LmmbayesError(f"loo_compare needs at least two fits to compare, got {len(fits)}.")
    bad = [type(f).__name__ for f in fits if not isinstance(f, Fit)]
    if bad:
        raise LmmbayesError(f"loo_compare takes lmmbayes Fit objects, got {bad}.")
    labels = _names(fits, names)
    ref_label, ref = labels[0], fits[0].design
    for label, f in zip(labels[1:], fits[1:]):
        if f.design.n_obs != ref.n_obs or not np.array_equal(f.design.y, ref.y):
            what = (f"{f.design.n_obs} vs {ref.n_obs} observations" if f.design.n_obs != ref.n_obs
                    else "the same number of observations but different responses")
            raise DataError(
                f"loo_compare needs models fitted to the same data: '{label}' and '{ref_label}' were "
                f"fitted to different data ({what}; e.g. other rows dropped for missing values)."
            )
    results = [loo(f, label=f"'{lab}'") for lab, f in zip(labels, fits)]
    elpd_i = [np.asarray(r.elpd_i).reshape(-1) for r in results]
    best = int(np.argmax([r.elpd for r in results]))
    n = ref.n_obs
    rows = []
    for label, r, e in zip(labels, results, elpd_i):
        diff = e - elpd_i[best]
        se_diff = float(math.sqrt(n) * diff.std(ddof=1)) if n > 1 else float("nan")
        k = np.asarray(r.pareto_k).reshape(-1)
        rows.append({"elpd_diff": float(diff.sum()), "se_diff": se_diff, "elpd_loo": float(r.elpd),
                     "se_elpd_loo": float(r.se), "p_loo": float(r.p), "looic": -2 * float(r.elpd),
                     "se_looic": 2 * float(r.se), "n_high_k": int((k > PARETO_K_LIMIT).sum())})
    table = pd.DataFrame(rows, index=pd.Index(labels, name="model"))
    order = np.argsort(-table["elpd_loo"].to_numpy(), kind="stable")
    return table.iloc[order]


def bayes_r2(fit: Any, *, method: str = "model", include_groups: Any = True,
             probs: tuple[float, ...] = (0.025, 0.975)) -> pd.DataFrame:
    """Bayesian R² (Gelman, Goodrich, Gabry and Vehtari 2019), one value per draw.

    Parameters
    ----------
    method : {"model", "residual"}
        ``"model"`` (default): ``var(mu) / (var(mu) + sigma^2)`` with the
        model's residual variance, as in the paper and rstanarm.
        ``"residual"``: ``var(mu) / (var(mu) + var(y - mu))``, as brms's
        ``bayes_R2`` computes it.
    include_groups : bool or list of str
        Which group-level terms ``mu`` includes (see
        :func:`lmmbayes.predict.posterior_epred`); False gives the
        population-level ("marginal") R².
    probs : tuple of float

    Returns
    -------
    pandas.DataFrame
        One row ``R2`` with ``Estimate``, ``Est.Error``, ``Q2.5``, ``Q97.5``.
    """
    from .predict import posterior_epred

    if method not in ("model", "residual"):
        raise LmmbayesError(f"Unknown bayes_r2 method {method!r}; choose 'model' or 'residual'.")
    require_rows(fit.design, "bayes_r2()", "Compute it on a fit of the data in memory.")
    mu = posterior_epred(fit, include_groups=include_groups)
    var_mu = mu.var(axis=1, ddof=1)
    if method == "model":
        var_res = stack_draws(np.asarray(fit.idata["posterior"]["sigma"].values)) ** 2
    else:
        var_res = (fit.design.y[None, :] - mu).var(axis=1, ddof=1)
    r2 = var_mu / (var_mu + var_res)
    return summarise_draws(r2[:, None], pd.Index(["R2"]), probs)


__all__ = ["ParetoKWarning", "WAIC", "WAICWarning", "bayes_r2", "log_lik", "loo", "loo_compare", "waic"]
