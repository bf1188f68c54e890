"""MCMC diagnostic figures as brms's ``mcmc_plot``, drawn by arviz-plots.

Each function is a thin wrapper over an arviz-plots plot (matplotlib
backend) applied to the draws under their brms names:

==========================  ======================================
`plot_trace`          ``arviz_plots.plot_trace_dist``
`plot_rank`           ``arviz_plots.plot_rank``
`plot_acf`            ``arviz_plots.plot_autocorr``
`plot_parallel`       ``arviz_plots.plot_parallel`` (divergent draws in red)
`plot_pairs`          ``arviz_plots.plot_pair`` (divergent draws in red)
`plot_energy`         ``arviz_plots.plot_energy``
`plot_forest`         ``arviz_plots.plot_forest``
`plot_ranef`          a caterpillar plot in plain matplotlib
==========================  ======================================

Every function returns a `matplotlib.figure.Figure`. Diagnostic plots
take ``params``: brms parameter names (``"b_Intercept"``,
``"sd_county__std_age"``, ``"r_county[kent,Intercept]"``) or class names
(``"b"``, ``"sd"``, ``"cor"``, ``"sigma"``, ``"r"``) that stand for every
parameter of the class; by default all parameters except the random effects.
Chains are numbered from 1 in every label and legend.

matplotlib and arviz-plots are imported by the functions, never by this
module, so that ``import lmmbayes`` stays light.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, cast

import numpy as np
import xarray as xr

from .. import _validate as check
from ..errors import LmmbayesError
from ..results.model import FitResult
from ..results.posterior import brms_view, dpar_names, flat_draws, parameter_class

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DIVERGENT_COLOUR = "red"
DIVERGENT_LABEL = "divergent"
DRAW_COLOUR = "0.5"
BACKEND: Final = "matplotlib"


# -- choosing the parameters -------------------------------------------------------------

def param_classes(fit: FitResult) -> tuple[str, ...]:
    """Class names ``params`` may use for this model: b, sd, cor, each distributional parameter, r."""
    return ("b", "sd", "cor", *dpar_names(fit.design), "r")


def _valid_names_text(names: list[str], classes: Sequence[str]) -> str:
    fixed = [n for n in names if parameter_class(n) != "r"]
    text = f"class names {list(classes)} or parameters {fixed}"
    random = [n for n in names if parameter_class(n) == "r"]
    if random:
        text += f", or random effects such as {random[0]!r} ({len(random)} in all)"
    return text


def select_params(fit: FitResult, params: str | Sequence[str] | None = None) -> list[str]:
    """The brms names ``params`` picks, in brms's order of the classes as given.

    Parameters
    ----------
    fit : FitResult
    params : str, sequence of str or None
        Parameter names or class names; None: every parameter except the
        random effects.

    Raises
    ------
    LmmbayesError
        If a name is neither a parameter nor a class (listing the valid ones),
        or if the selection is empty.
    """
    names, _ = flat_draws(fit.posterior, fit.design, random=True)
    classes = param_classes(fit)
    if params is None:
        chosen = [n for n in names if parameter_class(n) != "r"]
    else:
        wanted = [params] if isinstance(params, str) else list(params)
        known = set(names)
        chosen, unknown = [], []
        for p in wanted:
            if isinstance(p, str) and p in classes:
                chosen += [n for n in names if parameter_class(n) == p]
            elif isinstance(p, str) and p in known:
                chosen.append(p)
            else:
                unknown.append(p)
        if unknown:
            raise LmmbayesError(f"Unknown parameter(s) {unknown}; valid: {_valid_names_text(names, classes)}.")
        chosen = list(dict.fromkeys(chosen))
    if not chosen:
        raise LmmbayesError(
            f"params={params!r} selects no parameter of this model; valid: {_valid_names_text(names, classes)}."
        )
    return chosen


def _sample_stats(fit: FitResult) -> xr.Dataset:
    if "sample_stats" not in fit.idata.children:
        return xr.Dataset(coords={"chain": fit.posterior["chain"].values, "draw": fit.posterior["draw"].values})
    return fit.idata["sample_stats"].to_dataset()


def _one_based(ds: xr.Dataset) -> xr.Dataset:
    """The same data with chains numbered 1, 2, ... (brms's and Stan's numbering) for every label."""
    return ds.assign_coords(chain=np.arange(1, ds.sizes["chain"] + 1)) if "chain" in ds.dims else ds


def brms_tree(fit: FitResult, names: list[str]) -> xr.DataTree:
    """A DataTree for arviz-plots: the chosen brms-named draws and the sampler statistics."""
    posterior = _one_based(brms_view(fit.posterior, fit.design, names))
    return xr.DataTree.from_dict({"posterior": posterior, "sample_stats": _one_based(_sample_stats(fit))})


def divergent_mask(fit: FitResult) -> np.ndarray:
    """(chain, draw) booleans: which draws ended in a divergent transition (none if unknown)."""
    shape = fit.posterior["b"].shape[:2]
    stats = _sample_stats(fit)
    if "diverging" not in stats or stats["diverging"].shape != shape:
        return np.zeros(shape, dtype=bool)
    return np.asarray(stats["diverging"].values, dtype=bool)


# -- the figure of a plot collection --------------------------------------------------------

def _figure(pc: Any, *, drop_empty: bool = True) -> Figure:
    """The matplotlib figure arviz-plots drew into, without the blank cells of a wrapped grid."""
    fig = pc.viz["figure"].item()
    if drop_empty:
        for ax in list(fig.axes):
            # A wrapped grid switches its unused cells off; they would count as panels.
            if not ax.axison and not (ax.lines or ax.collections or ax.patches or ax.texts):
                fig.delaxes(ax)
    return fig


def _chain_legend(pc: Any, fig: Figure, n_chain: int) -> None:
    """A figure legend "chain 1", "chain 2", ... in the colours and line styles arviz-plots gave the chains.

    Built from the aesthetic mappings rather than by ``PlotCollection.add_legend``
    because some plots (``plot_rank``) renumber the chains from 0 internally.
    """
    from matplotlib.lines import Line2D

    if n_chain < 2 or not fig.axes:
        return
    style: dict[str, Any] = {}
    for aes, key in (("color", "color"), ("linestyle", "linestyle")):
        if aes in pc.aes.children and "mapping" in pc.aes[aes].data_vars:
            mapping = pc.aes[aes]["mapping"]
            if mapping.dims == ("chain",) and mapping.size == n_chain:
                style[key] = list(mapping.values)
    if not style:
        return
    handles = [Line2D([], [], color=style["color"][c] if "color" in style else "0.3",
                      linestyle=style["linestyle"][c] if "linestyle" in style else "-", label=f"chain {c + 1}")
               for c in range(n_chain)]
    fig.legend(handles=handles, loc="outside right upper", fontsize=8)


def _layout(**figure_kwargs: Any) -> dict[str, Any]:
    # Constrained layout keeps long brms names and titles from overlapping or being cut off.
    return {"layout": "constrained", **figure_kwargs}


# -- MCMC diagnostics --------------------------------------------------------------------------

def plot_trace(fit: FitResult, params: str | Sequence[str] | None = None) -> Figure:
    """Per parameter: posterior density by chain (left) and trace by chain (right).

    Draws with a divergent transition are marked by ticks under both panels.
    Wraps ``arviz_plots.plot_trace_dist``.

    Parameters
    ----------
    fit : FitResult
    params : str, sequence of str or None
        See the module docstring.

    Returns
    -------
    matplotlib.figure.Figure
        ``2 * K`` axes for ``K`` parameters (density, trace for each), one line
        per chain in each; the trace axes carry the parameter names as y labels.
    """
    import arviz_plots as azp

    names = select_params(fit, params)
    pc = azp.plot_trace_dist(brms_tree(fit, names), backend=BACKEND,
                             figure_kwargs=_layout(figsize=(10, 1.7 * len(names) + 0.8)))
    fig = _figure(pc)
    _chain_legend(pc, fig, fit.n_chains)
    return fig


def plot_rank(fit: FitResult, params: str | Sequence[str] | None = None) -> Figure:
    """Rank ECDF difference plots per parameter, one line per chain (Säilynoja et al. 2022).

    Draws of all chains are ranked together; with good mixing each chain's
    ranks are uniform and its line stays near zero, inside the simultaneous
    band. This is arviz-plots's successor of bayesplot's rank histograms
    (``mcmc_rank_hist``), with a test instead of eyeballed bars. Wraps
    ``arviz_plots.plot_rank``.

    Returns
    -------
    matplotlib.figure.Figure
        One axes per parameter, titled by its name, with one line per chain.
    """
    import arviz_plots as azp

    names = select_params(fit, params)
    pc = azp.plot_rank(brms_tree(fit, names), backend=BACKEND, figure_kwargs=_layout())
    fig = _figure(pc)
    _chain_legend(pc, fig, fit.n_chains)
    return fig


def plot_acf(fit: FitResult, params: str | Sequence[str] | None = None, max_lag: int = 20) -> Figure:
    """Autocorrelation by lag, per parameter, one line per chain (bayesplot's ``mcmc_acf``).

    Wraps ``arviz_plots.plot_autocorr``.

    Parameters
    ----------
    max_lag : int
        Largest lag shown (lags ``0..max_lag``); below the draws per chain.

    Returns
    -------
    matplotlib.figure.Figure
        One axes per parameter, titled by its name, one line per chain with
        ``max_lag + 1`` points starting at 1 (lag 0).
    """
    import arviz_plots as azp

    names = select_params(fit, params)
    n_draw = int(fit.posterior.sizes["draw"])
    max_lag = check.count(max_lag, "max_lag")
    if max_lag >= n_draw:
        raise LmmbayesError(f"max_lag must be below the number of draws per chain ({n_draw}), got {max_lag}.")
    # arviz-plots shows lags 0..max_lag - 1.
    pc = azp.plot_autocorr(brms_tree(fit, names), max_lag=max_lag + 1, backend=BACKEND,
                           figure_kwargs=_layout())
    fig = _figure(pc)
    _chain_legend(pc, fig, fit.n_chains)
    return fig


def plot_parallel(fit: FitResult, params: str | Sequence[str] | None = None) -> Figure:
    """Parallel coordinates of standardised draws, divergent draws in red on top.

    Each draw is a line across the parameters, every parameter standardised
    (draws minus mean, over SD); divergences that cluster where some
    parameter is small (typically an ``sd``) point to a funnel. Wraps
    ``arviz_plots.plot_parallel`` (``norm_method="normal"``).

    Returns
    -------
    matplotlib.figure.Figure
        One axes with one line collection per kind of draw: grey, faint for
        the others and, when there are divergences, red (labelled
        ``"divergent"``, drawn on top), one line per draw. The parameter names
        label the x ticks, rotated and never cut off.

    Raises
    ------
    LmmbayesError
        If ``params`` selects fewer than two parameters.
    """
    import arviz_plots as azp

    names = select_params(fit, params)
    if len(names) < 2:
        raise LmmbayesError(f"A parallel coordinates plot needs at least two parameters; params selects {names}.")
    div = divergent_mask(fit)
    pc = azp.plot_parallel(
        brms_tree(fit, names), norm_method="normal", backend=BACKEND,
        color=[DRAW_COLOUR, DIVERGENT_COLOUR], alpha=[0.15, 0.8],
        visuals={"xticks": {"rotation": 45, "ha": "right", "rotation_mode": "anchor", "fontsize": 8}},
        figure_kwargs=_layout(figsize=(max(6.0, 0.9 * len(names) + 2.5), 5.0)),
    )
    fig = _figure(pc)
    ax = fig.axes[0]
    lines = pc.viz["line"].to_dataset()
    for flag, artist in zip(lines["diverging"].values, next(iter(lines.data_vars.values())).values):
        if flag:
            artist.set_label(DIVERGENT_LABEL)
            artist.set_zorder(3)
        else:
            artist.set_label("draws")
            artist.set_zorder(1)
    ax.set_ylabel("standardised value")
    ax.set_title(f"Parallel coordinates: {int(div.sum())} divergent draws (red) of {div.size}", fontsize=10)
    if div.any():
        ax.legend(handles=[c for c in ax.collections if c.get_label() == DIVERGENT_LABEL], fontsize=8,
                  loc="upper right")
    return fig


def plot_pairs(fit: FitResult, params: str | Sequence[str] | None = None) -> Figure:
    """Scatter-plot matrix of the draws, divergent draws in red on top.

    Wraps ``arviz_plots.plot_pair`` with its divergence layer switched on.

    Returns
    -------
    matplotlib.figure.Figure
        ``K x K`` axes: densities on the diagonal, scatter plots below it
        (upper triangle blank); in each scatter, per chain, one collection of
        draws and one red collection (labelled ``"divergent"``) of that chain's
        divergent draws.

    Raises
    ------
    LmmbayesError
        If ``params`` selects fewer than two parameters.
    """
    import arviz_plots as azp
    from matplotlib.colors import to_rgb

    names = select_params(fit, params)
    k = len(names)
    if k < 2:
        raise LmmbayesError(f"A pairs plot needs at least two parameters; params selects {names}.")
    div = divergent_mask(fit)
    size = min(2.2, 14.0 / k)
    pm = azp.plot_pair(brms_tree(fit, names), backend=BACKEND,
                       visuals={"scatter": {"color": "C0"}, "divergence": {"color": DIVERGENT_COLOUR, "alpha": 0.9}},
                       figure_kwargs=_layout(figsize=(size * k + 1.0, size * k + 1.0)))
    fig = _figure(pm, drop_empty=False)
    # Found by colour: arviz-plots 1.3 keeps only one chain's divergence artist in ``viz``.
    red = to_rgb(DIVERGENT_COLOUR)
    for ax in fig.axes:
        for artist in ax.collections:
            colours = np.atleast_2d(np.asarray(artist.get_facecolor(), dtype=float))
            if colours.size and np.all(colours[:, :3] == red):
                artist.set_label(DIVERGENT_LABEL)
                artist.set_zorder(3)
    fig.suptitle(f"Pairs: {int(div.sum())} divergent draws in red", fontsize=10)
    return fig


def plot_energy(fit: FitResult) -> Figure:
    """Marginal energy against energy transition distributions (Betancourt 2017), and E-BFMI per chain.

    When the transition distribution is much narrower than the marginal one
    (low E-BFMI), NUTS explores the tails poorly. Wraps
    ``arviz_plots.plot_energy``; the title gives each chain's E-BFMI.

    Returns
    -------
    matplotlib.figure.Figure
        Two axes: E-BFMI per chain (left, chains numbered from 1, the 0.3
        threshold dashed) and the two energy densities (right), with a legend
        "marginal energy", "energy transition".

    Raises
    ------
    LmmbayesError
        If the fit has no sampler energy (e.g. ``sample_prior="only"``).
    """
    import arviz_plots as azp

    from .diagnostics import sampler_report

    stats = _sample_stats(fit)
    energy = stats["energy"].values if "energy" in stats else None
    if energy is None or energy.ndim != 2 or energy.shape[1] < 2:
        raise LmmbayesError("This fit has no NUTS energy statistics to plot "
                            "(draws not made by NUTS, e.g. sample_prior='only').")
    ebfmi = sampler_report(stats).ebfmi
    tree = xr.DataTree.from_dict({"sample_stats": _one_based(stats[["energy"]])})
    pc = azp.plot_energy(tree, backend=BACKEND, figure_kwargs=_layout(figsize=(9, 3.8)))
    fig = _figure(pc)
    n_chain = energy.shape[0]
    # arviz-plots places chain c at height c - 1; label the heights with the chain numbers.
    fig.axes[0].set_yticks(np.arange(n_chain), [str(c + 1) for c in range(n_chain)])
    fig.axes[0].set_xlabel("E-BFMI")
    renamed = {"marginal": "marginal energy", "transition": "energy transition"}
    for legend in fig.legends:
        for text in legend.get_texts():
            text.set_text(renamed.get(text.get_text(), text.get_text()))
    fig.suptitle("E-BFMI: " + ", ".join(f"chain {c + 1} {v:.2f}" for c, v in enumerate(ebfmi)), fontsize=10)
    return fig


def plot_forest(fit: FitResult, params: str | Sequence[str] | None = None, *, combined: bool = True,
                prob: float = 0.95) -> Figure:
    """Forest plot: each parameter's posterior median with 50% and ``prob`` intervals (``mcmc_intervals``).

    Wraps ``arviz_plots.plot_forest`` (equal-tailed intervals).

    Parameters
    ----------
    combined : bool
        One interval per parameter from all chains (default) or one per chain.
    prob : float
        Probability mass of the outer interval (the inner one holds 50%).

    Returns
    -------
    matplotlib.figure.Figure
        Two axes: the parameter names (left) and the intervals (right).
    """
    import arviz_plots as azp

    names = select_params(fit, params)
    combined = check.flag(combined, "combined")
    prob = cast(float, check.probability(prob, "prob"))
    pc = azp.plot_forest(brms_tree(fit, names), combined=combined, ci_kind="eti", ci_probs=(0.5, prob),
                         point_estimate="median", backend=BACKEND,
                         figure_kwargs=_layout(figsize=(8, 0.45 * len(names) * (1 if combined else fit.n_chains)
                                                        + 1.5)))
    fig = _figure(pc)
    fig.suptitle(f"Posterior medians with 50% and {100 * prob:g}% intervals", fontsize=10)
    return fig


def plot_ranef(fit: FitResult, group: str | None = None, term: str = "Intercept") -> Figure:
    """Caterpillar plot of one grouping factor's random effects for one term.

    Each level's posterior mean (point) with its 50% (thick) and 95% (thin)
    equal-tailed intervals, levels sorted by the mean. Plain matplotlib:
    arviz-plots's forest plot does not sort by the estimate.

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

    Raises
    ------
    LmmbayesError
        If the model has no group-level terms, or ``group`` or ``term`` is
        unknown (listing the valid ones).
    """
    import matplotlib.pyplot as plt

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
    r = np.asarray(fit.posterior[f"r_{group}"].values)[..., list(f.terms).index(term)]
    r = r.reshape(-1, f.n_levels)
    mean = r.mean(axis=0)
    q = np.quantile(r, [0.025, 0.25, 0.75, 0.975], axis=0)
    order = np.argsort(mean)
    pos = np.arange(f.n_levels)
    fig, ax = plt.subplots(figsize=(6, max(2.5, 0.24 * f.n_levels + 1.2)), layout="constrained")
    ax.hlines(pos, q[0, order], q[3, order], color="C0", lw=1, label="95% interval")
    ax.hlines(pos, q[1, order], q[2, order], color="C0", lw=3.5, label="50% interval")
    ax.scatter(mean[order], pos, color="black", s=18, zorder=3, label="posterior mean")
    ax.axvline(0, color="0.5", ls="--", lw=0.8)
    ax.set_yticks(pos, [str(f.levels[i]) for i in order], fontsize=8 if f.n_levels <= 30 else 6)
    ax.set_ylim(-0.7, f.n_levels - 0.3)
    ax.set_xlabel(f"r_{group}[., {term}]")
    ax.set_ylabel(group)
    ax.set_title(f"Random effects of {group}: {term}", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    return fig


# -- dispatch (brms's mcmc_plot) ------------------------------------------------------------------

KINDS: dict[str, Callable[..., Figure]] = {
    "trace": plot_trace,
    "rank": plot_rank,
    "acf": plot_acf,
    "parallel": plot_parallel,
    "parcoord": plot_parallel,
    "pairs": plot_pairs,
    "energy": plot_energy,
    "forest": plot_forest,
    "ranef": plot_ranef,
}


def plot(fit: FitResult, kind: str = "trace", **kwargs: Any) -> Figure:
    """brms's ``mcmc_plot``: draw the figure ``kind`` for ``fit``.

    Parameters
    ----------
    fit : FitResult
    kind : str
        One of ``trace``, ``rank``, ``acf``, ``parallel`` (or ``parcoord``),
        ``pairs``, ``energy``, ``forest``, ``ranef``.
    **kwargs
        Passed to the plotting function (``params=``, ``max_lag=``, ``group=``...).

    Raises
    ------
    LmmbayesError
        For an unknown ``kind``, listing the kinds.
    """
    if not isinstance(kind, str) or kind not in KINDS:
        raise LmmbayesError(f"Unknown plot kind {kind!r}; choose one of {list(KINDS)}.")
    return KINDS[kind](fit, **kwargs)


__all__ = ["plot", "plot_acf", "plot_energy", "plot_forest", "plot_pairs", "plot_parallel", "plot_ranef",
           "plot_rank", "plot_trace", "select_params"]
