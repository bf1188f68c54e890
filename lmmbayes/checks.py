"""Posterior predictive checks (bayesplot's ppc_dens_overlay, ppc_hist, ppc_stat)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import LmmbayesError
from .predict import posterior_predict

KINDS = ("dens_overlay", "hist", "stat")
STATS = {"mean": np.mean, "sd": lambda a, axis=None: np.std(a, axis=axis, ddof=1), "median": np.median,
         "min": np.min, "max": np.max}


def pp_check(fit: Any, kind: str = "dens_overlay", ndraws: int = 50, stat: str = "mean",
             seed: int | None = None) -> Any:
    """Compare the observed response with replicated data sets from the posterior predictive.

    Parameters
    ----------
    kind : {"dens_overlay", "hist", "stat"}
        Densities of ``ndraws`` replicates (thin light lines) under the
        observed density (thick dark line); histograms of the observed data
        and 8 replicates; or the distribution of ``stat`` over replicates
        with the observed value as a vertical line.
    ndraws : int
    stat : {"mean", "sd", "median", "min", "max"}
    seed : int, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt
    from scipy.stats import gaussian_kde

    if kind not in KINDS:
        raise LmmbayesError(f"Unknown pp_check kind {kind!r}; choose one of {list(KINDS)}.")
    if stat not in STATS:
        raise LmmbayesError(f"Unknown stat {stat!r}; choose one of {list(STATS)}.")
    total = fit.posterior["sigma"].size
    if isinstance(ndraws, bool) or not isinstance(ndraws, (int, np.integer)) or not 1 <= ndraws <= total:
        raise LmmbayesError(f"ndraws must be an integer between 1 and {total}, got {ndraws!r}.")
    y = fit.design.y
    yrep = posterior_predict(fit, draws=int(ndraws), seed=seed)
    if kind == "dens_overlay":
        fig, ax = plt.subplots(figsize=(6, 4))
        lo, hi = np.percentile(np.concatenate([y, yrep.ravel()]), [0.5, 99.5])
        grid = np.linspace(lo, hi, 256)
        for rep in yrep:
            ax.plot(grid, gaussian_kde(rep)(grid), color="#9ecae1", lw=0.6, alpha=0.7)
        ax.plot(grid, gaussian_kde(y)(grid), color="#08306b", lw=2.2, label="y (observed)")
        ax.plot([], [], color="#9ecae1", label="y_rep")
        ax.legend()
        ax.set_xlabel(fit.design.spec.response)
        ax.set_yticks([])
    elif kind == "hist":
        shown = yrep[: min(8, len(yrep))]
        fig, axes = plt.subplots(3, 3, figsize=(8, 6), sharex=True)
        bins = np.histogram_bin_edges(np.concatenate([y, shown.ravel()]), bins=30)
        for k, ax in enumerate(axes.ravel()):
            data, label, colour = (y, "y", "#08306b") if k == 0 else (shown[k - 1], f"y_rep {k}", "#9ecae1")
            if k - 1 < len(shown):
                ax.hist(data, bins=bins, color=colour)
                ax.set_title(label, fontsize=9)
            ax.set_yticks([])
    else:
        fig, ax = plt.subplots(figsize=(6, 4))
        values = STATS[stat](yrep, axis=1)
        ax.hist(values, bins=30, color="#9ecae1", label=f"{stat}(y_rep)")
        ax.axvline(STATS[stat](y), color="#08306b", lw=2.5, label=f"{stat}(y)")
        ax.legend()
    fig.suptitle(f"Posterior predictive check ({kind})")
    return fig
