"""Convergence diagnostics: the per-parameter table, the sampler report, advice.

Unit tests on synthetic draws (no sampling) check the numbers against known
answers; the shared session fit checks the table's layout and agreement with
the summary; a copy of that fit with divergences written into its sampler
statistics checks the divergence report without a second fit.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import SLOPE, TUTORIAL_PRIORS

import lmmbayes as lb
from lmmbayes.workflow.diagnostics import (
    DIAGNOSTIC_COLUMNS,
    Diagnostics,
    SamplerReport,
    advice,
    convergence,
    diagnostics_table,
    ess_advice,
    fit_warnings,
    sampler_report,
)

N_FIXED = 6  # b_Intercept, b_std_age, 2 sd, 1 cor, sigma
N_RANDOM = 8 * 2


def convergence_table(names: list[str], draws: np.ndarray):
    """The per-parameter table as diagnostics_table builds it: every column, indexed by name."""
    table = convergence(draws, mcse=True)
    table.index = names
    return table[DIAGNOSTIC_COLUMNS]


def ebfmi(energy: np.ndarray) -> np.ndarray:
    """E-BFMI per chain as Stan defines it: sum of squared energy changes over the sum of squared deviations."""
    dev = energy - energy.mean(axis=1, keepdims=True)
    return (np.diff(energy, axis=1) ** 2).sum(axis=1) / (dev**2).sum(axis=1)


def with_divergences(fit: lb.Fit, n: int) -> lb.Fit:
    """A copy of ``fit`` whose first ``n`` draws of chain 1 are marked divergent."""
    stats = fit.idata["sample_stats"].to_dataset()
    div = np.zeros(stats["diverging"].shape, dtype=bool)
    div[0, :n] = True
    idata = fit.idata.copy()
    idata["sample_stats"] = xr.DataTree(stats.assign(diverging=(("chain", "draw"), div)))
    return dataclasses.replace(fit, idata=idata)


# -- unit tests, no sampling ------------------------------------------------------------

def test_convergence_table_on_iid_draws():
    rng = np.random.default_rng(0)
    draws = rng.normal(size=(4, 500, 3))
    table = convergence_table(["a", "b", "c"], draws)
    assert list(table.columns) == DIAGNOSTIC_COLUMNS
    assert list(table.index) == ["a", "b", "c"]
    assert (table["Rhat"] < 1.01).all()
    assert ((table["Bulk_ESS"] > 1500) & (table["Bulk_ESS"] < 2600)).all()
    # For iid draws MCSE of the mean is sd / sqrt(n).
    np.testing.assert_allclose(table["MCSE_mean"], 1 / np.sqrt(2000), rtol=0.15)
    assert (table["MCSE_sd"] > 0).all()


def test_convergence_table_flags_chains_that_disagree():
    rng = np.random.default_rng(1)
    draws = rng.normal(size=(2, 300, 1))
    draws[1] += 3.0
    table = convergence_table(["x"], draws)
    assert table.loc["x", "Rhat"] > 1.05
    warns = advice(SamplerReport(600, 0, 0, (1.0, 1.0), (0.5, 0.5)), table["Rhat"].max(), 0.8)
    assert any("Rhat" in w for w in warns)


def test_ess_advice_names_the_parameters():
    rng = np.random.default_rng(2)
    walk = np.cumsum(rng.normal(size=(2, 200, 1)), axis=1)  # a random walk: tiny ESS
    table = convergence_table(["slow", "fast"],
                              np.concatenate([walk, rng.normal(size=(2, 200, 1))], axis=-1))
    warns = ess_advice(table, n_chains=2)
    assert len(warns) == 2
    assert all("slow" in w and "fast" not in w and "200" in w for w in warns)


def test_existing_sampler_report_behaviour():
    energy = np.array([[1.0, 2.0, 1.5, 3.0], [0.0, 1.0, 0.0, 1.0]])
    stats = xr.Dataset({
        "diverging": (("chain", "draw"), np.array([[1, 0, 0, 1], [0, 0, 0, 0]], dtype=bool)),
        "reached_max_treedepth": (("chain", "draw"), np.zeros((2, 4), dtype=bool)),
        "energy": (("chain", "draw"), energy),
        "step_size": (("chain", "draw"), np.full((2, 4), 0.25)),
    })
    report = sampler_report(stats)
    assert report.divergences == 2 and report.n_draws == 8
    assert report.divergence_share == pytest.approx(0.25)
    np.testing.assert_allclose(report.ebfmi, ebfmi(energy))
    assert report.step_size == (0.25, 0.25)
    assert any("2 divergent transitions" in w for w in advice(report, 1.0, 0.8))
    assert any("above 0.8" in w for w in advice(report, 1.0, None))  # brms's default adapt_delta


def test_low_ebfmi_names_chains_from_one():
    report = SamplerReport(800, 0, 0, (0.9, 0.2, 0.1, 1.1), (0.5,) * 4)
    (warning,) = advice(report, 1.0, 0.8)
    assert "E-BFMI below 0.3 in chain(s) [2, 3]" in warning


def test_ess_advice_ignores_undefined_ess():
    table = pd.DataFrame({"Bulk_ESS": [np.nan, 1000.0], "Tail_ESS": [np.nan, 900.0]}, index=["const", "x"])
    assert ess_advice(table, n_chains=2) == ()


# -- on a fit -------------------------------------------------------------------------------

def test_diagnostics_table_layout(bounce_slope_fit):
    diag = bounce_slope_fit.diagnostics()
    assert isinstance(diag, Diagnostics)
    table = diag.parameters
    assert list(table.columns) == ["Rhat", "Bulk_ESS", "Tail_ESS", "MCSE_mean", "MCSE_sd"]
    assert len(table) == N_FIXED + N_RANDOM
    assert list(table.index[:N_FIXED]) == ["b_Intercept", "b_std_age", "sd_county__Intercept",
                                          "sd_county__std_age", "cor_county__Intercept__std_age",
                                          "sigma"]
    assert "r_county[kent,std_age]" in table.index
    assert table.notna().all().all()
    assert len(diagnostics_table(bounce_slope_fit, include_random=False).parameters) == N_FIXED
    with pytest.raises(dataclasses.FrozenInstanceError):
        diag.parameters = None  # type: ignore[misc]


def test_diagnostics_agree_with_summary_and_draws(bounce_slope_fit):
    table = bounce_slope_fit.diagnostics().parameters
    summary = bounce_slope_fit.summary()
    for name, row in [("b_Intercept", "Intercept"), ("b_std_age", "std_age")]:
        for col in ("Rhat", "Bulk_ESS", "Tail_ESS"):
            assert table.loc[name, col] == pytest.approx(summary.fixed.loc[row, col])
    assert table.loc["sigma", "Rhat"] == pytest.approx(summary.spec.loc["sigma", "Rhat"])
    # MCSE of the mean is about the posterior SD over sqrt(ESS).
    sd = bounce_slope_fit.draws()[list(table.index)].std()
    ratio = table["MCSE_mean"] / (sd / np.sqrt(table["Bulk_ESS"]))
    assert ratio.between(0.5, 2.0).all()


def test_sampler_part_and_printing(bounce_slope_fit):
    diag = bounce_slope_fit.diagnostics()
    assert diag.sampler == bounce_slope_fit.sampler_report
    assert len(diag.sampler.ebfmi) == bounce_slope_fit.config.chains
    assert isinstance(diag.warnings, tuple) and all(isinstance(w, str) for w in diag.warnings)
    for w in bounce_slope_fit.warnings:  # the summary's advice is part of it
        if "Rhat" not in w:
            assert w in diag.warnings
    text = str(diag)
    for token in ["Rhat", "Bulk_ESS", "MCSE_sd", "r_county[kent,Intercept]", "Divergent transitions",
                  "Max tree depth hits", "E-BFMI per chain", "Step size per chain"]:
        assert token in text


def test_divergences_are_counted_and_advised(bounce_slope_fit):
    fit = with_divergences(bounce_slope_fit, 7)
    diag = fit.diagnostics()
    n = bounce_slope_fit.config.chains * bounce_slope_fit.config.draws
    assert diag.sampler.divergences == 7
    assert diag.sampler.divergence_share == pytest.approx(7 / n)
    assert any("7 divergent transitions" in w and "target_accept" in w for w in diag.warnings)
    assert f"7 of {n}" in str(diag)


def test_fit_warnings_agree_with_the_fit(bounce_slope_fit):
    assert fit_warnings(bounce_slope_fit) == bounce_slope_fit.warnings
    diverged = with_divergences(bounce_slope_fit, 3)
    assert any("3 divergent transitions" in w for w in fit_warnings(diverged))


def test_prior_only_fit_has_no_sampler_statistics(bounce):
    fit = lb.fit(SLOPE, bounce, TUTORIAL_PRIORS, sample_prior="only", draws=200, seed=4, progress=False)
    diag = fit.diagnostics()
    assert diag.sampler.n_draws == 0 and diag.sampler.divergences == 0
    assert "No sampler statistics" in str(diag)
    assert (diag.parameters["Bulk_ESS"] > 100).all()  # independent draws
    assert diag.warnings == () and fit_warnings(fit) == ()
