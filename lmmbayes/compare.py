"""Model checking and comparison: pointwise log-likelihood, PSIS-LOO, WAIC, loo_compare, Bayes R2.

The pointwise log-likelihood is not stored on a Fit: it is computed on
demand from the draws (in row chunks, so memory stays bounded for large N),
conditional on the drawn random effects, as brms does.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from scipy.special import logsumexp

from .errors import LmmbayesError, LmmbayesWarning
from .predict import posterior_epred

PARETO_K_LIMIT = 0.7


class ParetoKWarning(LmmbayesWarning):
    """Some observations have Pareto k above 0.7: PSIS-LOO is unreliable for them."""


@dataclass(frozen=True)
class Criterion:
    """An information criterion with its pointwise terms.

    Attributes
    ----------
    name : str
        ``"loo"`` or ``"waic"``.
    elpd, se, p : float
        Expected log predictive density, its standard error, effective number of parameters.
    pointwise : numpy.ndarray
        Per-observation elpd.
    pareto_k : numpy.ndarray or None
        Per-observation Pareto k (LOO only).
    """

    name: str
    elpd: float
    se: float
    p: float
    pointwise: np.ndarray
    pareto_k: np.ndarray | None = None

    @property
    def n_high_k(self) -> int:
        return 0 if self.pareto_k is None else int((self.pareto_k > PARETO_K_LIMIT).sum())

    def __str__(self) -> str:
        lines = [f"Computed from {len(self.pointwise)} observations.",
                 f"elpd_{self.name} {self.elpd:10.1f}  SE {self.se:6.1f}",
                 f"p_{self.name}    {self.p:10.1f}  ",
                 f"{'looic' if self.name == 'loo' else 'waic'}    {-2 * self.elpd:10.1f}  SE {2 * self.se:6.1f}"]
        if self.pareto_k is not None:
            lines.append(f"Pareto k > {PARETO_K_LIMIT}: {self.n_high_k} observation(s).")
        return "\n".join(lines)


def log_lik(fit: Any, *, chunk_size: int | None = None) -> np.ndarray:
    """Pointwise Gaussian log-likelihood of the fitted data, (chain, draw, N)."""
    design = fit.design
    n_chain, n_draw = fit.posterior["sigma"].shape
    sigma = fit.posterior["sigma"].values.reshape(-1, 1)
    eta = posterior_epred(fit)  # (S, N); rows are needed once
    chunk = chunk_size or max(1, int(5e7 // max(1, eta.shape[0])))
    out = np.empty_like(eta)
    for start in range(0, design.n_obs, chunk):
        part = slice(start, start + chunk)
        resid = (design.y[part][None, :] - eta[:, part]) / sigma
        out[:, part] = -0.5 * resid**2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)
    return out.reshape(n_chain, n_draw, -1)


def loo(fit: Any) -> Criterion:
    """PSIS-LOO (Vehtari, Gelman and Gabry 2017) via arviz-stats."""
    from arviz_stats import loo as az_loo

    ll = log_lik(fit)
    tree = xr.DataTree.from_dict({
        "posterior": fit.posterior[["sigma"]],
        "log_likelihood": xr.Dataset({"y": (("chain", "draw", "obs"), ll)}),
        "observed_data": xr.Dataset({"y": (("obs",), fit.design.y)}),
    })
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # we warn ourselves, naming the model
        result = az_loo(tree, pointwise=True, var_name="y")
    pointwise = np.asarray(result.elpd_i).reshape(-1)
    return Criterion("loo", float(result.elpd), float(result.se), float(result.p), pointwise,
                     np.asarray(result.pareto_k).reshape(-1))


def waic(fit: Any) -> Criterion:
    """WAIC (Watanabe 2010) with the variance-based penalty."""
    ll = log_lik(fit)
    ll = ll.reshape(-1, ll.shape[-1])
    lppd = logsumexp(ll, axis=0) - np.log(ll.shape[0])
    p_i = ll.var(axis=0, ddof=1)
    pointwise = lppd - p_i
    return Criterion("waic", float(pointwise.sum()), float(np.sqrt(len(pointwise) * pointwise.var())),
                     float(p_i.sum()), pointwise)


def loo_compare(*fits: Any, names: list[str] | None = None) -> pd.DataFrame:
    """Compare fits of the same data by PSIS-LOO, best first (like loo's ``loo_compare``).

    Returns
    -------
    DataFrame
        Columns ``elpd_diff`` (0 for the best), ``se_diff`` (SE of the paired
        pointwise difference), ``elpd_loo``, ``se_elpd_loo``, ``p_loo``,
        ``n_high_k``; index: ``names`` or the formulas.
    """
    from .fit import Fit

    if len(fits) < 2 or not all(isinstance(f, Fit) for f in fits):
        raise LmmbayesError("loo_compare needs at least two Fit objects.")
    labels = list(names) if names is not None else [f.formula for f in fits]
    if len(labels) != len(fits) or len(set(labels)) != len(labels):
        raise LmmbayesError(f"names must give one distinct name per fit, got {labels!r}.")
    y0 = fits[0].design.y
    for label, f in zip(labels, fits):
        if f.design.n_obs != len(y0) or not np.array_equal(f.design.y, y0):
            raise LmmbayesError(f"'{label}' was fitted to different data (rows or response); "
                                "loo_compare needs every model fitted to the same observations.")
    results = [loo(f) for f in fits]
    for label, r in zip(labels, results):
        if r.n_high_k:
            warnings.warn(f"'{label}': {r.n_high_k} observation(s) have Pareto k > {PARETO_K_LIMIT}; "
                          "PSIS-LOO is unreliable for them (consider K-fold cross-validation).",
                          ParetoKWarning, stacklevel=2)
    best = int(np.argmax([r.elpd for r in results]))
    rows = []
    for label, r in zip(labels, results):
        diff = r.pointwise - results[best].pointwise
        rows.append({"model": label, "elpd_diff": float(diff.sum()),
                     "se_diff": float(np.sqrt(len(diff) * diff.var())), "elpd_loo": r.elpd,
                     "se_elpd_loo": r.se, "p_loo": r.p, "n_high_k": r.n_high_k})
    table = pd.DataFrame(rows).set_index("model")
    return table.sort_values("elpd_diff", ascending=False)


def bayes_r2(fit: Any, probs: tuple[float, ...] = (0.025, 0.975)) -> pd.DataFrame:
    """Bayesian R2 (Gelman, Goodrich, Gabry and Vehtari 2019): var(fit) / (var(fit) + sigma^2) per draw."""
    from .summary import describe

    eta = posterior_epred(fit)
    var_fit = eta.var(axis=1, ddof=1)
    sigma2 = fit.posterior["sigma"].values.reshape(-1) ** 2
    r2 = var_fit / (var_fit + sigma2)
    n_chain, n_draw = fit.posterior["sigma"].shape
    return describe(["R2"], r2.reshape(n_chain, n_draw, 1), probs)
