"""Figures through the public API: EDA, the prior flip-book and the MCMC diagnostics.

Counts artists rather than pixels: lines per group, panels per data set,
one point per level, exactly as many red draws as the sampler reported
divergences; and measures where legends and labels land once drawn.
"""

from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from conftest import TUTORIAL_PRIORS
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.colors import to_rgba
from matplotlib.transforms import Bbox
from PIL import Image

import lmmbayes as lb
from lmmbayes.workflow import mcmc_plots

PRIORS = TUTORIAL_PRIORS
SLOPE = "bounce_time ~ std_age + (1 + std_age | county)"
FIXED = ["b_Intercept", "b_std_age", "sd_county__Intercept", "sd_county__std_age",
         "cor_county__Intercept__std_age", "sigma"]
RED = to_rgba("red")
KW = {"chains": 2, "draws": 200, "tune": 200, "progress": False}


def quiet_fit(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lb.LmmbayesWarning)
        return lb.fit(*args, **kwargs)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def bounce() -> pd.DataFrame:
    return lb.datasets.load_bounce_times()


@pytest.fixture(scope="module")
def slope_fit(bounce):
    return quiet_fit(SLOPE, bounce, PRIORS, seed=11, **KW)


@pytest.fixture(scope="module")
def divergent_fit(bounce):
    """The random-slope model with a far too low target_accept: NUTS diverges."""
    return quiet_fit(SLOPE, bounce, PRIORS, target_accept=0.3, seed=3, method="collapsed", **KW)


@pytest.fixture(scope="module")
def bounce_pp(bounce):
    return lb.prior_predictive(SLOPE, bounce, PRIORS, draws=40, seed=7)


def n_divergent(fit) -> int:
    return int(fit.idata["sample_stats"]["diverging"].values.sum())


def divergent_flat(fit) -> np.ndarray:
    return fit.idata["sample_stats"]["diverging"].values.ravel().astype(bool)


def is_red(artist) -> bool:
    colours = artist.get_edgecolor() if isinstance(artist, LineCollection) else artist.get_facecolor()
    return len(colours) > 0 and all(tuple(c[:3]) == RED[:3] for c in colours)


def overlaps(a: Bbox, b: Bbox) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def inside(inner: Bbox, outer: Bbox, tol: float = 0.5) -> bool:
    return (inner.x0 >= outer.x0 - tol and inner.y0 >= outer.y0 - tol
            and inner.x1 <= outer.x1 + tol and inner.y1 <= outer.y1 + tol)


def legend_texts(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


# -- plot_groups -------------------------------------------------------------------------

def test_plot_groups_draws_a_line_per_group_and_a_pooled_line(bounce):
    before = bounce.copy()
    fig = lb.plot_groups(bounce, y="bounce_time", x="std_age", group="county")
    pd.testing.assert_frame_equal(bounce, before)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert len(lines) == bounce["county"].nunique() + 1
    pooled = [ln for ln in lines if ln.get_label().startswith("pooled")]
    assert len(pooled) == 1
    assert pooled[0].get_color() == "black" and pooled[0].get_linestyle() == "--"
    assert pooled[0].get_label() in legend_texts(fig)
    # The pooled line is the least-squares line of all points.
    xs, ys = pooled[0].get_data()
    slope = (ys[1] - ys[0]) / (xs[1] - xs[0])
    assert slope == pytest.approx(np.polyfit(bounce["std_age"], bounce["bounce_time"], 1)[0])
    # Every point is drawn once, one scatter per group in its own colour, each in the legend.
    scatters = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(scatters) == bounce["county"].nunique()
    assert sum(len(c.get_offsets()) for c in scatters) == len(bounce)
    assert len({tuple(c.get_facecolor()[0]) for c in scatters}) == len(scatters)
    assert set(bounce["county"].unique()) <= set(legend_texts(fig))


def test_plot_groups_shows_pooled_trend_differs_from_within_group_trends(bounce):
    # Counties differ in level and age: the pooled slope is steeper than every county's.
    fig = lb.plot_groups(bounce, "bounce_time", "std_age", "county")
    slopes = {}
    for ln in fig.axes[0].get_lines():
        xs, ys = ln.get_data()
        slopes[ln.get_label()] = (ys[1] - ys[0]) / (xs[1] - xs[0])
    pooled = next(v for k, v in slopes.items() if k.startswith("pooled"))
    within = [v for k, v in slopes.items() if not k.startswith("pooled")]
    assert pooled > max(within)
    assert "pooled slope" in fig.axes[0].get_title()


@pytest.mark.parametrize("n_groups", [8, 30])
def test_plot_groups_legend_never_covers_the_data(n_groups):
    """With many groups the legend used to fill the axes and hide points; it now sits beside them."""
    rng = np.random.default_rng(1)
    g = np.repeat([f"group {k:02d}" for k in range(n_groups)], 10)
    x = rng.normal(size=g.size)
    data = pd.DataFrame({"y": 2 * x + rng.normal(size=g.size), "x": x, "g": g})
    fig = lb.plot_groups(data, "y", "x", "g")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    (legend,) = fig.legends + ([ax.get_legend()] if ax.get_legend() else [])
    box = legend.get_window_extent(renderer)
    assert not overlaps(box, ax.get_window_extent(renderer))
    assert inside(box, fig.bbox)  # and is not cut off either
    assert sum(t.get_text().startswith("group ") for t in legend.get_texts()) == n_groups


def test_plot_groups_leaves_out_missing_rows_without_touching_the_frame():
    data = pd.DataFrame({"y": [1.0, 2.0, np.nan, 4.0, 5.0, 6.0, 7.0],
                         "x": [0.0, 1.0, 2.0, 3.0, 0.0, 1.0, 2.0],
                         "g": ["a", "a", "a", "a", "b", "b", None]})
    before = data.copy()
    fig = lb.plot_groups(data, "y", "x", "g")
    pd.testing.assert_frame_equal(data, before)
    scatters = [c for c in fig.axes[0].collections if isinstance(c, PathCollection)]
    assert sum(len(c.get_offsets()) for c in scatters) == 5
    assert len(fig.axes[0].get_lines()) == 3


@pytest.mark.parametrize("kwargs, culprit", [
    ({"y": "bounce_tme", "x": "std_age", "group": "county"}, "bounce_tme"),
    ({"y": "bounce_time", "x": "std_age", "group": "region"}, "region"),
    ({"y": "bounce_time", "x": "county", "group": "county"}, "county"),
    ({"y": "county", "x": "std_age", "group": "county"}, "county"),
])
def test_plot_groups_errors_name_the_column(bounce, kwargs, culprit):
    with pytest.raises(lb.DataError, match=culprit):
        lb.plot_groups(bounce, **kwargs)


def test_plot_groups_rejects_non_frames():
    with pytest.raises(lb.DataError, match="DataFrame"):
        lb.plot_groups({"y": [1, 2]}, "y", "x", "g")


# -- prior predictive flip-book -----------------------------------------------------------------

def test_flip_book_has_n_panels_plus_observed_with_shared_y(bounce, bounce_pp):
    fig = lb.plot_prior_predictive(bounce_pp, bounce, "std_age", "county", n=6, ncols=4, seed=1)
    axes = fig.axes
    assert len(axes) == 7
    assert axes[0].get_title() == "observed"
    assert all(ax.get_title().startswith("prior draw") for ax in axes[1:])
    assert len({ax.get_ylim() for ax in axes}) == 1
    for ax in axes:
        (points,) = [c for c in ax.collections if isinstance(c, PathCollection)]
        assert len(points.get_offsets()) == len(bounce)
    observed = axes[0].collections[0].get_offsets()
    np.testing.assert_allclose(observed[:, 0], bounce["std_age"])
    np.testing.assert_allclose(observed[:, 1], bounce["bounce_time"])
    # Each simulated panel is the simulated data set its title names.
    sims = bounce_pp["prior_predictive"]["y"].values[0]
    for ax in axes[1:]:
        k = int(ax.get_title().split()[-1]) - 1
        np.testing.assert_allclose(ax.collections[0].get_offsets()[:, 1], sims[k])
    # Coloured by county: as many colours as counties, and a legend of them.
    colours = {tuple(c) for c in axes[0].collections[0].get_facecolor()}
    assert len(colours) == bounce["county"].nunique()
    assert set(bounce["county"].unique()) == set(legend_texts(fig))


def test_flip_book_writes_a_gif_with_n_frames(bounce, bounce_pp, tmp_path):
    path = tmp_path / "prior.gif"
    fig = lb.plot_prior_predictive(bounce_pp, bounce, "std_age", n=5, animate=path, seed=2)
    assert len(fig.axes) == 6
    assert path.exists()
    with Image.open(path) as gif:
        assert gif.n_frames == 5


def test_flip_book_errors(bounce, bounce_pp, tmp_path):
    with pytest.raises(lb.LmmbayesError, match="40 simulated"):
        lb.plot_prior_predictive(bounce_pp, bounce, "std_age", n=41)
    with pytest.raises(lb.LmmbayesError, match=r"\.gif"):
        lb.plot_prior_predictive(bounce_pp, bounce, "std_age", n=3, animate=tmp_path / "a.mp4")
    with pytest.raises(lb.DataError, match="age_std"):
        lb.plot_prior_predictive(bounce_pp, bounce, "age_std")
    with pytest.raises(lb.DataError, match="region"):
        lb.plot_prior_predictive(bounce_pp, bounce, "std_age", group="region")
    with pytest.raises(lb.LmmbayesError, match="prior_predictive"):
        lb.plot_prior_predictive(bounce, bounce, "std_age")
    with pytest.raises(lb.LmmbayesError, match="n must be a positive integer"):
        lb.plot_prior_predictive(bounce_pp, bounce, "std_age", n=0)
    with pytest.raises(lb.LmmbayesError, match="ncols must be a positive integer"):
        lb.plot_prior_predictive(bounce_pp, bounce, "std_age", ncols=1.5)
    with pytest.raises(lb.DataError, match="rows"):
        lb.plot_prior_predictive(bounce_pp, bounce.head(10), "std_age", n=2)


# -- MCMC diagnostics ----------------------------------------------------------------------------

def test_trace_has_density_and_trace_per_parameter_and_chain(slope_fit):
    fig = lb.plot_trace(slope_fit)
    assert len(fig.axes) == 2 * len(FIXED)
    chains = slope_fit.n_chains
    assert all(len(ax.get_lines()) == chains for ax in fig.axes)
    assert [fig.axes[2 * k + 1].get_ylabel() for k in range(len(FIXED))] == FIXED
    # The trace lines hold the draws themselves, chain by chain.
    for c in range(chains):
        trace = fig.axes[1].get_lines()[c].get_ydata()
        np.testing.assert_allclose(trace, slope_fit.posterior["b"].values[c, :, 0])
    # Chains are numbered from 1.
    assert legend_texts(fig) == ["chain 1", "chain 2"]


def test_params_select_names_and_classes(slope_fit):
    fig = lb.plot_trace(slope_fit, params=["sd", "sigma"])
    assert [fig.axes[k].get_ylabel() for k in (1, 3, 5)] == ["sd_county__Intercept", "sd_county__std_age", "sigma"]
    fig = lb.plot_trace(slope_fit, params="r_county[kent,Intercept]")
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "r_county[kent,Intercept]"
    plt.close("all")
    fig = lb.plot_rank(slope_fit, params=["r"])
    assert len(fig.axes) == 16
    assert fig.axes[0].get_title() == "r_county[cheshire,Intercept]"
    assert mcmc_plots.select_params(slope_fit, ["sigma", "b", "sigma"]) == ["sigma", "b_Intercept", "b_std_age"]


def test_unknown_params_list_the_valid_names(slope_fit):
    with pytest.raises(lb.LmmbayesError, match="b_age") as info:
        lb.plot_trace(slope_fit, params=["b_age"])
    message = str(info.value)
    for token in ["'sd'", "'sigma'", "b_std_age", "sd_county__Intercept", "r_county["]:
        assert token in message
    with pytest.raises(lb.LmmbayesError, match="selects no parameter"):
        lb.plot_trace(slope_fit, params=[])


def test_rank_and_acf_have_a_panel_per_parameter_with_a_line_per_chain(slope_fit):
    chains = slope_fit.n_chains
    fig = lb.plot_rank(slope_fit, params=["b"])
    assert [ax.get_title() for ax in fig.axes] == ["b_Intercept", "b_std_age"]
    assert all(len(ax.get_lines()) == chains for ax in fig.axes)
    assert legend_texts(fig) == ["chain 1", "chain 2"]
    plt.close(fig)
    fig = lb.plot_acf(slope_fit, params=["b", "sigma"], max_lag=10)
    assert [ax.get_title() for ax in fig.axes] == ["b_Intercept", "b_std_age", "sigma"]
    for ax in fig.axes:
        acf = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-"]
        assert len(acf) == chains
        assert all(len(ln.get_ydata()) == 11 and ln.get_ydata()[0] == pytest.approx(1.0) for ln in acf)
    # The first chain's line is the autocorrelation of its draws of b_Intercept.
    x = slope_fit.posterior["b"].values[0, :, 0]
    x = x - x.mean()
    expected = np.correlate(x, x, "full")[x.size - 1:][:11]
    first = next(ln for ln in fig.axes[0].get_lines() if ln.get_linestyle() == "-")
    np.testing.assert_allclose(first.get_ydata(), expected / expected[0], atol=1e-8)
    with pytest.raises(lb.LmmbayesError, match="max_lag"):
        lb.plot_acf(slope_fit, max_lag=10_000)
    with pytest.raises(lb.LmmbayesError, match="max_lag must be a positive integer"):
        lb.plot_acf(slope_fit, max_lag=0)


def test_energy_plot_reports_ebfmi_per_chain_from_one(slope_fit):
    fig = lb.plot_energy(slope_fit)
    assert len(fig.axes) == 2
    title = fig.get_suptitle()
    assert "E-BFMI" in title
    for c, value in enumerate(slope_fit.sampler_report.ebfmi):
        assert f"chain {c + 1} {value:.2f}" in title
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["1", "2"]
    assert legend_texts(fig) == ["marginal energy", "energy transition"]


def test_ranef_caterpillar_has_one_sorted_point_per_level(slope_fit):
    for term in ("Intercept", "std_age"):
        fig = lb.plot_ranef(slope_fit, term=term)
        ax = fig.axes[0]
        (points,) = [c for c in ax.collections if isinstance(c, PathCollection)]
        xy = points.get_offsets()
        assert len(xy) == 8
        assert np.all(np.diff(xy[:, 0]) >= 0)  # sorted by posterior mean
        means = slope_fit.ranef()["county"].xs(term, level="term")["Estimate"]
        labels = [t.get_text() for t in ax.get_yticklabels()]
        np.testing.assert_allclose(xy[:, 0], means.loc[labels].to_numpy())
        assert len([c for c in ax.collections if isinstance(c, LineCollection)]) == 2  # 50% and 95%


def test_ranef_errors_name_group_and_term(slope_fit):
    with pytest.raises(lb.LmmbayesError, match="region.*county"):
        lb.plot_ranef(slope_fit, group="region")
    with pytest.raises(lb.LmmbayesError, match="age.*std_age"):
        lb.plot_ranef(slope_fit, term="age")


def test_forest_shows_each_parameter_at_its_median(slope_fit):
    fig = lb.plot_forest(slope_fit, params=["b", "sigma"])
    labels, intervals = fig.axes
    assert [t.get_text() for t in labels.texts] == ["b_Intercept", "b_std_age", "sigma"]
    points = np.concatenate([c.get_offsets()[:, 0] for c in intervals.collections])
    draws = slope_fit.draws()
    np.testing.assert_allclose(np.sort(points), np.sort(draws[["b_Intercept", "b_std_age", "sigma"]].median()))
    with pytest.raises(lb.LmmbayesError, match="prob"):
        lb.plot_forest(slope_fit, prob=95)


def test_plot_dispatches_by_kind(slope_fit):
    assert len(slope_fit.plot("trace", params=["sigma"]).axes) == 2
    assert len(mcmc_plots.plot(slope_fit, "parcoord").axes) == 1
    assert len(slope_fit.plot("ranef", group="county").axes) == 1
    assert len(slope_fit.plot("forest", params="sd").axes) == 2
    with pytest.raises(lb.LmmbayesError, match="histogram") as info:
        slope_fit.plot("histogram")
    for kind in ["trace", "rank", "acf", "parallel", "parcoord", "pairs", "energy", "forest", "ranef"]:
        assert f"'{kind}'" in str(info.value)


def test_divergent_draws_are_red_in_parallel_coordinates(divergent_fit):
    n_div = n_divergent(divergent_fit)
    assert n_div > 0, "target_accept=0.3 should make NUTS diverge"
    fig = lb.plot_parallel(divergent_fit)
    ax = fig.axes[0]
    red = [c for c in ax.collections if is_red(c)]
    assert len(red) == 1 and red[0].get_label() == "divergent"
    assert len(red[0].get_segments()) == n_div
    others = [c for c in ax.collections if not is_red(c)]
    assert sum(len(c.get_segments()) for c in others) == divergent_fit.n_draws - n_div
    assert red[0].get_zorder() > max(c.get_zorder() for c in others)
    assert f"{n_div} divergent" in ax.get_title()
    # The red lines are the divergent draws, standardised.
    draws = divergent_fit.draws()[FIXED].to_numpy()
    z = (draws - draws.mean(axis=0)) / draws.std(axis=0, ddof=0)
    shown = np.array([seg[:, 1] for seg in red[0].get_segments()])
    np.testing.assert_allclose(np.sort(shown[:, 0]), np.sort(z[divergent_flat(divergent_fit), 0]), rtol=1e-2)


def test_parallel_labels_are_not_cut_off(divergent_fit):
    fig = lb.plot_parallel(divergent_fit)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    labels = [t for t in fig.axes[0].get_xticklabels() if t.get_text()]
    assert [t.get_text() for t in labels] == FIXED
    for label in labels:
        assert inside(label.get_window_extent(renderer), fig.bbox), label.get_text()


def test_divergent_draws_are_red_in_pairs(divergent_fit):
    n_div = n_divergent(divergent_fit)
    div = divergent_flat(divergent_fit)
    draws = divergent_fit.draws()
    params = ["b_Intercept", "sd_county__Intercept", "sigma"]
    fig = lb.plot_pairs(divergent_fit, params=params)
    k = len(params)
    assert len(fig.axes) == k * k
    assert f"{n_div} divergent" in fig.get_suptitle()
    for i in range(k):
        for j in range(i):
            ax = fig.axes[i * k + j]
            red = [c for c in ax.collections if is_red(c)]
            assert all(c.get_label() == "divergent" for c in red)
            xy = np.concatenate([c.get_offsets() for c in red])
            assert len(xy) == n_div
            # The red points are the divergent draws of these two parameters.
            np.testing.assert_allclose(np.sort(xy[:, 0]), np.sort(draws[params[j]].to_numpy()[div]))
            np.testing.assert_allclose(np.sort(xy[:, 1]), np.sort(draws[params[i]].to_numpy()[div]))
            # All draws are there too, in other colours.
            assert sum(len(c.get_offsets()) for c in ax.collections if not is_red(c)) == divergent_fit.n_draws
    with pytest.raises(lb.LmmbayesError, match="at least two"):
        lb.plot_pairs(divergent_fit, params="sigma")


def test_no_red_without_divergences(slope_fit):
    n_div = n_divergent(slope_fit)
    fig = lb.plot_parallel(slope_fit)
    red = [c for c in fig.axes[0].collections if is_red(c)]
    assert sum(len(c.get_segments()) for c in red) == n_div


def test_prior_draws_plot_but_have_no_energy(bounce):
    prior_fit = lb.fit(SLOPE, bounce, PRIORS, sample_prior="only", draws=50, seed=1, progress=False)
    with pytest.raises(lb.LmmbayesError, match="sample_prior"):
        lb.plot_energy(prior_fit)
    # Plots of draws still work on prior draws (one chain, so no chain legend).
    fig = lb.plot_trace(prior_fit, params="b")
    assert len(fig.axes) == 4 and not fig.legends
    assert len(lb.plot_parallel(prior_fit, params="sd").axes) == 1
