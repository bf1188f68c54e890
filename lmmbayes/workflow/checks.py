"""Posterior predictive checks, as brms's ``pp_check`` (bayesplot's ``ppc_*`` plots).

Replicated data sets are `posterior_predict`
(``Fit.posterior_predict``) draws for
the fitted rows (random effects of the fitted levels included), from
``ndraws`` posterior draws chosen at random (reproducibly with ``seed``).
They go, with the observed response, into a DataTree with groups
``posterior_predictive`` and ``observed_data``, which arviz-plots draws:

=================  ===============================  =========================
kind               bayesplot                        drawn by
=================  ===============================  =========================
``dens_overlay``   ``ppc_dens_overlay``             ``arviz_plots.plot_ppc_dist`` (KDE)
``ecdf_overlay``   ``ppc_ecdf_overlay``             ``arviz_plots.plot_ppc_dist`` (ECDF)
``stat``           ``ppc_stat``                     ``arviz_plots.plot_ppc_tstat``
``intervals``      ``ppc_intervals``                ``arviz_plots.plot_ppc_interval``
``rootogram``      ``ppc_rootogram``                ``arviz_plots.plot_ppc_rootogram``
``hist``           ``ppc_hist``                     matplotlib (arviz-plots has no panel per replicate)
``bars``           ``ppc_bars``                     matplotlib (arviz-plots has no bar chart of counts)
=================  ===============================  =========================

``bars`` and ``rootogram`` are for discrete families only. matplotlib and
arviz-plots are imported by `pp_check`, never by this module.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import xarray as xr

from .. import _validate as check
from ..errors import LmmbayesError
from ..results.model import FitResult
from .predict import posterior_predict

if TYPE_CHECKING:
    from matplotlib.figure import Figure

KINDS = ("dens_overlay", "hist", "stat", "ecdf_overlay", "intervals", "bars", "rootogram", "scatter_avg",
         "error_scatter_avg", "stat_grouped", "loo_pit_overlay")
#: Kinds that only make sense for a discrete response (counts, categories).
DISCRETE_KINDS = ("bars", "rootogram")
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
#: Most groups ``kind="stat_grouped"`` draws a panel for (the first ones in level order).
GROUP_PANELS = 12
#: Probability mass of the replicate intervals of ``kind="bars"`` (bayesplot's default).
BARS_PROB = 0.9
#: Inner and outer interval of ``kind="intervals"`` (bayesplot's ``prob`` and ``prob_outer``).
INTERVAL_PROBS = (0.5, 0.9)
OBSERVED_COLOUR = "#011f4b"  # bayesplot's dark blue for y
REPLICATE_COLOUR = "#6497b1"  # and a mid blue for y_rep, visible as thin lines
BACKEND: Final = "matplotlib"


# -- arguments ----------------------------------------------------------------------------

def kinds_for(discrete: bool) -> tuple[str, ...]:
    """The pp_check kinds that fit a family: every kind for a discrete one, all but bars and rootogram otherwise."""
    return KINDS if discrete else tuple(k for k in KINDS if k not in DISCRETE_KINDS)


def _stat_function(stat: Any) -> tuple[Callable[..., Any], str]:
    if callable(stat):
        return stat, getattr(stat, "__name__", "stat")
    if isinstance(stat, str) and stat in STATS:
        return STATS[stat], stat
    raise LmmbayesError(f"Unknown stat {stat!r}; choose one of {list(STATS)} or pass a function f(x, axis=...).")


def _check_ndraws(ndraws: Any, total: int) -> int:
    if ndraws is None:
        return total
    if not check.is_integer(ndraws) or ndraws < 1:
        raise LmmbayesError(f"ndraws must be a positive integer (or None for all {total} draws), got {ndraws!r}.")
    return min(int(ndraws), total)


def _check_kind(kind: Any, fit: FitResult) -> str:
    if kind is None:
        kind = fit.family.default_check
    if not isinstance(kind, str) or kind not in KINDS:
        raise LmmbayesError(f"Unknown pp_check kind {kind!r}; choose one of {list(KINDS)}.")
    if kind in DISCRETE_KINDS and not fit.family.discrete:
        raise LmmbayesError(f"pp_check kind {kind!r} is for discrete responses (counts, categories); family "
                            f"{fit.family.name!r} is continuous, so choose one of {list(kinds_for(False))}.")
    return kind


def replicates(fit: FitResult, ndraws: int | None, seed: Any) -> tuple[np.ndarray, np.ndarray]:
    """Replicated data sets (draws, rows) from ``ndraws`` random posterior draws, and the observed response."""
    total = fit.n_draws
    k = _check_ndraws(ndraws, total)
    rng = check.rng(seed)
    picked = np.sort(rng.choice(total, size=k, replace=False))
    # The replicated noise follows from the same seed as the choice of draws.
    noise = int(rng.integers(2**63))
    yrep = np.asarray(posterior_predict(fit, draws=picked.tolist(), seed=noise), dtype=np.float64)
    y = np.asarray(fit.design.y, dtype=np.float64)
    return yrep, y


def predictive_tree(yrep: np.ndarray, y: np.ndarray, name: str, *, discrete: bool = False) -> xr.DataTree:
    """The replicates and the observed response as arviz-plots takes them.

    Discrete responses are stored as integers: arviz-plots tells discrete
    from continuous data by the dtype.
    """
    if discrete:
        yrep, y = np.rint(yrep).astype(np.int64), np.rint(y).astype(np.int64)
    obs = np.arange(y.size)
    predictive = xr.Dataset({name: (("chain", "draw", "obs"), yrep[None])},
                            coords={"chain": [1], "draw": np.arange(yrep.shape[0]), "obs": obs})
    observed = xr.Dataset({name: (("obs",), y)}, coords={"obs": obs})
    return xr.DataTree.from_dict({"posterior_predictive": predictive, "observed_data": observed})


# -- the check -----------------------------------------------------------------------------

def pp_check(fit: FitResult, kind: str | None = None, ndraws: int | None = 50, stat: Any = "mean",
             seed: int | None = None, group: str | None = None) -> Figure:
    """Compare the observed response with data sets replicated from the posterior predictive.

    Parameters
    ----------
    fit : FitResult
    kind : str, optional
        Default: the family's (``fit.family.default_check``, ``"dens_overlay"``
        for gaussian).

        - ``"dens_overlay"``: the density of y (thick dark line) over the
          densities of ``ndraws`` replicated data sets (thin lines);
        - ``"ecdf_overlay"``: the same with empirical CDFs;
        - ``"hist"``: histograms of y and of ``min(ndraws, 8)`` replicated data
          sets, one panel each, on shared bins;
        - ``"stat"``: the distribution of ``stat`` over the replicated data
          sets, with ``stat(y)`` marked, and the share of replicates at or
          above it in the title;
        - ``"intervals"``: per observation, the replicates' 50% and 90%
          intervals and median, with y;
        - ``"bars"`` (discrete families): the counts of each value of y as
          bars, with the replicates' median count and 90% interval;
        - ``"rootogram"`` (discrete families): observed and replicated
          frequencies of each value on a square-root scale;
        - ``"scatter_avg"``: y against the average of the replicates per
          observation, with the line y = x;
        - ``"error_scatter_avg"``: the average predictive error y − y_rep per
          observation against y;
        - ``"stat_grouped"``: ``"stat"`` per level of the grouping factor
          ``group`` (one panel per level, the first `GROUP_PANELS`);
        - ``"loo_pit_overlay"``: the ECDF of the LOO probability integral
          transform (PSIS-weighted share of replicates at or below y, over all
          draws) with its simultaneous envelope for uniformity (arviz-plots).
    ndraws : int or None
        Number of replicated data sets (capped at the number of draws; None:
        all draws, useful for ``"stat"``).
    stat : str or callable
        For ``kind="stat"``: one of ``mean``, ``median``, ``sd``, ``var``,
        ``min``, ``max``, ``iqr``, or ``f(array, axis=...)``.
    seed : int, optional
        Which draws, and the replicated noise.
    group : str, optional
        For ``kind="stat_grouped"``: a grouping factor of the model (``"county"``).

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    LmmbayesError
        An unknown ``kind`` or ``stat`` (listing the valid ones), a discrete-only
        kind for a continuous family (listing the kinds that fit), or a bad ``ndraws``.
    FitError
        For a fit of a Dask DataFrame, which keeps no rows to replicate.
    """
    kind = _check_kind(kind, fit)
    func, stat_name = _stat_function(stat)
    fit.design.require_rows("pp_check()", "Check the model on a fit of the data in memory, or of a pandas "
                            "sample of it (ddf.sample(frac=...).compute()).")
    response = fit.design.spec.response_name
    if kind == "loo_pit_overlay":
        return _loo_pit(fit, response, seed)
    if kind == "stat_grouped":
        index, labels = _grouping(fit, group)
    yrep, y = replicates(fit, ndraws, seed)
    discrete = bool(fit.family.discrete)
    if kind in ("scatter_avg", "error_scatter_avg"):
        return _scatter_avg(yrep, y, response, error=kind == "error_scatter_avg")
    if kind == "stat_grouped":
        return _stat_grouped(yrep, y, index, labels, func, stat_name, response, str(group))
    if kind == "hist":
        return _hist(yrep, y, response)
    if kind == "bars":
        return _bars(yrep, y, response)
    tree = predictive_tree(yrep, y, response, discrete=discrete and kind == "rootogram")
    if kind in ("dens_overlay", "ecdf_overlay"):
        return _overlay(tree, kind, yrep.shape[0], response)
    if kind == "stat":
        return _stat(tree, yrep, y, func, stat_name, response)
    if kind == "intervals":
        return _intervals(tree, response)
    return _rootogram(tree, response)


def _figure(pc: Any) -> Figure:
    return pc.viz["figure"].item()


def _overlay(tree: xr.DataTree, kind: str, k: int, response: str) -> Figure:
    import arviz_plots as azp

    pc = azp.plot_ppc_dist(
        tree, kind="kde" if kind == "dens_overlay" else "ecdf", num_samples=k, backend=BACKEND,
        visuals={"predictive_dist": {"color": REPLICATE_COLOUR, "width": 0.6, "alpha": 0.6},
                 "observed_dist": {"color": OBSERVED_COLOUR, "width": 2.4}},
        figure_kwargs={"figsize": (6.4, 4.2), "layout": "constrained"},
    )
    fig = _figure(pc)
    ax = fig.axes[0]
    observed = pc.viz["observed_dist"][response].item()
    observed.set_label("y")
    observed.set_zorder(3)  # on top of the replicates
    replicate = pc.viz["predictive_dist"][response].values.ravel()[0]
    replicate.set_label("y_rep")
    ax.legend(handles=[observed, replicate], frameon=False)
    ax.set_xlabel(response)
    what = "density" if kind == "dens_overlay" else "ECDF"
    ax.set_title(f"Posterior predictive check: {what} of y and {k} replicates", fontsize=10)
    return fig


def _stat(tree: xr.DataTree, yrep: np.ndarray, y: np.ndarray, func: Callable[..., Any], stat_name: str,
          response: str) -> Figure:
    import arviz_plots as azp

    def t_stat(values: np.ndarray) -> float:
        return float(func(values, axis=-1))

    t_stat.__name__ = stat_name  # arviz-plots titles the panel with it
    pc = azp.plot_ppc_tstat(tree, t_stat=t_stat, kind="hist", backend=BACKEND,
                            visuals={"dist": {"color": REPLICATE_COLOUR},
                                     "observed_tstat": {"color": OBSERVED_COLOUR}},
                            figure_kwargs={"figsize": (6.4, 4.2), "layout": "constrained"})
    fig = _figure(pc)
    ax = fig.axes[0]
    values = np.asarray(func(yrep, axis=1), dtype=float)
    observed = float(func(y, axis=0))
    pc.viz["dist"][response].item().set_label(f"{stat_name}(y_rep)")
    pc.viz["observed_tstat"][response].item().set_label(f"{stat_name}(y) = {observed:.4g}")
    share = float((values >= observed).mean())
    ax.legend(frameon=False)
    ax.set_xlabel(f"{stat_name}({response})")
    ax.set_title(f"Posterior predictive check: {stat_name} over {values.size} replicates "
                 f"(P(T(y_rep) >= T(y)) = {share:.2f})", fontsize=10)
    return fig


def _intervals(tree: xr.DataTree, response: str) -> Figure:
    import arviz_plots as azp

    pc = azp.plot_ppc_interval(tree, point_estimate="median", ci_kind="eti", ci_probs=INTERVAL_PROBS,
                               backend=BACKEND, figure_kwargs={"figsize": (8, 4.2), "layout": "constrained"})
    fig = _figure(pc)
    ax = fig.axes[0]
    observed = pc.viz["observed_markers"][response].item()
    observed.set_label("y")
    predicted = pc.viz["prediction_markers"][response].item()
    predicted.set_label("y_rep median")
    ax.legend(handles=[observed, predicted], frameon=False, fontsize=8)
    ax.set_ylabel(response)
    ax.set_title("Posterior predictive check: replicate intervals per observation, y as points", fontsize=10)
    return fig


def _rootogram(tree: xr.DataTree, response: str) -> Figure:
    import arviz_plots as azp

    pc = azp.plot_ppc_rootogram(tree, backend=BACKEND, figure_kwargs={"figsize": (6.4, 4.2), "layout": "constrained"})
    fig = _figure(pc)
    fig.axes[0].set_xlabel(response)
    fig.axes[0].set_title("Posterior predictive check: rootogram (observed in black)", fontsize=10)
    return fig


def _hist(yrep: np.ndarray, y: np.ndarray, response: str) -> Figure:
    """y and up to eight replicates, one histogram each on shared bins (bayesplot's ``ppc_hist``)."""
    import matplotlib.pyplot as plt

    shown = yrep[:HIST_PANELS]
    panels = 1 + len(shown)
    ncols = min(3, panels)
    nrows = math.ceil(panels / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.0 * ncols, 2.2 * nrows + 0.4), sharex=True,
                             squeeze=False, layout="constrained")
    bins = np.histogram_bin_edges(np.concatenate([y, shown.ravel()]), bins=30)
    for j, ax in enumerate(axes.ravel()):
        if j >= panels:
            ax.remove()  # empty grid cells would look like missing replicates
            continue
        data, title, colour = (y, "y", OBSERVED_COLOUR) if j == 0 else (shown[j - 1], f"y_rep {j}", REPLICATE_COLOUR)
        ax.hist(data, bins=bins, color=colour, edgecolor="white", linewidth=0.3)
        ax.set_title(title, fontsize=9)
        ax.set_yticks([])
    fig.suptitle(f"Posterior predictive check: histograms of {response}", fontsize=10)
    return fig


def _bars(yrep: np.ndarray, y: np.ndarray, response: str) -> Figure:
    """Counts of each value: y as bars, the replicates' median and interval as points (bayesplot's ``ppc_bars``)."""
    import matplotlib.pyplot as plt

    yi = np.rint(y).astype(np.int64)
    ri = np.rint(yrep).astype(np.int64)
    values = np.unique(np.concatenate([yi, ri.ravel()]))
    observed = (yi[:, None] == values[None, :]).sum(axis=0)
    counts = (ri[:, :, None] == values[None, None, :]).sum(axis=1)  # (draws, values)
    lo, mid, hi = np.quantile(counts, [(1 - BARS_PROB) / 2, 0.5, (1 + BARS_PROB) / 2], axis=0)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    ax.bar(values, observed, width=0.8, color="#b3cde0", edgecolor="white", label="y")
    ax.errorbar(values, mid, yerr=[mid - lo, hi - mid], fmt="o", color=OBSERVED_COLOUR, ms=4, lw=1.2,
                label=f"y_rep (median, {100 * BARS_PROB:g}% interval)")
    ax.set_xlabel(response)
    ax.set_ylabel("count")
    ax.legend(frameon=False)
    ax.set_title(f"Posterior predictive check: counts of each value in y and {len(ri)} replicates", fontsize=10)
    return fig


def _grouping(fit: FitResult, group: Any) -> tuple[np.ndarray, tuple[str, ...]]:
    """Each fitted row's level of grouping factor ``group``, and the levels' labels."""
    names = [f.name for f in fit.design.factors]
    if not isinstance(group, str) or group not in names:
        raise LmmbayesError(f"pp_check kind 'stat_grouped' needs group= one of the model's grouping factors "
                            f"{names}, got {group!r}.")
    rows = fit.design.require_rows("pp_check()", "")
    k = names.index(group)
    return rows.factors[k].index, tuple(fit.design.factors[k].levels)


def _scatter_avg(yrep: np.ndarray, y: np.ndarray, response: str, *, error: bool) -> Figure:
    """bayesplot's ``ppc_scatter_avg`` (y against mean y_rep) and ``ppc_error_scatter_avg`` (mean y − y_rep against y)."""
    import matplotlib.pyplot as plt

    avg = yrep.mean(axis=0)
    fig, ax = plt.subplots(figsize=(5.2, 4.6), layout="constrained")
    if error:
        ax.scatter(y, y - avg, s=10, color=REPLICATE_COLOUR, alpha=0.8)
        ax.axhline(0.0, color=OBSERVED_COLOUR, lw=0.8, ls="--")
        ax.set_xlabel(f"y ({response})")
        ax.set_ylabel("average y - y_rep")
        ax.set_title(f"Posterior predictive check: average predictive error over {len(yrep)} replicates", fontsize=10)
    else:
        ax.scatter(avg, y, s=10, color=REPLICATE_COLOUR, alpha=0.8)
        lo, hi = float(min(avg.min(), y.min())), float(max(avg.max(), y.max()))
        ax.plot([lo, hi], [lo, hi], color=OBSERVED_COLOUR, lw=0.8, ls="--")
        ax.set_xlabel("average y_rep")
        ax.set_ylabel(f"y ({response})")
        ax.set_title(f"Posterior predictive check: y against the average of {len(yrep)} replicates", fontsize=10)
    return fig


def _stat_grouped(yrep: np.ndarray, y: np.ndarray, index: np.ndarray, labels: tuple[str, ...],
                  func: Callable[..., Any], stat_name: str, response: str, group: str) -> Figure:
    """bayesplot's ``ppc_stat_grouped``: the stat of each group's replicates, with the group's observed stat."""
    import matplotlib.pyplot as plt

    shown = [g for g in range(len(labels)) if (index == g).any()][:GROUP_PANELS]
    ncols = min(4, len(shown))
    nrows = math.ceil(len(shown) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.1 * nrows + 0.5), squeeze=False,
                             layout="constrained")
    for ax, g in zip(axes.ravel(), shown):
        rows = index == g
        values = np.asarray(func(yrep[:, rows], axis=1), dtype=float)
        ax.hist(values, bins=20, color=REPLICATE_COLOUR, edgecolor="white", linewidth=0.3)
        ax.axvline(float(func(y[rows], axis=0)), color=OBSERVED_COLOUR, lw=2)
        ax.set_title(f"{group} = {labels[g]}", fontsize=8)
        ax.set_yticks([])
    for ax in axes.ravel()[len(shown):]:
        ax.remove()
    more = f" (first {len(shown)} of {len(labels)} levels)" if len(labels) > len(shown) else ""
    fig.suptitle(f"Posterior predictive check: {stat_name}({response}) per {group}{more}; observed as lines",
                 fontsize=10)
    return fig


def _loo_pit(fit: FitResult, response: str, seed: Any) -> Figure:
    """LOO-PIT ECDF with its simultaneous envelope (arviz-plots's ``plot_loo_pit``), from every draw."""
    import arviz_plots as azp

    from .loglik import log_lik

    yrep, y = replicates(fit, None, seed)
    ll = log_lik(fit).reshape(1, -1, y.size)
    tree = predictive_tree(yrep, y, response)
    obs = {"chain": [1], "draw": np.arange(ll.shape[1]), "obs": np.arange(y.size)}
    tree["log_likelihood"] = xr.DataTree(xr.Dataset({response: (("chain", "draw", "obs"), ll)}, coords=obs))
    b = fit.posterior["b"].values
    tree["posterior"] = xr.DataTree(xr.Dataset({"b": (("chain", "draw", "coef"), b.reshape(1, -1, b.shape[-1]))},
                                               coords={"chain": [1], "draw": obs["draw"]}))
    pc = azp.plot_loo_pit(tree, backend=BACKEND, figure_kwargs={"figsize": (6.4, 4.2), "layout": "constrained"})
    fig = _figure(pc)
    fig.axes[0].set_title("Posterior predictive check: LOO-PIT, ECDF minus uniform (p: test of uniformity)", fontsize=10)
    return fig


__all__ = ["DISCRETE_KINDS", "KINDS", "STATS", "kinds_for", "pp_check", "predictive_tree", "replicates"]
