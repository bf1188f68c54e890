"""Fitting through the public API: names, summary layout, tables, options, reproducibility."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pymc as pm
import pytest
from conftest import SLOPE, TUTORIAL_PRIORS, quiet_fit

import lmmbayes as lb


def test_posterior_summary_uses_brms_names(bounce_slope_fit):
    table = bounce_slope_fit.posterior_summary()
    assert list(table.columns) == ["Estimate", "Est.Error", "Q2.5", "Q97.5"]
    for name in ["b_Intercept", "b_std_age", "sd_county__Intercept", "sd_county__std_age",
                 "cor_county__Intercept__std_age", "sigma", "r_county[kent,Intercept]",
                 "r_county[kent,std_age]"]:
        assert name in table.index
    assert len(table) == 6 + 8 * 2
    probs = bounce_slope_fit.posterior_summary(probs=(0.05, 0.5, 0.95))
    assert list(probs.columns) == ["Estimate", "Est.Error", "Q5", "Q50", "Q95"]


def test_summary_prints_brms_layout(bounce_slope_fit):
    text = str(bounce_slope_fit.summary())
    lines = text.splitlines()
    assert lines[0] == " Family: gaussian"
    assert lines[1] == "  Links: mu = identity; sigma = identity"
    assert lines[2] == f"Formula: {SLOPE}"
    assert lines[3] == "   Data: bounce_times (Number of observations: 613)"  # load_bounce_times names its frame
    assert lines[4].startswith("  Draws: 2 chains, each with iter = 800; warmup = 400; thin = 1;")
    assert "total post-warmup draws = 800" in lines[5]
    order = ["Multilevel Hyperparameters:", "~county (Number of levels: 8)", "sd(Intercept)",
             "sd(std_age)", "cor(Intercept,std_age)", "Regression Coefficients:", "Intercept",
             "Further Distributional Parameters:", "sigma"]
    position = text.index("Engine:")
    for token in order:  # each block appears, in brms's order
        position = text.index(token, position + 1)
    header = re.compile(r"\s+Estimate Est\.Error l-95% CI u-95% CI\s+Rhat Bulk_ESS Tail_ESS")
    assert len(header.findall(text)) == 3


def test_summary_tables_are_consistent_with_draws(bounce_slope_fit):
    s = bounce_slope_fit.summary()
    draws = bounce_slope_fit.draws()
    assert s.fixed.loc["std_age", "Estimate"] == pytest.approx(draws["b_std_age"].mean())
    assert s.spec.loc["sigma", "Est.Error"] == pytest.approx(draws["sigma"].std(ddof=1))
    assert (s.to_frame()["Rhat"] < 1.1).all()
    assert (s.to_frame()["Bulk_ESS"] > 50).all()


def test_intercept_prior_is_on_centred_scale_and_reported_on_original():
    """brms's convention, with a predictor whose mean is far from 0 so the two intercepts differ by 200.

    A tight prior pins the centred intercept (the mean response at the mean of x) at 50; the
    reported b_Intercept is then 50 - b_x * mean(x), about 50 - 2 * 100 = -150, not 50.
    """
    rng = np.random.default_rng(3)
    x = rng.normal(100.0, 5.0, 200)
    data = pd.DataFrame({"y": -150 + 2 * x + rng.normal(0, 1, 200), "x": x})
    fit = quiet_fit("y ~ x", data, [lb.prior("normal(50, 0.01)", class_="Intercept")], chains=2, draws=300,
                    tune=300, seed=1)
    draws = fit.draws()
    centred = draws["b_Intercept"] + draws["b_x"] * x.mean()
    assert centred.mean() == pytest.approx(50, abs=0.05)
    assert draws["b_Intercept"].mean() == pytest.approx(50 - draws["b_x"].mean() * x.mean(), abs=0.05)
    assert draws["b_Intercept"].mean() < -100


def test_fixef_ranef_coef_varcorr(bounce_slope_fit):
    fixef = bounce_slope_fit.fixef()
    assert list(fixef.index) == ["Intercept", "std_age"]
    ranef = bounce_slope_fit.ranef()["county"]
    assert ranef.index.names == ["county", "term"]
    assert ranef.shape[0] == 16
    coef = bounce_slope_fit.coef()["county"]
    # coef = fixef + ranef, in expectation
    for level in ["kent", "devon"]:
        assert coef.loc[(level, "Intercept"), "Estimate"] == pytest.approx(
            fixef.loc["Intercept", "Estimate"] + ranef.loc[(level, "Intercept"), "Estimate"])
    vc = bounce_slope_fit.varcorr()
    assert set(vc) == {"county", "residual__"}
    assert list(vc["county"]["sd"].index) == ["Intercept", "std_age"]
    assert list(vc["county"]["cor"].index) == ["Intercept__std_age"]
    assert bounce_slope_fit.VarCorr is not None


def test_prior_summary_shows_user_and_default(bounce_slope_fit):
    ps = bounce_slope_fit.prior_summary()
    row = ps[(ps["class"] == "sd") & (ps["coef"] == "std_age")].iloc[0]
    assert (row["prior"], row["group"], row["lb"], row["source"]) == ("normal(0, 10)", "county", "0", "user")
    assert ps.loc[ps["class"] == "cor", "source"].item() == "default"


def test_draws_frame_and_datatree(bounce_slope_fit):
    draws = bounce_slope_fit.draws()
    assert draws.shape[0] == 800
    assert {".chain", ".iteration", ".draw"} <= set(draws.columns)
    idata = bounce_slope_fit.idata
    assert {"posterior", "sample_stats", "observed_data"} <= set(idata.children)
    assert idata["posterior"]["r_county"].shape == (2, 400, 8, 2)
    assert "diverging" in idata["sample_stats"]
    np.testing.assert_allclose(idata["observed_data"]["y"].values,
                               lb.datasets.load_bounce_times()["bounce_time"].to_numpy())


def test_random_effects_match_group_means(bounce_slope_fit, bounce):
    # Partial pooling: the county intercepts order like the raw county means.
    raw = bounce.groupby("county")["bounce_time"].mean()
    est = bounce_slope_fit.ranef()["county"].xs("Intercept", level="term")["Estimate"]
    assert np.corrcoef(raw.loc[est.index], est)[0, 1] > 0.95


def test_fit_does_not_modify_data_and_reports_dropped_rows(bounce):
    data = bounce.copy()
    data.loc[[0, 5], "std_age"] = np.nan
    before = data.copy(deep=True)
    with pytest.warns(lb.DataWarning, match="Dropped 2"):
        fit = quiet_fit("bounce_time ~ std_age", data, chains=1, draws=50, tune=50, seed=1)
    pd.testing.assert_frame_equal(data, before)
    assert fit.nobs == 611 and fit.dropped_rows == (0, 5)


def test_same_seed_same_draws_in_process(bounce):
    kw = dict(chains=2, draws=60, tune=60, seed=42)
    a = quiet_fit("bounce_time ~ std_age + (1 | county)", bounce, **kw)
    b = quiet_fit("bounce_time ~ std_age + (1 | county)", bounce, **kw)
    c = quiet_fit("bounce_time ~ std_age + (1 | county)", bounce, **{**kw, "seed": 43})
    assert np.array_equal(a.draws().to_numpy(), b.draws().to_numpy())
    assert not np.array_equal(a.draws().to_numpy(), c.draws().to_numpy())


SCRIPT = """
import warnings, hashlib, lmmbayes as lb
warnings.simplefilter("ignore")
fit = lb.fit("bounce_time ~ std_age + (1 | county)", lb.datasets.load_bounce_times(),
             chains=2, draws=60, tune=60, seed=42, progress=False)
print(hashlib.sha256(fit.draws().to_numpy().tobytes()).hexdigest())
"""


def test_same_seed_same_draws_across_processes():
    digests = {subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                              check=True).stdout.strip() for _ in range(2)}
    assert len(digests) == 1 and len(next(iter(digests))) == 64


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"chains": 0}, "chains must be a positive integer"),
        ({"chains": 1.5}, "chains must be a positive integer"),
        ({"draws": -1}, "draws must be a positive integer"),
        ({"draws": True}, "draws must be a positive integer"),
        ({"tune": -5}, "tune must be a non-negative integer"),
        ({"target_accept": 1.0}, "target_accept"),
        ({"target_accept": 0}, "target_accept"),
        ({"seed": -1}, "seed"),
        ({"seed": "abc"}, "seed"),
        ({"family": "nosuch"}, "'nosuch' is an unknown family"),
        ({"family": 3}, "family must be a name"),
        ({"progress": "yes"}, "progress must be True or False"),
        ({"sample_prior": "yes please"}, "Unknown sample_prior"),
        ({"method": "magic"}, "Unknown method 'magic'"),
        ({"sampler": "stan"}, "Unknown sampler 'stan'"),
    ],
)
def test_fit_option_errors(bounce, kwargs, needle):
    with pytest.raises(lb.FitError) as info:
        lb.fit("bounce_time ~ std_age", bounce, **kwargs)
    assert needle in str(info.value)


def test_custom_distribution_is_used_in_the_model(bounce):
    calls = []

    def tight(name, mu, s, **kw):
        calls.append((name, mu, s))
        return pm.Normal(name, mu, s, **kw)

    lb.register_distribution("tightnormal", tight, n_args=2)
    fit = quiet_fit("bounce_time ~ std_age", bounce, [lb.prior("tightnormal(7, 0.01)", coef="std_age")],
                    chains=1, draws=100, tune=100, seed=2)
    assert calls and calls[0][1:] == (7.0, 0.01)
    assert abs(fit.fixef().loc["std_age", "Estimate"] - 7) < 0.05


def test_callable_prior_in_place_of_string(bounce):
    fit = quiet_fit("bounce_time ~ std_age", bounce,
                    [lb.prior(lambda name, **kw: pm.Normal(name, -3, 0.01, **kw), coef="std_age")],
                    chains=1, draws=100, tune=100, seed=2)
    assert abs(fit.fixef().loc["std_age", "Estimate"] + 3) < 0.05


def test_pymc_sampler_fallback(bounce):
    fit = quiet_fit("bounce_time ~ std_age", bounce, chains=1, draws=100, tune=100, seed=3, sampler="pymc")
    assert fit.config.sampler == "pymc"
    assert abs(fit.fixef().loc["Intercept", "Estimate"] - bounce["bounce_time"].mean()) < 3
    assert "using pymc (NUTS)" in str(fit.summary())


def test_divergence_warning_is_raised_and_printed(bounce):
    # A tiny target_accept on the funnel-prone random slope model makes NUTS diverge.
    with pytest.warns(lb.ConvergenceWarning, match="divergent transitions"):
        fit = lb.fit(SLOPE, bounce, TUTORIAL_PRIORS, chains=1, draws=200, tune=100, seed=1,
                     target_accept=0.3, progress=False)
    assert fit.sampler_report.divergences > 0
    assert "Warning: There were" in str(fit.summary())


def test_summary_prob_sets_the_interval(bounce_slope_fit):
    text = str(bounce_slope_fit.summary(prob=0.9))
    assert "l-90% CI u-90% CI" in text and "l-95% CI" not in text
    with pytest.raises(lb.LmmbayesError, match="prob must be"):
        bounce_slope_fit.summary(prob=1.5)


def test_a_quiet_fit_prints_nothing_and_logs_nothing(simulated, capfd, caplog):
    """No third-party chatter: PyMC's log lines, formulae's prints, ArviZ's shape warnings, numpy warnings."""
    import logging

    data, _ = simulated
    caplog.set_level(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for formula, method, sampler in (("y ~ x + (1 | g)", "collapsed", "nutpie"), ("y ~ x + cat", "joint", "nutpie"),
                                         ("y ~ x + cat", "joint", "pymc")):
            fit = lb.fit(formula, data, [lb.prior("normal(0, 5)", class_="b")], chains=2, draws=500,
                         tune=500, seed=4, method=method, sampler=sampler, progress=False)
            fit.summary(), fit.loo(), fit.predict(data.head(5))
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_low_ess_is_warned_with_advice(bounce):
    with pytest.warns(lb.ConvergenceWarning, match=r"Bulk_ESS is below 200 \(100 per chain\)"):
        lb.fit("bounce_time ~ std_age + (1 | county)", bounce, chains=2, draws=30, tune=30, seed=1, progress=False)


def test_tune_zero(bounce):
    with pytest.raises(lb.FitError, match=r"nutpie needs at least 1 warm-up draw.*sampler='pymc'"):
        lb.fit("bounce_time ~ std_age", bounce, tune=0, progress=False)
    fit = quiet_fit("bounce_time ~ std_age", bounce, tune=0, chains=1, draws=30, sampler="pymc", seed=1)
    assert fit.posterior["b"].shape == (1, 30, 2)
    assert quiet_fit("bounce_time ~ std_age", bounce, tune=1, chains=1, draws=30, seed=1).config.tune == 1


def test_models_without_population_level_terms(bounce):
    fit = quiet_fit("bounce_time ~ 0 + (1 | county)", bounce, chains=2, draws=200, tune=200, seed=2)
    assert fit.posterior["b"].shape[-1] == 0 and fit.fixef().empty
    assert fit.ranef()["county"]["Estimate"].mean() > 150  # the group intercepts carry the mean
    fit = quiet_fit("bounce_time ~ 0", bounce.assign(bounce_time=bounce["bounce_time"] - 200), chains=1,
                    draws=100, tune=100, seed=2)
    assert list(fit.posterior_summary().index) == ["sigma"]


def test_constant_predictor_with_flat_prior_is_refused_with_its_name(bounce):
    data = bounce.assign(k=3.0)
    with pytest.raises(lb.DataError, match="'k' is constant.*flat") as info:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", lb.DataWarning)
            lb.fit("bounce_time ~ std_age + k", data, progress=False)
    assert "coef='k'" in str(info.value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lb.DataWarning)
        fit = quiet_fit("bounce_time ~ std_age + k", data, [lb.prior("normal(0, 1)", class_="b", coef="k")],
                        chains=1, draws=200, tune=200, seed=1)
    assert fit.fixef().loc["k", "Est.Error"] == pytest.approx(1.0, rel=0.2)  # the prior, untouched by data


def test_a_tiny_prior_scale_is_sampled_not_refused(bounce):
    fit = quiet_fit("bounce_time ~ std_age", bounce, [lb.prior("normal(0, 1e-300)", class_="b")], chains=1,
                    draws=100, tune=100, seed=1)
    assert np.abs(fit.draws()["b_std_age"]).max() < 1e-295


def test_draws_in_long_form_and_brms_aliases(simulated_fit):
    wide = simulated_fit.draws(include_random=False)
    long = simulated_fit.draws(include_random=False, format="long")
    names = [c for c in wide.columns if not c.startswith(".")]
    assert list(long.columns) == [".chain", ".iteration", ".draw", ".variable", ".value"]
    assert len(long) == len(wide) * len(names) == simulated_fit.ndraws * len(names)
    back = long.pivot(index=".draw", columns=".variable", values=".value")[names]
    np.testing.assert_array_equal(back.to_numpy(), wide[names].to_numpy())
    assert simulated_fit.as_draws_df().equals(simulated_fit.draws())
    assert simulated_fit.ndraws == 2 * 500
    with pytest.raises(lb.LmmbayesError, match="format"):
        simulated_fit.draws(format="tidy")


def test_random_effect_draws_in_tidybayes_long_form(simulated_fit):
    """ranef_draws(): spread_draws(r_g[g, term])'s shape; each value equals the wide draws' r_g[level,term]."""
    long = simulated_fit.ranef_draws("g")
    wide = simulated_fit.draws()
    f = simulated_fit.design.factors[0]
    assert list(long.columns) == [".chain", ".iteration", ".draw", "g", "term", "r_g"]
    assert len(long) == simulated_fit.ndraws * f.n_levels * f.q
    back = long.assign(name="r_g[" + long["g"] + "," + long["term"] + "]").pivot(
        index=".draw", columns="name", values="r_g")
    np.testing.assert_array_equal(back[wide.filter(like="r_g[").columns].to_numpy(),
                                  wide.filter(like="r_g[").to_numpy())
    assert long.equals(simulated_fit.ranef_draws())
    with pytest.raises(lb.FitError, match=r"no grouping factor 'h'; its factors are \['g'\]"):
        simulated_fit.ranef_draws("h")
