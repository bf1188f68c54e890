"""Posterior predictive checks, as brms's ``pp_check`` (bayesplot's ``ppc_dens_overlay``,
``ppc_hist`` and ``ppc_stat``).

Replicated data sets are :func:`lmmbayes.predict.posterior_predict` draws for the
fitted rows (random effects of the fitted levels included), from ``ndraws``
posterior draws chosen at random (reproducibly with ``seed``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np

from .design import require_rows
from .errors import LmmbayesError
from .predict import n_draws, posterior_predict

KINDS = ("dens_overlay", "hist", "stat")
#: Statistics ``kind="stat"`` knows by name (a callable ``f(array, axis=...)`` works too).
STATS: dict[str, Callable[..., Any]] = {
    "mean": np.mean,
    "median": np.median,
    "sd": lambda a, axis=None: np.std(a, axis=axis, ddof=1),
    "var": lambda a, axis=None: np.var(a, axis=axis, ddof=1),
    "min": np.min,
    "max": np.max,
    "iqr": lambda a, axis=None: np.subtract(*np.quantile(a, [0.75, 0.25], axis=axis)),
}
#: Replicated data sets shown next to the observed one by ``kind="hist"``.
HIST_PANELS = 8
OBSERVED_COLOUR = "#011f4b"  # bayesplot's dark blue for y
REPLICATE_COLOUR = "#b3cde0"  # and its light blue for y_rep


def _kde_curves(samples: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Gaussian KDE (Silverman's bandwidth) of each row of ``samples`` on a common grid."""
    samples = np.atleast_2d(samples)
    n = samples.shape[1]
    sd = samples.std(axis=1, ddof=1)
    iqr = np.subtract(*np.quantile(samples, [0.75, 0.25], axis=1))
    spread = np.where(iqr > 0, np.minimum(sd, iqr / 1.34), sd)
    bw = 0.9 * spread * n ** -0.2
    bw = np.where(bw > 0, bw, 1e-3 * np.maximum(np.abs(samples.mean(axis=1)), 1.0))
    out = np.empty((samples.shape[0], grid.size))
    for k, (row, h) in enumerate(zip(samples, bw)):
        u = (grid[:, None] - row[None, :]) / h
        out[k] = np.exp(-0.5 * u * u).sum(axis=1) / (n * h * math.sqrt(2 * math.pi))
    return out


def _stat_function(stat: Any) -> tuple[Callable[..., Any], str]:
    if callable(stat):
        return stat, getattr(stat, "__name__", "stat")
    if isinstance(stat, str) and stat in STATS:
        return STATS[stat], stat
    raise LmmbayesError(f"Unknown stat {stat!r}; choose one of {list(STATS)} or pass a function f(x, axis=...).")


def _check_ndraws(ndraws: Any, total: int) -> int:
    if ndraws is None:
        return total
    if isinstance(ndraws, bool) or not isinstance(ndraws, numbers.Integral) or ndraws < 1:
        raise LmmbayesError(f"ndraws must be a positive integer (or None for all {total} draws), got {ndraws!r}.")
    return min(int(ndraws), total)


def pp_check(fit: Any, kind: str = "dens_overlay", ndraws: int | None = 50, stat: Any = "mean",
             seed: int | None = None) -> Any:
    """Compare the observed response with data sets replicated from the posterior predictive.

    Parameters
    ----------
    fit : Fit
    kind : {"dens_overlay", "hist", "stat"}
        ``"dens_overlay"``: the density of y (thick dark line) over the
        densities of ``ndraws`` replicated data sets (thin light lines).
        ``"hist"``: histograms of y and of ``min(ndraws, 8)`` replicated data
        sets, one panel each, on shared bins. ``"stat"``: a histogram of
        ``stat`` over ``ndraws`` replicated data sets, with ``stat(y)`` as a
        vertical line.
    ndraws : int or None
        Number of replicated data sets (capped at the number of draws; None:
        all draws, useful for ``"stat"``).
    stat : str or callable
        For ``kind="stat"``: one of ``mean``, ``median``, ``sd``, ``var``,
        ``min``, ``max``, ``iqr``, or ``f(array, axis=...)``.
    seed : int, optional
        Which draws, and the replicated noise.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    LmmbayesError
        An unknown ``kind`` or ``stat`` (listing the valid ones) or a bad ``ndraws``.
    """
    import matplotlib.pyplot as plt

    if not isinstance(kind, str) or kind not in KINDS:
        raise LmmbayesError(f"Unknown pp_check kind {kind!r}; choose one of {list(KINDS)}.")
    func, stat_name = _stat_function(stat)
    require_rows(fit.design, "pp_check()", "Check the model on a fit of the data in memory, or of a "
                 "pandas sample of it (ddf.sample(frac=...).compute()).")
    total = n_draws(fit)
    k = _check_ndraws(ndraws, total)
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(total, size=k, replace=False))
    yrep = posterior_predict(fit, draws=picked, seed=rng)
    y = np.asarray(fit.design.y, dtype=float)
    response = fit.design.spec.response

    if kind == "dens_overlay":
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        lo, hi = np.quantile(np.concatenate([y, yrep.ravel()]), [0.001, 0.999])
        pad = 0.05 * (hi - lo or 1.0)
        grid = np.linspace(lo - pad, hi + pad, 256)
        for curve in _kde_curves(yrep, grid):
            ax.plot(grid, curve, color=REPLICATE_COLOUR, lw=0.6, alpha=0.8)
        ax.plot(grid, _kde_curves(y, grid)[0], color=OBSERVED_COLOUR, lw=2.2)
        ax.legend(handles=[ax.lines[-1], ax.lines[0]], labels=["y", "y_rep"], frameon=False)
        ax.set_xlabel(response)
        ax.set_yticks([])
        ax.set_title(f"Posterior predictive check: density of y and {k} replicates", fontsize=10)
    elif kind == "hist":
        shown = yrep[: min(k, HIST_PANELS)]
        panels = 1 + len(shown)
        ncols = min(3, panels)
        nrows = math.ceil(panels / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(3.0 * ncols, 2.2 * nrows + 0.4),
                                 sharex=True, squeeze=False)
        bins = np.histogram_bin_edges(np.concatenate([y, shown.ravel()]), bins=30)
        for j, ax in enumerate(axes.ravel()):
            if j >= panels:
                ax.remove()  # empty grid cells would look like missing replicates
                continue
            data, title, colour = (y, "y", OBSERVED_COLOUR) if j == 0 else \
                (shown[j - 1], f"y_rep {j}", REPLICATE_COLOUR)
            ax.hist(data, bins=bins, color=colour, edgecolor="white", linewidth=0.3)
            ax.set_title(title, fontsize=9)
            ax.set_yticks([])
        fig.suptitle(f"Posterior predictive check: histograms of {response}", fontsize=10)
        fig.tight_layout()
    else:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        values = np.asarray(func(yrep, axis=1), dtype=float)
        observed = float(func(y, axis=0))
        ax.hist(values, bins=min(30, max(5, k // 5)), color=REPLICATE_COLOUR, edgecolor="white",
                label=f"{stat_name}(y_rep)")
        ax.axvline(observed, color=OBSERVED_COLOUR, lw=2.5, label=f"{stat_name}(y) = {observed:.4g}")
        share = float((values >= observed).mean())
        ax.legend(frameon=False)
        ax.set_yticks([])
        ax.set_xlabel(f"{stat_name}({response})")
        ax.set_title(f"Posterior predictive check: {stat_name} over {k} replicates "
                     f"(P(T(y_rep) >= T(y)) = {share:.2f})", fontsize=10)
    return fig
