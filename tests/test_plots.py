"""Figures through the public API: what each draws, divergences in red, errors.

Counts artists rather than pixels: lines per group, panels per data set,
one point per level, exactly as many red draws as the sampler reported
divergences.
"""

from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import LineCollection, PathCollection  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from PIL import Image  # noqa: E402

import lmmbayes as lb  # noqa: E402
import lmmbayes.plots as plots  # noqa: E402
from conftest import SLOPE, TUTORIAL_PRIORS  # noqa: E402

RED = to_rgba("red")
FIXED = ["b_Intercept", "b_std_age", "sd_county__Intercept", "sd_county__std_age",
         "cor_county__Intercept__std_age", "sigma"]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def divergent_fit(bounce) -> lb.Fit:
    """The random-slope model with a far too low target_accept: NUTS diverges."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lb.ConvergenceWarning)
        return lb.fit(SLOPE, bounce, TUTORIAL_PRIORS, chains=1, draws=200, tune=100,
                      target_accept=0.3, seed=3, progress=False, method="joint")


@pytest.fixture(scope="module")
def bounce_pp(bounce):
    return lb.prior_predictive(SLOPE, bounce, TUTORIAL_PRIORS, draws=40, seed=7)


def n_divergent(fit: lb.Fit) -> int:
    return int(fit.idata["sample_stats"]["diverging"].values.sum())


def is_red(artist) -> bool:
    colours = artist.get_edgecolor() if isinstance(artist, LineCollection) else artist.get_facecolor()
    return len(colours) > 0 and all(tuple(c[:3]) == RED[:3] for c in colours)


# -- plot_groups -------------------------------------------------------------------

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
    assert pooled[0].get_label() in [t.get_text() for t in ax.get_legend().get_texts()]
    # The pooled line is the least-squares line of all points.
    xs, ys = pooled[0].get_data()
    slope = (ys[1] - ys[0]) / (xs[1] - xs[0])
    assert slope == pytest.approx(np.polyfit(bounce["std_age"], bounce["bounce_time"], 1)[0])
    # Every point is drawn once, one scatter per group in its own colour.
    scatters = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(scatters) == bounce["county"].nunique()
    assert sum(len(c.get_offsets()) for c in scatters) == len(bounce)
    assert len({tuple(c.get_facecolor()[0]) for c in scatters}) == len(scatters)


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


# -- prior predictive flip-book --------------------------------------------------------

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
    # Each simulated panel is one of the simulated data sets.
    sims = bounce_pp["prior_predictive"]["y"].values[0]
    shown = axes[1].collections[0].get_offsets()[:, 1]
    assert any(np.allclose(shown, s) for s in sims)
    # Coloured by county: as many colours as counties.
    colours = {tuple(c) for c in axes[0].collections[0].get_facecolor()}
    assert len(colours) == bounce["county"].nunique()


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


# -- MCMC diagnostics ------------------------------------------------------------------

def test_trace_has_density_and_trace_per_parameter_and_chain(bounce_slope_fit):
    fig = lb.plot_trace(bounce_slope_fit)
    assert len(fig.axes) == 2 * len(FIXED)
    chains = bounce_slope_fit.config.chains
    assert all(len(ax.get_lines()) == chains for ax in fig.axes)
    labels = [fig.axes[2 * k].get_ylabel() for k in range(len(FIXED))]
    assert labels == FIXED
    # The trace lines hold the draws themselves.
    trace = fig.axes[1].get_lines()[0].get_ydata()
    np.testing.assert_allclose(trace, bounce_slope_fit.posterior["b"].values[0, :, 0])


def test_params_select_names_and_classes(bounce_slope_fit):
    fig = lb.plot_trace(bounce_slope_fit, params=["sd", "sigma"])
    assert [fig.axes[k].get_ylabel() for k in (0, 2, 4)] == ["sd_county__Intercept",
                                                             "sd_county__std_age", "sigma"]
    fig = lb.plot_trace(bounce_slope_fit, params="r_county[kent,Intercept]")
    assert len(fig.axes) == 2
    fig = lb.plot_rank(bounce_slope_fit, params=["r"])
    assert len(fig.axes) == 16 * bounce_slope_fit.config.chains


def test_unknown_params_list_the_valid_names(bounce_slope_fit):
    with pytest.raises(lb.LmmbayesError, match="b_age") as info:
        lb.plot_trace(bounce_slope_fit, params=["b_age"])
    message = str(info.value)
    for token in ["'sd'", "b_std_age", "sd_county__Intercept", "r_county["]:
        assert token in message


def test_rank_and_acf_have_a_panel_per_parameter_and_chain(bounce_slope_fit):
    chains = bounce_slope_fit.config.chains
    fig = lb.plot_rank(bounce_slope_fit, params=["b"])
    assert len(fig.axes) == 2 * chains
    # Ranks over all chains: the chains' histograms together count every draw.
    counts = sum(sum(p.get_height() for p in ax.patches) for ax in fig.axes[:chains])
    assert counts == chains * bounce_slope_fit.config.draws
    fig = lb.plot_acf(bounce_slope_fit, params=["b", "sigma"], max_lag=10)
    assert len(fig.axes) == 3 * chains
    for ax in fig.axes:
        assert len(ax.patches) == 11
        assert ax.patches[0].get_height() == pytest.approx(1.0)
    with pytest.raises(lb.LmmbayesError, match="max_lag"):
        lb.plot_acf(bounce_slope_fit, max_lag=10_000)


def test_energy_plot_reports_ebfmi(bounce_slope_fit):
    fig = lb.plot_energy(bounce_slope_fit)
    assert len(fig.axes) == 1
    title = fig.axes[0].get_title()
    assert "E-BFMI" in title
    for value in bounce_slope_fit.sampler_report.ebfmi:
        assert f"{value:.2f}" in title
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["marginal energy", "energy transition"]


def test_ranef_caterpillar_has_one_sorted_point_per_level(bounce_slope_fit):
    for term in ("Intercept", "std_age"):
        fig = lb.plot_ranef(bounce_slope_fit, term=term)
        ax = fig.axes[0]
        (points,) = [c for c in ax.collections if isinstance(c, PathCollection)]
        xy = points.get_offsets()
        assert len(xy) == 8
        assert np.all(np.diff(xy[:, 0]) >= 0)  # sorted by posterior mean
        means = bounce_slope_fit.ranef()["county"].xs(term, level="term")["Estimate"]
        labels = [t.get_text() for t in ax.get_yticklabels()]
        np.testing.assert_allclose(xy[:, 0], means.loc[labels].to_numpy())
        assert len([c for c in ax.collections if isinstance(c, LineCollection)]) == 2  # 50% and 95%


def test_ranef_errors_name_group_and_term(bounce_slope_fit):
    with pytest.raises(lb.LmmbayesError, match="region.*county"):
        lb.plot_ranef(bounce_slope_fit, group="region")
    with pytest.raises(lb.LmmbayesError, match="age.*std_age"):
        lb.plot_ranef(bounce_slope_fit, term="age")


def test_plot_dispatches_by_kind(bounce_slope_fit):
    assert len(bounce_slope_fit.plot("trace", params=["sigma"]).axes) == 2
    assert len(plots.plot(bounce_slope_fit, "parcoord").axes) == 1
    assert len(bounce_slope_fit.plot("ranef", group="county").axes) == 1
    with pytest.raises(lb.LmmbayesError, match="histogram") as info:
        bounce_slope_fit.plot("histogram")
    for kind in ["trace", "rank", "acf", "parallel", "pairs", "energy", "ranef"]:
        assert kind in str(info.value)


def test_divergent_draws_are_red_in_parallel_coordinates(divergent_fit):
    n_div = n_divergent(divergent_fit)
    assert n_div > 0, "target_accept=0.3 should make NUTS diverge"
    fig = lb.plot_parallel(divergent_fit)
    ax = fig.axes[0]
    red = [c for c in ax.collections if is_red(c)]
    assert len(red) == 1 and red[0].get_label() == "divergent"
    assert len(red[0].get_segments()) == n_div
    others = [c for c in ax.collections if not is_red(c)]
    assert sum(len(c.get_segments()) for c in others) == divergent_fit.config.draws - n_div
    assert red[0].get_zorder() > others[0].get_zorder()
    assert f"{n_div} divergent" in ax.get_title()


def test_divergent_draws_are_red_in_pairs(divergent_fit):
    n_div = n_divergent(divergent_fit)
    params = ["b_Intercept", "sd_county__Intercept", "sigma"]
    fig = lb.plot_pairs(divergent_fit, params=params)
    assert len(fig.axes) == 9
    k = len(params)
    for i in range(k):
        for j in range(i):
            ax = fig.axes[i * k + j]
            red = [c for c in ax.collections if is_red(c)]
            assert len(red) == 1 and len(red[0].get_offsets()) == n_div
            # The red points are the divergent draws of these two parameters.
            draws = divergent_fit.draws()
            div = divergent_fit.idata["sample_stats"]["diverging"].values.ravel().astype(bool)
            np.testing.assert_allclose(red[0].get_offsets()[:, 0], draws[params[j]].to_numpy()[div])


def test_no_red_when_no_divergences(bounce_slope_fit):
    n_div = n_divergent(bounce_slope_fit)
    fig = lb.plot_parallel(bounce_slope_fit)
    red = [c for c in fig.axes[0].collections if is_red(c)]
    assert sum(len(c.get_segments()) for c in red) == n_div


def test_energy_needs_sampler_statistics(bounce):
    prior_fit = lb.fit(SLOPE, bounce, TUTORIAL_PRIORS, sample_prior="only", draws=50, seed=1,
                       progress=False)
    with pytest.raises(lb.LmmbayesError, match="sample_prior"):
        lb.plot_energy(prior_fit)
    # Plots of draws still work on prior draws (one chain).
    assert len(lb.plot_trace(prior_fit, params="b").axes) == 4
