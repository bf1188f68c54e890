"""Figures for the Bayesian workflow, in plain matplotlib.

- exploratory: :func:`plot_groups` (within-group and pooled trends);
- priors by simulation: :func:`plot_prior_predictive` (a flip-book of
  simulated data sets, optionally an animated GIF);
- MCMC diagnostics, as brms's ``mcmc_plot`` (bayesplot): :func:`plot_trace`,
  :func:`plot_rank`, :func:`plot_acf`, :func:`plot_parallel` and
  :func:`plot_pairs` (divergent draws in red), :func:`plot_energy`;
- results: :func:`plot_ranef` (caterpillar plot of the random effects).

Every function returns a :class:`matplotlib.figure.Figure`. Diagnostic plots
take ``params``: brms parameter names (``"b_Intercept"``,
``"sd_county__std_age"``, ``"r_county[kent,Intercept]"``) or class names
(``"b"``, ``"sd"``, ``"cor"``, ``"sigma"``, ``"r"``) that stand for every
parameter of the class; by default all parameters except the random effects.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Sequence
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.collections import LineCollection
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .design import as_pandas
from .errors import DataError, LmmbayesError
from .posterior import flat_draws

#: Parameter classes ``params`` may name.
PARAM_CLASSES = ("b", "sd", "cor", "sigma", "r")
DIVERGENT_COLOUR = "red"
DIVERGENT_LABEL = "divergent"
OBSERVED_TITLE = "observed"


# -- helpers -----------------------------------------------------------------

def _colours(n: int) -> list[tuple[float, float, float, float]]:
    """``n`` distinguishable colours (tab10, tab20, then a sampled colormap)."""
    if n <= 10:
        cmap = matplotlib.colormaps["tab10"]
        return [cmap(i) for i in range(n)]
    if n <= 20:
        cmap = matplotlib.colormaps["tab20"]
        return [cmap(i) for i in range(n)]
    cmap = matplotlib.colormaps["turbo"]
    return [cmap(v) for v in np.linspace(0.05, 0.95, n)]


def _class_of(name: str) -> str:
    return "sigma" if name == "sigma" else name.split("_", 1)[0]


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise LmmbayesError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def _valid_names_text(names: list[str]) -> str:
    fixed = [n for n in names if _class_of(n) != "r"]
    text = f"class names {list(PARAM_CLASSES)} or parameters {fixed}"
    random = [n for n in names if _class_of(n) == "r"]
    if random:
        text += f", or random effects such as {random[0]!r} ({len(random)} in all)"
    return text


def select_draws(fit: Any, params: str | Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
    """brms names and (chain, draw, K) draws of the parameters ``params`` picks.

    Raises
    ------
    LmmbayesError
        If a name is neither a parameter nor a class, listing the valid ones,
        or if the selection is empty.
    """
    names, draws = flat_draws(fit.posterior, fit.design, random=True)
    if params is None:
        chosen = [n for n in names if _class_of(n) != "r"]
    else:
        if isinstance(params, str):
            params = [params]
        known = set(names)
        chosen, unknown = [], []
        for p in params:
            if p in PARAM_CLASSES:
                chosen += [n for n in names if _class_of(n) == p]
            elif p in known:
                chosen.append(p)
            else:
                unknown.append(p)
        if unknown:
            raise LmmbayesError(f"Unknown parameter(s) {unknown}; valid: {_valid_names_text(names)}.")
        chosen = list(dict.fromkeys(chosen))
    if not chosen:
        raise LmmbayesError(
            f"params={params!r} selects no parameter of this model; valid: {_valid_names_text(names)}."
        )
    position = {n: k for k, n in enumerate(names)}
    return chosen, draws[..., [position[n] for n in chosen]]


def _sample_stat(fit: Any, name: str) -> np.ndarray | None:
    if "sample_stats" not in fit.idata.children:
        return None
    stats = fit.idata["sample_stats"].to_dataset()
    return np.asarray(stats[name].values) if name in stats else None


def divergent_mask(fit: Any) -> np.ndarray:
    """(chain, draw) booleans: which draws ended in a divergent transition (none if unknown)."""
    shape = fit.posterior["sigma"].shape
    div = _sample_stat(fit, "diverging")
    if div is None or div.shape != shape:
        return np.zeros(shape, dtype=bool)
    return div.astype(bool)


def _bounds(name: str) -> tuple[float, float]:
    cls = _class_of(name)
    if cls in ("sd", "sigma"):
        return 0.0, np.inf
    if cls == "cor":
        return -1.0, 1.0
    return -np.inf, np.inf


def _kde(x: np.ndarray, lo: float = -np.inf, hi: float = np.inf,
         grid_len: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian kernel density (Silverman's bandwidth), reflected at finite bounds."""
    x = x[np.isfinite(x)]
    if x.size == 0:
        return np.array([]), np.array([])
    sd = float(x.std())
    iqr = float(np.subtract(*np.quantile(x, [0.75, 0.25])))
    spread = min(sd, iqr / 1.34) if iqr > 0 else sd
    bw = 0.9 * spread * x.size ** -0.2
    if not bw > 0:
        bw = max(abs(float(x.mean())) * 1e-3, 1e-12)
    grid = np.linspace(max(x.min() - 3 * bw, lo), min(x.max() + 3 * bw, hi), grid_len)
    points = [x]
    if np.isfinite(lo):
        points.append(2 * lo - x)
    if np.isfinite(hi):
        points.append(2 * hi - x)
    dens = sum(np.exp(-0.5 * ((grid[:, None] - p[None, :]) / bw) ** 2).sum(axis=1) for p in points)
    return grid, dens / (x.size * bw * math.sqrt(2 * math.pi))


def _autocorr(x: np.ndarray, max_lag: int) -> np.ndarray:
    """Autocorrelation of one chain at lags 0..max_lag (FFT)."""
    x = x - x.mean()
    n = x.size
    f = np.fft.rfft(x, 2 * n)
    ac = np.fft.irfft(f * np.conj(f))[: max_lag + 1]
    return ac / ac[0] if ac[0] > 0 else np.full(max_lag + 1, np.nan)


def _chain_label(c: int) -> str:
    return f"chain {c + 1}"


# -- exploratory data analysis -------------------------------------------------

def _numeric_column(df: pd.DataFrame, col: str, role: str) -> np.ndarray:
    values = df[col]
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        raise DataError(f"Column '{col}' ({role}) must be numeric, but its dtype is {values.dtype}.")
    return values.to_numpy(dtype=float, na_value=np.nan)


def _check_columns(df: pd.DataFrame, **columns: str | None) -> None:
    for role, col in columns.items():
        if col is None:
            continue
        if not isinstance(col, str) or col not in df.columns:
            raise DataError(
                f"Column {col!r} (the {role}) is not in the data; available columns: "
                f"{list(map(str, df.columns))}."
            )


def _group_levels(values: pd.Series) -> list[Any]:
    """Levels present, in category order or sorted (as the design orders them)."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        present = set(values.dropna())
        return [c for c in values.cat.categories if c in present]
    unique = list(values.dropna().unique())
    try:
        return sorted(unique)
    except TypeError:  # mixed types
        return sorted(unique, key=str)


def plot_groups(data: Any, y: str, x: str, group: str) -> Figure:
    """Each group's points and least-squares line, plus the pooled line.

    Shows at a glance when the pooled trend differs from the within-group
    trends (Simpson's paradox): groups that differ in level and in ``x``
    can make the pooled slope steeper, flatter or even reversed.

    Parameters
    ----------
    data : pandas.DataFrame or polars.DataFrame
        Never modified; rows with a missing ``y``, ``x`` or ``group`` are left out.
    y, x : str
        Numeric columns: response and predictor.
    group : str
        The grouping column; each level gets its own colour.

    Returns
    -------
    matplotlib.figure.Figure
        One axes: a scatter and a line per group (groups whose ``x`` takes a
        single value get no line), and the pooled line (black, dashed).

    Raises
    ------
    DataError
        If a column is missing, ``x`` or ``y`` is not numeric, or no complete row is left.
    """
    df = as_pandas(data)
    _check_columns(df, response=y, predictor=x, group=group)
    yv = _numeric_column(df, y, "the response")
    xv = _numeric_column(df, x, "the predictor")
    gv = df[group]
    keep = np.isfinite(yv) & np.isfinite(xv) & gv.notna().to_numpy()
    if not keep.any():
        raise DataError(f"No row has values for all of '{y}', '{x}' and '{group}'.")
    yv, xv, gv = yv[keep], xv[keep], gv[keep]
    levels = _group_levels(gv)
    fig, ax = plt.subplots(figsize=(7.5, 5))
    slopes = []
    codes = gv.to_numpy()
    for level, colour in zip(levels, _colours(len(levels))):
        sel = codes == level
        ax.scatter(xv[sel], yv[sel], s=14, alpha=0.6, color=colour, label=str(level))
        if np.unique(xv[sel]).size >= 2:
            slope, intercept = np.polyfit(xv[sel], yv[sel], 1)
            slopes.append(slope)
            grid = np.array([xv[sel].min(), xv[sel].max()])
            ax.plot(grid, intercept + slope * grid, color=colour, lw=2, label=f"_{level} fit")
    title = f"{y} against {x} by {group}"
    if np.unique(xv).size >= 2:
        slope, intercept = np.polyfit(xv, yv, 1)
        grid = np.array([xv.min(), xv.max()])
        ax.plot(grid, intercept + slope * grid, color="black", ls="--", lw=2.5,
                label=f"pooled fit (slope {slope:.3g})", zorder=5)
        if slopes:
            title += (f"\npooled slope {slope:.3g}; within-group slopes "
                      f"{min(slopes):.3g} to {max(slopes):.3g}")
            opposite = sum(np.sign(s) != np.sign(slope) for s in slopes)
            if opposite > len(slopes) / 2:
                title += " (the trend reverses within groups: Simpson's paradox)"
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title, fontsize=10)
    ax.legend(title=group, fontsize=8, title_fontsize=8, loc="best", ncols=2 if len(levels) > 8 else 1)
    fig.tight_layout()
    return fig


# -- prior predictive flip-book -------------------------------------------------

def _check_pp(pp: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Simulated (S, N) y, observed (N,) y, row positions and the response name."""
    ok = isinstance(pp, xr.DataTree) and {"prior_predictive", "observed_data"} <= set(pp.children)
    if ok:
        sim, obs = pp["prior_predictive"].to_dataset(), pp["observed_data"].to_dataset()
        ok = "y" in sim and "y" in obs
    if not ok:
        raise LmmbayesError(
            "pp must be the DataTree returned by lmmbayes.prior_predictive(), with groups "
            f"'prior_predictive' and 'observed_data'; got {type(pp).__name__}."
        )
    y_obs = np.asarray(obs["y"].values, dtype=float)
    y_sim = np.asarray(sim["y"].values, dtype=float).reshape(-1, y_obs.size)
    rows = np.asarray(obs["row"].values) if "row" in obs.coords else np.arange(y_obs.size)
    return y_sim, y_obs, rows, str(obs.attrs.get("response", sim.attrs.get("response", "y")))


def plot_prior_predictive(
    pp: xr.DataTree,
    data: Any,
    x: str,
    group: str | None = None,
    *,
    n: int = 12,
    ncols: int = 4,
    animate: str | os.PathLike[str] | None = None,
    seed: int | None = None,
) -> Figure:
    """A flip-book of data sets simulated from the priors, next to the observed data.

    Parameters
    ----------
    pp : xarray.DataTree
        What :func:`lmmbayes.prior_predictive` returned.
    data : pandas.DataFrame or polars.DataFrame
        The data given to :func:`~lmmbayes.prior_predictive`; supplies ``x``
        and ``group``. Never modified.
    x : str
        Numeric predictor on the horizontal axis.
    group : str, optional
        Colour the points by this column.
    n : int
        Number of simulated data sets shown (picked at random from ``pp``).
    ncols : int
        Panels per row.
    animate : str or path, optional
        Also write an animated GIF (``.gif``) with one frame per shown data set.
    seed : int, optional
        Which simulated data sets are picked.

    Returns
    -------
    matplotlib.figure.Figure
        ``n + 1`` panels sharing the y axis: first the observed data (titled
        "observed"), then one simulated data set each.
    """
    y_sim, y_obs, rows, response = _check_pp(pp)
    n = _positive_int(n, "n")
    ncols = _positive_int(ncols, "ncols")
    if n > y_sim.shape[0]:
        raise LmmbayesError(f"n={n} but pp holds only {y_sim.shape[0]} simulated data sets; "
                            "lower n or draw more in prior_predictive(draws=...).")
    if animate is not None and not str(animate).lower().endswith(".gif"):
        raise LmmbayesError(f"animate must be a file name ending in .gif, got {str(animate)!r}.")
    df = as_pandas(data)
    _check_columns(df, predictor=x, group=group)
    if rows.size and rows.max() >= len(df):
        raise DataError(f"data has {len(df)} rows but pp was simulated from at least {rows.max() + 1}; "
                        "pass the data frame given to prior_predictive().")
    xv = _numeric_column(df, x, "the predictor")[rows]
    if group is not None:
        gv = df[group].iloc[rows]
        levels = _group_levels(gv)
        palette = dict(zip(levels, _colours(len(levels))))
        colours = np.array([palette.get(v, (0.5, 0.5, 0.5, 1.0)) for v in gv.to_numpy()])
    else:
        levels, palette = [], {}
        colours = np.tile(to_rgba("C0"), (xv.size, 1))
    picked = np.random.default_rng(seed).choice(y_sim.shape[0], size=n, replace=False)

    nrows = math.ceil((n + 1) / ncols)
    fig, axes = plt.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False,
                             figsize=(2.6 * ncols + 1.0, 2.1 * nrows + 0.8), layout="constrained")
    flat = axes.ravel()
    for ax in flat[n + 1:]:
        fig.delaxes(ax)
    panels = [(OBSERVED_TITLE, y_obs)] + [(f"prior draw {k + 1}", y_sim[k]) for k in picked]
    for ax, (title, yk) in zip(flat, panels):
        ax.scatter(xv, yk, s=4, c=colours, alpha=0.7, linewidths=0)
        observed = title == OBSERVED_TITLE
        ax.set_title(title, fontsize=9, fontweight="bold" if observed else "normal")
        if observed:
            for spine in ax.spines.values():
                spine.set_linewidth(2)
        ax.tick_params(labelsize=7, labelleft=True, labelbottom=True)
    fig.supxlabel(x)
    fig.supylabel(response)
    fig.suptitle("Prior predictive check: data sets simulated from the priors", fontsize=11)
    if palette and len(palette) <= 20:
        handles = [Line2D([], [], ls="", marker="o", color=c, label=str(k))
                   for k, c in palette.items()]
        fig.legend(handles=handles, title=group, fontsize=7, title_fontsize=8,
                   loc="outside right center")
    if animate is not None:
        _write_gif(animate, xv, y_sim[picked], picked, y_obs, colours, x, response)
    return fig


def _write_gif(path: str | os.PathLike[str], xv: np.ndarray, y_sets: np.ndarray, picked: np.ndarray,
               y_obs: np.ndarray, colours: np.ndarray, x: str, response: str) -> None:
    """An animated GIF, one frame per simulated data set, observed data in grey behind."""
    from matplotlib.animation import FuncAnimation, PillowWriter

    fig = Figure(figsize=(5, 3.6))  # not registered with pyplot: nothing to close
    ax = fig.add_subplot()
    ax.scatter(xv, y_obs, s=5, color="0.8", linewidths=0, label=OBSERVED_TITLE)
    points = ax.scatter(xv, y_sets[0], s=6, c=colours, alpha=0.8, linewidths=0, label="simulated")
    values = np.concatenate([y_sets.ravel(), y_obs])
    values = values[np.isfinite(values)]
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    pad = 0.05 * (hi - lo) if hi > lo else 1.0
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel(x)
    ax.set_ylabel(response)
    ax.legend(fontsize=7, loc="upper left")
    label = lambda i: f"prior draw {picked[i] + 1} (data set {i + 1} of {len(y_sets)})"  # noqa: E731
    title = ax.set_title(label(0), fontsize=10)
    fig.tight_layout()  # with a title in place, so that it is not cut off

    def frame(i: int) -> tuple[Any, ...]:
        points.set_offsets(np.column_stack([xv, y_sets[i]]))
        title.set_text(label(i))
        return points, title

    anim = FuncAnimation(fig, frame, frames=len(y_sets), interval=800, blit=False)
    try:
        anim.save(os.fspath(path), writer=PillowWriter(fps=1.25), dpi=80)
    except (OSError, ValueError) as exc:
        raise LmmbayesError(f"Could not write the animation to {str(path)!r}: {exc}") from exc


# -- MCMC diagnostics --------------------------------------------------------------

def plot_trace(fit: Any, params: str | Sequence[str] | None = None) -> Figure:
    """Per parameter: posterior density by chain (left) and trace by chain (right).

    Returns
    -------
    matplotlib.figure.Figure
        ``2 * K`` axes for ``K`` parameters, one line per chain in each.
    """
    names, draws = select_draws(fit, params)
    n_chain, n_draw, k = draws.shape
    colours = _colours(n_chain)
    fig, axes = plt.subplots(k, 2, figsize=(10, 1.7 * k + 0.6), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 2]})
    it = np.arange(1, n_draw + 1)
    for j, name in enumerate(names):
        lo, hi = _bounds(name)
        for c in range(n_chain):
            grid, dens = _kde(draws[c, :, j], lo, hi)
            axes[j, 0].plot(grid, dens, color=colours[c], lw=1.2, label=_chain_label(c))
            axes[j, 1].plot(it, draws[c, :, j], color=colours[c], lw=0.6, alpha=0.8,
                            label=_chain_label(c))
        axes[j, 0].set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center")
        axes[j, 0].set_yticks([])
        for ax in axes[j]:
            ax.tick_params(labelsize=7)
    axes[0, 0].set_title("density by chain", fontsize=9)
    axes[0, 1].set_title("trace by chain", fontsize=9)
    axes[-1, 1].set_xlabel("iteration (post-warmup)")
    axes[0, 1].legend(fontsize=7, loc="upper right", ncols=min(n_chain, 4))
    fig.tight_layout()
    return fig


def plot_rank(fit: Any, params: str | Sequence[str] | None = None, bins: int = 20) -> Figure:
    """Rank histograms per parameter and chain (bayesplot's ``mcmc_rank_hist``).

    Draws of all chains are ranked together; with good mixing every chain's
    histogram is flat (dashed line: the expected count).

    Returns
    -------
    matplotlib.figure.Figure
        ``K x chains`` axes.
    """
    names, draws = select_draws(fit, params)
    bins = _positive_int(bins, "bins")
    n_chain, n_draw, k = draws.shape
    colours = _colours(n_chain)
    fig, axes = plt.subplots(k, n_chain, figsize=(2.4 * n_chain + 1.5, 1.5 * k + 0.6),
                             squeeze=False, sharex=True, sharey="row")
    edges = np.linspace(0, n_chain * n_draw, bins + 1)
    for j, name in enumerate(names):
        pooled = draws[..., j].ravel()
        ranks = (np.argsort(np.argsort(pooled, kind="stable"), kind="stable")).reshape(n_chain, n_draw)
        for c in range(n_chain):
            ax = axes[j, c]
            ax.hist(ranks[c], bins=edges, color=colours[c], alpha=0.8)
            ax.axhline(n_draw / bins, color="black", ls="--", lw=0.8)
            ax.tick_params(labelsize=7)
            if j == 0:
                ax.set_title(_chain_label(c), fontsize=9)
        axes[j, 0].set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center")
    fig.supxlabel("rank of the draw among all chains", fontsize=9)
    fig.tight_layout()
    return fig


def plot_acf(fit: Any, params: str | Sequence[str] | None = None, max_lag: int = 20) -> Figure:
    """Autocorrelation by lag, per parameter and chain (bayesplot's ``mcmc_acf_bar``).

    Returns
    -------
    matplotlib.figure.Figure
        ``K x chains`` axes, bars at lags ``0..max_lag``.
    """
    names, draws = select_draws(fit, params)
    n_chain, n_draw, k = draws.shape
    max_lag = _positive_int(max_lag, "max_lag")
    if max_lag >= n_draw:
        raise LmmbayesError(f"max_lag must be below the number of draws per chain ({n_draw}), got {max_lag}.")
    colours = _colours(n_chain)
    lags = np.arange(max_lag + 1)
    fig, axes = plt.subplots(k, n_chain, figsize=(2.4 * n_chain + 1.5, 1.4 * k + 0.6),
                             squeeze=False, sharex=True, sharey=True)
    for j, name in enumerate(names):
        for c in range(n_chain):
            ax = axes[j, c]
            ax.bar(lags, _autocorr(draws[c, :, j], max_lag), width=0.7, color=colours[c])
            ax.axhline(0, color="black", lw=0.6)
            ax.tick_params(labelsize=7)
            if j == 0:
                ax.set_title(_chain_label(c), fontsize=9)
        axes[j, 0].set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center")
    axes[0, 0].set_ylim(-0.25, 1.05)
    fig.supxlabel("lag", fontsize=9)
    fig.tight_layout()
    return fig


def plot_parallel(fit: Any, params: str | Sequence[str] | None = None) -> Figure:
    """Parallel coordinates of standardised draws, divergent draws in red on top.

    Each draw is a line across the parameters, every parameter standardised
    (draws minus mean, over SD); divergences that cluster where some
    parameter is small (typically an ``sd``) point to a funnel.

    Returns
    -------
    matplotlib.figure.Figure
        One axes with two line collections: ``"draws"`` (grey, faint) and,
        when there are divergences, ``"divergent"`` (red), one line per draw.
    """
    names, draws = select_draws(fit, params)
    n_chain, n_draw, k = draws.shape
    flat = draws.reshape(-1, k)
    sd = flat.std(axis=0)
    z = (flat - flat.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    div = divergent_mask(fit).ravel()
    xs = np.arange(k)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * k + 2), 4.5))
    segments = np.stack([np.broadcast_to(xs, z.shape), z], axis=-1)
    ax.add_collection(LineCollection(segments[~div], colors="0.5", alpha=0.15, linewidths=0.5,
                                     label="draws", zorder=1))
    if div.any():
        ax.add_collection(LineCollection(segments[div], colors=DIVERGENT_COLOUR, alpha=0.8,
                                         linewidths=0.9, label=DIVERGENT_LABEL, zorder=3))
    ax.autoscale_view()
    ax.set_xticks(xs, names, rotation=45, ha="right", fontsize=8)
    ax.set_xlim(-0.2, k - 0.8)
    ax.set_ylabel("standardised value")
    ax.set_title(f"Parallel coordinates: {int(div.sum())} divergent draws (red) of {div.size}",
                 fontsize=10)
    if div.any():
        ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def plot_pairs(fit: Any, params: str | Sequence[str] | None = None) -> Figure:
    """Scatter-plot matrix of the draws, divergent draws in red on top.

    Returns
    -------
    matplotlib.figure.Figure
        ``K x K`` axes: histograms on the diagonal, scatter plots below it
        (upper triangle left blank); in each scatter a red collection labelled
        ``"divergent"`` holds the divergent draws.
    """
    names, draws = select_draws(fit, params)
    k = draws.shape[-1]
    if k < 2:
        raise LmmbayesError(f"A pairs plot needs at least two parameters; params selects {names}.")
    flat = draws.reshape(-1, k)
    div = divergent_mask(fit).ravel()
    size = min(2.0, 14.0 / k)
    fig, axes = plt.subplots(k, k, figsize=(size * k + 0.8, size * k + 0.8), squeeze=False)
    for i in range(k):
        for j in range(k):
            ax = axes[i, j]
            ax.tick_params(labelsize=6)
            if i == j:
                ax.hist(flat[:, i], bins=30, color="0.55")
                ax.set_yticks([])
            elif i > j:
                ax.scatter(flat[~div, j], flat[~div, i], s=3, color="0.45", alpha=0.3,
                           linewidths=0, label="draws")
                if div.any():
                    ax.scatter(flat[div, j], flat[div, i], s=8, color=DIVERGENT_COLOUR,
                               linewidths=0, label=DIVERGENT_LABEL, zorder=3)
            else:
                ax.axis("off")
            if i == k - 1:
                ax.set_xlabel(names[j], fontsize=7)
            if j == 0 and i > 0:
                ax.set_ylabel(names[i], fontsize=7)
    fig.suptitle(f"Pairs: {int(div.sum())} divergent draws in red", fontsize=10)
    fig.tight_layout()
    return fig


def plot_energy(fit: Any) -> Figure:
    """Marginal energy against energy transition distributions (Betancourt 2017).

    When the transition histogram is much narrower than the marginal one
    (low E-BFMI, shown in the title per chain), NUTS explores the tails poorly.

    Raises
    ------
    LmmbayesError
        If the fit has no sampler energy (e.g. ``sample_prior="only"``).
    """
    energy = _sample_stat(fit, "energy")
    if energy is None or energy.ndim != 2 or energy.shape[1] < 2:
        raise LmmbayesError("This fit has no NUTS energy statistics to plot "
                            "(draws not made by NUTS, e.g. sample_prior='only').")
    from .diagnostics import ebfmi

    marginal = (energy - energy.mean(axis=1, keepdims=True)).ravel()
    transition = np.diff(energy, axis=1).ravel()
    values = ebfmi(energy)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    edges = np.histogram_bin_edges(np.concatenate([marginal, transition]), bins=40)
    ax.hist(marginal, bins=edges, density=True, alpha=0.55, color="C0", label="marginal energy")
    ax.hist(transition, bins=edges, density=True, alpha=0.55, color="C1", label="energy transition")
    ax.set_xlabel("energy (centred)")
    ax.set_yticks([])
    ax.legend(fontsize=8)
    ax.set_title("E-BFMI: " + ", ".join(f"{_chain_label(c)} {v:.2f}" for c, v in enumerate(values)),
                 fontsize=10)
    fig.tight_layout()
    return fig


def plot_ranef(fit: Any, group: str | None = None, term: str = "Intercept") -> Figure:
    """Caterpillar plot of one grouping factor's random effects for one term.

    Each level's posterior mean (point) with its 50% (thick) and 95% (thin)
    equal-tailed intervals, levels sorted by the mean.

    Parameters
    ----------
    group : str, optional
        Grouping factor (default: the model's first).
    term : str
        Group-level term, e.g. ``"Intercept"`` or ``"std_age"``.

    Returns
    -------
    matplotlib.figure.Figure
        One axes with one point per level.
    """
    factors = {f.name: f for f in fit.design.factors}
    if not factors:
        raise LmmbayesError("This model has no group-level terms, so no random effects to plot.")
    if group is None:
        group = next(iter(factors))
    if group not in factors:
        raise LmmbayesError(f"Unknown grouping factor {group!r}; this model has {list(factors)}.")
    f = factors[group]
    if term not in f.terms:
        raise LmmbayesError(f"Grouping factor {group!r} has no term {term!r}; its terms are {list(f.terms)}.")
    r = np.asarray(fit.posterior[f"r_{group}"].values)[..., f.terms.index(term)]
    r = r.reshape(-1, f.n_levels)
    mean = r.mean(axis=0)
    q = np.quantile(r, [0.025, 0.25, 0.75, 0.975], axis=0)
    order = np.argsort(mean)
    pos = np.arange(f.n_levels)
    fig, ax = plt.subplots(figsize=(6, max(2.5, 0.24 * f.n_levels + 1.2)))
    ax.hlines(pos, q[0, order], q[3, order], color="C0", lw=1, label="95% interval")
    ax.hlines(pos, q[1, order], q[2, order], color="C0", lw=3.5, label="50% interval")
    ax.scatter(mean[order], pos, color="black", s=18, zorder=3, label="posterior mean")
    ax.axvline(0, color="0.5", ls="--", lw=0.8)
    ax.set_yticks(pos, [f.levels[i] for i in order], fontsize=8 if f.n_levels <= 30 else 6)
    ax.set_ylim(-0.7, f.n_levels - 0.3)
    ax.set_xlabel(f"r_{group}[., {term}]")
    ax.set_ylabel(group)
    ax.set_title(f"Random effects of {group}: {term}", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


# -- dispatch (brms's mcmc_plot) -----------------------------------------------------

KINDS: dict[str, Callable[..., Figure]] = {
    "trace": plot_trace,
    "rank": plot_rank,
    "acf": plot_acf,
    "parallel": plot_parallel,
    "parcoord": plot_parallel,
    "pairs": plot_pairs,
    "energy": plot_energy,
    "ranef": plot_ranef,
}


def plot(fit: Any, kind: str = "trace", **kwargs: Any) -> Figure:
    """brms's ``mcmc_plot``: draw the figure ``kind`` for ``fit``.

    Parameters
    ----------
    kind : str
        One of ``trace``, ``rank``, ``acf``, ``parallel`` (or ``parcoord``),
        ``pairs``, ``energy``, ``ranef``.
    **kwargs
        Passed to the plotting function (``params=``, ``max_lag=``, ``group=``...).
    """
    if not isinstance(kind, str) or kind not in KINDS:
        raise LmmbayesError(f"Unknown plot kind {kind!r}; choose one of {list(KINDS)}.")
    return KINDS[kind](fit, **kwargs)
