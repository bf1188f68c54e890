"""pp_check through the public API: what each kind draws, reproducibility, and its errors."""

from __future__ import annotations

import dataclasses
import warnings
from typing import ClassVar

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from conftest import TUTORIAL_PRIORS
from matplotlib.collections import PathCollection
from matplotlib.container import ErrorbarContainer

import lmmbayes as lb
from lmmbayes.families.builtin import Gaussian
from lmmbayes.workflow import checks

PRIORS = TUTORIAL_PRIORS
NDRAWS = 20


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def fit():
    data = lb.datasets.load_bounce_times()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lb.LmmbayesWarning)
        return lb.fit("bounce_time ~ std_age + (1 | county)", data, PRIORS, chains=2, draws=200, tune=200,
                      seed=11, progress=False)


@dataclasses.dataclass(frozen=True)
class RoundedGaussian(Gaussian):
    """A discrete family for the test (no count family ships yet): normal draws rounded to counts."""

    name: str = "rounded_gaussian"
    discrete: ClassVar[bool] = True
    default_check: ClassVar[str] = "rootogram"

    def random(self, rng, eta, dp, extra):
        return np.maximum(np.rint(super().random(rng, eta, dp, extra)), 0.0)


@pytest.fixture(scope="module")
def count_fit():
    """A fit of counts whose family is swapped for a discrete one: pp_check's real path with integer replicates."""
    rng = np.random.default_rng(5)
    g = np.repeat(np.arange(10), 15)
    data = pd.DataFrame({"count": rng.poisson(np.exp(1.0 + rng.normal(0, 0.3, 10))[g]),
                         "g": [f"g{k}" for k in g]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lb.LmmbayesWarning)
        fit = lb.fit("count ~ 1 + (1 | g)", data, chains=2, draws=200, tune=200, seed=2, progress=False)
    return dataclasses.replace(fit, design=dataclasses.replace(fit.design, family=RoundedGaussian()))


# -- the continuous kinds --------------------------------------------------------------------

def test_dens_overlay_is_the_default_with_thick_observed_line_over_the_replicates(fit):
    assert fit.family.default_check == "dens_overlay"
    fig = fit.pp_check(ndraws=NDRAWS, seed=1)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert "density" in ax.get_title()
    lines = ax.get_lines()
    assert len(lines) == NDRAWS + 1
    observed = [ln for ln in lines if ln.get_label() == "y"]
    assert len(observed) == 1
    widths = [ln.get_linewidth() for ln in lines if ln is not observed[0]]
    assert observed[0].get_linewidth() > 3 * max(widths)
    assert observed[0].get_zorder() > max(ln.get_zorder() for ln in lines if ln is not observed[0])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["y", "y_rep"]
    # The observed curve is a density of y: it integrates to about one over y's range.
    x, d = observed[0].get_data()
    assert np.trapezoid(d, x) == pytest.approx(1.0, abs=0.05)
    assert x.min() <= fit.design.y.min() + 1 and x.max() >= fit.design.y.max() - 1


def test_ecdf_overlay_ends_at_one(fit):
    fig = fit.pp_check("ecdf_overlay", ndraws=NDRAWS, seed=1)
    ax = fig.axes[0]
    assert "ECDF" in ax.get_title()
    lines = ax.get_lines()
    assert len(lines) == NDRAWS + 1
    (observed,) = [ln for ln in lines if ln.get_label() == "y"]
    y = np.sort(fit.design.y)
    xs, fs = observed.get_data()
    assert fs.min() >= 0 and fs.max() == pytest.approx(1.0)
    # ECDF of y at its median is one half.
    assert np.interp(np.median(y), xs, fs) == pytest.approx(0.5, abs=0.02)


def test_hist_has_a_panel_for_y_and_each_replicate(fit):
    fig = fit.pp_check("hist", ndraws=NDRAWS, seed=1)
    assert len(fig.axes) == 1 + checks.HIST_PANELS
    assert [ax.get_title() for ax in fig.axes] == ["y"] + [f"y_rep {j}" for j in range(1, 9)]
    assert all(len(ax.patches) == 30 for ax in fig.axes)
    # The first panel counts every observation once.
    assert sum(p.get_height() for p in fig.axes[0].patches) == len(fit.design.y)
    plt.close(fig)
    fig = fit.pp_check("hist", ndraws=3, seed=1)
    assert len(fig.axes) == 4


def test_stat_marks_the_observed_statistic_among_the_replicates(fit):
    fig = fit.pp_check("stat", ndraws=None, stat="sd", seed=1)
    ax = fig.axes[0]
    y = fit.design.y
    observed = np.std(y, ddof=1)
    labels = ax.get_legend_handles_labels()[1]
    assert labels == ["sd(y_rep)", f"sd(y) = {observed:.4g}"]
    (point,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert point.get_offsets()[0, 0] == pytest.approx(observed)
    assert len(ax.get_lines()) == 1  # the histogram of sd over the replicates
    assert f"over {fit.n_draws} replicates" in ax.get_title() and "P(T(y_rep) >= T(y))" in ax.get_title()
    # A function works too, named by its __name__.
    def q90(a, axis=None):
        return np.quantile(a, 0.9, axis=axis)

    fig = fit.pp_check("stat", ndraws=NDRAWS, stat=q90, seed=1)
    assert fig.axes[0].get_legend_handles_labels()[1][1].startswith("q90(y) = ")


def test_intervals_show_every_observation(fit):
    fig = fit.pp_check("intervals", ndraws=NDRAWS, seed=1)
    ax = fig.axes[0]
    n = len(fit.design.y)
    markers = {c.get_label(): c for c in ax.collections if isinstance(c, PathCollection)}
    assert set(markers) == {"y", "y_rep median"}
    np.testing.assert_allclose(markers["y"].get_offsets()[:, 1], fit.design.y)
    assert len(markers["y_rep median"].get_offsets()) == n
    assert len(ax.get_lines()) == 2 * n  # an inner and an outer interval per observation


def test_same_seed_same_figure_and_draws_taken_at_random(fit):
    a = fit.pp_check("hist", ndraws=4, seed=3).axes[1].patches
    b = fit.pp_check("hist", ndraws=4, seed=3).axes[1].patches
    c = fit.pp_check("hist", ndraws=4, seed=4).axes[1].patches
    assert [p.get_height() for p in a] == [p.get_height() for p in b]
    assert [p.get_height() for p in a] != [p.get_height() for p in c]
    yrep, y = checks.replicates(fit, 5, seed=3)
    assert yrep.shape == (5, len(fit.design.y)) and np.array_equal(y, fit.design.y)


def test_scatter_avg_and_error_scatter_avg_plot_the_replicates_mean(fit):
    yrep, y = checks.replicates(fit, NDRAWS, seed=2)
    (points,) = fit.pp_check("scatter_avg", ndraws=NDRAWS, seed=2).axes[0].collections
    np.testing.assert_allclose(points.get_offsets(), np.column_stack([yrep.mean(axis=0), y]))
    (errors,) = fit.pp_check("error_scatter_avg", ndraws=NDRAWS, seed=2).axes[0].collections
    np.testing.assert_allclose(errors.get_offsets(), np.column_stack([y, y - yrep.mean(axis=0)]))


def test_stat_grouped_has_a_panel_per_level_with_the_observed_stat(fit):
    fig = fit.pp_check("stat_grouped", ndraws=NDRAWS, stat="median", group="county", seed=1)
    county = fit.design.factors[0]
    rows = fit.design.rows.factors[0].index
    assert len(fig.axes) == min(county.n_levels, checks.GROUP_PANELS)
    for ax, g in zip(fig.axes, range(county.n_levels)):
        assert ax.get_title() == f"county = {county.levels[g]}"
        (line,) = ax.get_lines()
        assert line.get_xdata()[0] == pytest.approx(np.median(fit.design.y[rows == g]))
    with pytest.raises(lb.LmmbayesError, match=r"group= one of the model's grouping factors \['county'\]"):
        fit.pp_check("stat_grouped", group="state")


def test_loo_pit_overlay_is_near_uniform_for_a_well_specified_model(fit):
    """The LOO-PIT of a model fitted to data like it is close to uniform: arviz-plots prints the p-value of its
    uniformity test (pot_c) in the panel, which must not reject at 0.01."""
    fig = fit.pp_check("loo_pit_overlay", seed=1)
    ax = fig.axes[0]
    (text,) = [t.get_text() for t in ax.texts if t.get_text().startswith("p=")]
    assert float(text[2:].split("(")[0]) > 0.01
    assert "LOO-PIT" in ax.get_title()


# -- the discrete kinds ----------------------------------------------------------------------

def test_bars_count_each_value_with_replicate_intervals(count_fit):
    fig = count_fit.pp_check("bars", ndraws=40, seed=1)
    ax = fig.axes[0]
    y = count_fit.design.y.astype(int)
    bars = {round(p.get_x() + p.get_width() / 2): p.get_height() for p in ax.patches}
    assert bars == {v: (y == v).sum() for v in bars}
    assert sum(bars.values()) == len(y)
    assert set(np.unique(y)) <= set(bars)
    assert ax.get_legend_handles_labels()[1] == ["y", "y_rep (median, 90% interval)"]
    # The replicate medians are the median counts of each value over the replicates.
    yrep, _ = checks.replicates(count_fit, 40, seed=1)
    (errorbar,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    xs, medians = errorbar.lines[0].get_data()
    for x, m in zip(xs, medians):
        assert m == pytest.approx(np.median((yrep == x).sum(axis=1)))


def test_rootogram_is_the_discrete_default(count_fit):
    fig = count_fit.pp_check(ndraws=40, seed=1)
    ax = fig.axes[0]
    assert "rootogram" in ax.get_title() and ax.get_yscale() == "sqrt"
    # The observed markers are the frequencies of y.
    y = count_fit.design.y.astype(int)
    offsets = [c.get_offsets() for c in ax.collections if isinstance(c, PathCollection)]
    observed = {int(x): f for x, f in offsets[-1]}
    assert observed == {v: (y == v).sum() for v in observed}
    assert sum(observed.values()) == len(y)


@pytest.mark.parametrize("kind", ["bars", "rootogram"])
def test_discrete_kinds_refuse_continuous_families(fit, kind):
    with pytest.raises(lb.LmmbayesError, match=f"'{kind}' is for discrete.*'gaussian'") as info:
        fit.pp_check(kind)
    message = str(info.value)
    assert "'dens_overlay'" in message and "'intervals'" in message and "'bars'" not in message.split("choose")[1]


# -- errors ------------------------------------------------------------------------------------

def test_bad_arguments_name_the_argument_and_the_valid_values(fit):
    with pytest.raises(lb.LmmbayesError, match=r"Unknown pp_check kind 'violin'.*'dens_overlay', 'hist', 'stat'"):
        fit.pp_check("violin")
    with pytest.raises(lb.LmmbayesError, match=r"Unknown stat 'kurtosis'.*'mean'.*'iqr'"):
        fit.pp_check("stat", stat="kurtosis")
    for bad in (0, -1, 2.5, True):
        with pytest.raises(lb.LmmbayesError, match="ndraws must be a positive integer"):
            fit.pp_check(ndraws=bad)


def test_a_fit_without_rows_says_so(fit):
    """A Dask fit keeps cross-products, not rows: nothing to replicate."""
    no_rows = dataclasses.replace(fit, design=dataclasses.replace(fit.design, rows=None))
    with pytest.raises(lb.FitError, match=r"pp_check\(\) needs the rows.*Dask DataFrame"):
        no_rows.pp_check()
