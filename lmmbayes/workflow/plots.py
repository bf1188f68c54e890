"""Figures for the start of the Bayesian workflow, in plain matplotlib.

- exploratory: `plot_groups` (within-group and pooled trends);
- priors by simulation: `plot_prior_predictive` (a flip-book of
  simulated data sets, optionally an animated GIF).

Both return a `matplotlib.figure.Figure`. matplotlib is imported by
the functions, not by this module, so that ``import lmmbayes`` stays light.
The MCMC diagnostic plots are in `lmmbayes.workflow.mcmc_plots`, the
posterior predictive checks in `lmmbayes.workflow.checks`.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import xarray as xr

from .. import _validate as check
from ..design.frame import as_frame
from ..errors import DataError, LmmbayesError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

OBSERVED_TITLE = "observed"
#: Up to this many entries a legend column holds; more entries get more columns.
LEGEND_ROWS = 20


# -- helpers ---------------------------------------------------------------------------

def _colours(n: int) -> list[tuple[float, float, float, float]]:
    """``n`` distinguishable colours (tab10, tab20, then a sampled colormap)."""
    import matplotlib

    if n <= 10:
        cmap = matplotlib.colormaps["tab10"]
        return [cmap(i) for i in range(n)]
    if n <= 20:
        cmap = matplotlib.colormaps["tab20"]
        return [cmap(i) for i in range(n)]
    cmap = matplotlib.colormaps["turbo"]
    return [cmap(v) for v in np.linspace(0.05, 0.95, n)]


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


def _legend_columns(entries: int) -> int:
    return max(1, math.ceil(entries / LEGEND_ROWS))


# -- exploratory data analysis -------------------------------------------------------------

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
        single value get no line), and the pooled line (black, dashed). The
        legend (a figure legend) sits to the right of the axes, so it never
        hides points, however many groups there are.

    Raises
    ------
    DataError
        If a column is missing, ``x`` or ``y`` is not numeric, or no complete row is left.
    """
    import matplotlib.pyplot as plt

    df = as_frame(data)
    _check_columns(df, response=y, predictor=x, group=group)
    yv = _numeric_column(df, y, "the response")
    xv = _numeric_column(df, x, "the predictor")
    gv = df[group]
    keep = np.isfinite(yv) & np.isfinite(xv) & gv.notna().to_numpy()
    if not keep.any():
        raise DataError(f"No row has values for all of '{y}', '{x}' and '{group}'.")
    yv, xv, gv = yv[keep], xv[keep], gv[keep]
    levels = _group_levels(gv)
    ncols = _legend_columns(len(levels) + 1)
    # Constrained layout makes room for the outside legend by shrinking the axes.
    fig, ax = plt.subplots(figsize=(7.5 + 1.3 * ncols, 5), layout="constrained")
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
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, title=group, fontsize=8, title_fontsize=8, loc="outside right upper",
               ncols=ncols)
    return fig


# -- prior predictive flip-book --------------------------------------------------------------

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
        What `lmmbayes.prior_predictive` returned.
    data : pandas.DataFrame or polars.DataFrame
        The data given to `prior_predictive`; supplies ``x``
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

    Raises
    ------
    LmmbayesError
        If ``pp`` is not what `prior_predictive` returns, ``n``
        exceeds the simulated data sets, or ``animate`` is not a ``.gif`` name.
    DataError
        If a column is missing or ``data`` has fewer rows than were simulated.
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba
    from matplotlib.lines import Line2D

    y_sim, y_obs, rows, response = _check_pp(pp)
    n = check.count(n, "n")
    ncols = check.count(ncols, "ncols")
    if n > y_sim.shape[0]:
        raise LmmbayesError(f"n={n} but pp holds only {y_sim.shape[0]} simulated data sets; "
                            "lower n or draw more in prior_predictive(draws=...).")
    if animate is not None and not str(animate).lower().endswith(".gif"):
        raise LmmbayesError(f"animate must be a file name ending in .gif, got {str(animate)!r}.")
    rng = check.rng(seed)
    df = as_frame(data)
    _check_columns(df, predictor=x, group=group)
    if rows.size and rows.max() >= len(df):
        raise DataError(f"data has {len(df)} rows but pp was simulated from at least {rows.max() + 1}; "
                        "pass the data frame given to prior_predictive().")
    xv = _numeric_column(df, x, "the predictor")[rows]
    if group is not None:
        gv = df[group].iloc[rows]
        levels = _group_levels(gv)
        palette = dict(zip(levels, _colours(len(levels))))
        point_colours = np.array([palette.get(v, (0.5, 0.5, 0.5, 1.0)) for v in gv.to_numpy()])
    else:
        palette = {}
        point_colours = np.tile(to_rgba("C0"), (xv.size, 1))
    picked = rng.choice(y_sim.shape[0], size=n, replace=False)

    nrows = math.ceil((n + 1) / ncols)
    fig, axes = plt.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False,
                             figsize=(2.6 * ncols + 1.0, 2.1 * nrows + 0.8), layout="constrained")
    flat = axes.ravel()
    for ax in flat[n + 1:]:
        fig.delaxes(ax)
    panels = [(OBSERVED_TITLE, y_obs)] + [(f"prior draw {k + 1}", y_sim[k]) for k in picked]
    for ax, (title, yk) in zip(flat, panels):
        ax.scatter(xv, yk, s=4, c=point_colours, alpha=0.7, linewidths=0)
        observed = title == OBSERVED_TITLE
        ax.set_title(title, fontsize=9, fontweight="bold" if observed else "normal")
        if observed:
            for spine in ax.spines.values():
                spine.set_linewidth(2)
        ax.tick_params(labelsize=7, labelleft=True, labelbottom=True)
    fig.supxlabel(x)
    fig.supylabel(response)
    fig.suptitle("Prior predictive check: data sets simulated from the priors", fontsize=11)
    if palette and len(palette) <= 2 * LEGEND_ROWS:
        handles = [Line2D([], [], ls="", marker="o", color=c, label=str(k)) for k, c in palette.items()]
        fig.legend(handles=handles, title=group, fontsize=7, title_fontsize=8,
                   loc="outside right center", ncols=_legend_columns(len(handles)))
    if animate is not None:
        _write_gif(animate, xv, y_sim[picked], picked, y_obs, point_colours, x, response)
    return fig


def _write_gif(path: str | os.PathLike[str], xv: np.ndarray, y_sets: np.ndarray, picked: np.ndarray,
               y_obs: np.ndarray, point_colours: np.ndarray, x: str, response: str) -> None:
    """An animated GIF, one frame per simulated data set, observed data in grey behind."""
    from matplotlib.animation import FuncAnimation, PillowWriter
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.6))  # not registered with pyplot: nothing to close
    ax = fig.add_subplot()
    ax.scatter(xv, y_obs, s=5, color="0.8", linewidths=0, label=OBSERVED_TITLE)
    points = ax.scatter(xv, y_sets[0], s=6, c=point_colours, alpha=0.8, linewidths=0, label="simulated")
    values = np.concatenate([y_sets.ravel(), y_obs])
    values = values[np.isfinite(values)]
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    pad = 0.05 * (hi - lo) if hi > lo else 1.0
    ax.set_ylim(lo - pad, hi + pad)  # one scale for every frame, so frames compare
    ax.set_xlabel(x)
    ax.set_ylabel(response)
    ax.legend(fontsize=7, loc="upper left")

    def label(i: int) -> str:
        return f"prior draw {picked[i] + 1} (data set {i + 1} of {len(y_sets)})"

    title = ax.set_title(label(0), fontsize=10)
    fig.tight_layout()  # with a title in place, so that it is not cut off

    def frame(i: int) -> tuple[Any, ...]:
        points.set_offsets(np.column_stack([xv, y_sets[i]]))
        title.set_text(label(i))
        return points, title

    anim = FuncAnimation(fig, frame, frames=len(y_sets), interval=1000, blit=False)
    try:
        anim.save(os.fspath(path), writer=PillowWriter(fps=1), dpi=80)
    except (OSError, ValueError) as exc:
        raise LmmbayesError(f"Could not write the animation to {str(path)!r}: {exc}") from exc


__all__ = ["plot_groups", "plot_prior_predictive"]
