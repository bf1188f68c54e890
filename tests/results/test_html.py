"""Notebook display: every table-like result has a ``_repr_html_`` that carries its numbers.

Witnesses are computed here from the draws (or from the result's parts), not read back from the HTML.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import lmmbayes as lb


def test_fit_summary_and_diagnostics_html(bounce_slope_fit):
    mean = float(bounce_slope_fit.draws()["b_std_age"].mean())  # the summary's Estimate is the posterior mean
    for shown in (bounce_slope_fit._repr_html_(), bounce_slope_fit.summary()._repr_html_()):
        assert shown.startswith("<pre>") and f"{mean:.2f}" in shown and "bounce_times" in shown
    diag = bounce_slope_fit.diagnostics()
    shown = diag._repr_html_()
    assert "<table" in shown and "b_std_age" in shown
    assert f"{diag.parameters.loc['b_std_age', 'Rhat']:.3g}" in shown


def test_hypothesis_html_is_escaped(bounce_slope_fit):
    result = bounce_slope_fit.hypothesis("std_age < 0")
    shown = result._repr_html_()
    mean = float(bounce_slope_fit.draws()["b_std_age"].mean())
    assert f"{mean:.2f}" in shown
    assert "&lt; 0" in shown and "< 0" not in shown  # a hypothesis is text, not markup


def test_emmeans_html(effects_fit):
    emm = effects_fit.emmeans("cat")
    shown = emm._repr_html_()
    for level, value in zip(emm.table["cat"], emm.table["emmean"]):
        assert str(level) in shown and f"{value:.4f}"[:-1] in shown  # pandas prints 6 decimals


def test_conditional_effects_html(effects_fit):
    ce = effects_fit.conditional_effects(["x", "cat"])
    shown = ce._repr_html_()
    assert shown.count("<table") == 2 and "<h4>x</h4>" in shown and "<h4>cat</h4>" in shown
    # a factor's table whole; the 100-point grid of a numeric effect cut to its first and last rows
    for value in ce["cat"]["estimate__"]:
        assert f"{value:.3f}" in shown
    x = ce["x"]
    assert f"{x['estimate__'].iloc[0]:.3f}" in shown and f"{x['estimate__'].iloc[-1]:.3f}" in shown
    assert shown.count("<tr>") < len(x)


def test_kfold_html(effects_fit):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lb.ConvergenceWarning)
        kf = effects_fit.kfold(K=2, seed=1, draws=100, tune=100)
    shown = kf._repr_html_()
    assert shown.startswith("<pre>") and "elpd_kfold" in shown
    assert f"{kf.elpd_i.sum():.1f}" in shown  # elpd_kfold is the sum of the held-out densities


def test_bridge_and_bayes_factor_html(effects_fit):
    bs = effects_fit.bridge_sampler()
    assert f"{bs.logml:.5f}" in bs._repr_html_()
    bf = lb.bayes_factor(effects_fit, effects_fit, names=("a", "b"))
    shown = bf._repr_html_()
    assert f"{np.exp(bf.bridge1.logml - bf.bridge2.logml):.5f}" in shown and "a over b" in shown


@pytest.mark.parametrize("loader", ["load_bounce_times", "load_radon"])
def test_bundled_data_are_named(loader):
    first, second = getattr(lb.datasets, loader)(), getattr(lb.datasets, loader)()
    assert first.attrs["name"] and first.attrs == second.attrs
    first.attrs["name"] = "mine"  # each call returns a new frame
    assert second.attrs["name"] != "mine"
