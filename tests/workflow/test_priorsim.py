"""Priors by simulation: prior_predictive() and fit(sample_prior="only").

The checks: the DataTree's layout matches a fit's posterior; the simulated
data obey the model (residuals around the linear predictor have SD sigma, so
Intercept, slopes and random effects are post-processed correctly); the
tutorial's priors give plausible bounce times while vague priors give many
negative ones; flat priors are refused by name; the user's frame is untouched.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import SLOPE, TUTORIAL_PRIORS

import lmmbayes as lb

VAGUE_PRIORS = [
    lb.prior("normal(0, 1000)", class_="Intercept"),
    lb.prior("normal(0, 1000)", class_="b"),
    lb.prior("normal(0, 1000)", class_="sigma"),
]
DRAWS = 300


@pytest.fixture(scope="module")
def tutorial_pp(bounce):
    return lb.prior_predictive(SLOPE, bounce, TUTORIAL_PRIORS, draws=DRAWS, seed=1)


@pytest.fixture(scope="module")
def prior_only_fit(bounce):
    # Data that contradicts the Intercept prior by 300 s: prior-only draws must ignore it.
    shifted = bounce.assign(bounce_time=bounce["bounce_time"] + 300)
    return lb.fit(SLOPE, shifted, TUTORIAL_PRIORS, sample_prior="only", draws=1000, seed=2,
                  progress=False)


def test_layout_matches_a_fits_posterior(tutorial_pp, bounce_slope_fit, bounce):
    assert isinstance(tutorial_pp, xr.DataTree)
    assert {"prior", "prior_predictive", "observed_data"} <= set(tutorial_pp.children)
    prior = tutorial_pp["prior"].to_dataset()
    post = bounce_slope_fit.posterior
    assert set(prior.data_vars) == set(post.data_vars)
    for name in post.data_vars:
        assert prior[name].dims == post[name].dims
        assert prior[name].shape[2:] == post[name].shape[2:]
        assert prior[name].shape[:2] == (1, DRAWS)
    assert list(prior["b"].coords["coef"].values) == ["Intercept", "std_age"]
    y = tutorial_pp["prior_predictive"]["y"]
    assert y.dims == ("chain", "draw", "obs") and y.shape == (1, DRAWS, len(bounce))
    np.testing.assert_array_equal(tutorial_pp["observed_data"]["y"].values, bounce["bounce_time"])


def test_draws_follow_the_priors(tutorial_pp):
    prior = tutorial_pp["prior"]
    b = prior["b"].values.reshape(-1, 2)
    # normal(200, 1) on the centred intercept; std_age has mean ~0, so b_Intercept ~ N(200, 1).
    assert b[:, 0].mean() == pytest.approx(200, abs=0.3)
    assert b[:, 0].std() == pytest.approx(1, abs=0.15)
    assert b[:, 1].mean() == pytest.approx(4, abs=0.3)
    sd = prior["sd_county"].values.reshape(-1, 2)
    assert (sd > 0).all()
    assert sd.mean() == pytest.approx(10 * np.sqrt(2 / np.pi), rel=0.15)  # half-normal(0, 10)
    cor = prior["cor_county"].values
    assert (np.abs(cor) <= 1).all()


def test_random_effects_follow_their_sds_and_correlations(tutorial_pp):
    """Given each draw's sd and cor, the county effects are normal: r / sd standard normal, E[z0 z1] = cor."""
    prior = tutorial_pp["prior"]
    r = prior["r_county"].values[0]  # (draws, levels, terms)
    sd = prior["sd_county"].values[0]  # (draws, terms)
    cor = prior["cor_county"].values[0, :, 0]
    z = r / sd[:, None, :]
    assert z.mean() == pytest.approx(0, abs=0.05)
    assert z.std() == pytest.approx(1, abs=0.04)
    products = (z[:, :, 0] * z[:, :, 1]).mean(axis=1)
    assert np.corrcoef(products, cor)[0, 1] > 0.6
    assert (products - cor).mean() == pytest.approx(0, abs=0.08)
    # lkj(1) on a 2 x 2 correlation matrix: the correlation is uniform on (-1, 1), variance 1/3
    assert cor.var() == pytest.approx(1 / 3, abs=0.06)


def test_simulated_data_follow_the_model(tutorial_pp, bounce):
    """y - (b0 + b1 x + r[g, 0] + r[g, 1] x) has SD sigma in every simulated data set."""
    prior = tutorial_pp["prior"]
    b = prior["b"].values[0]
    r = prior["r_county"].values[0]
    levels = list(prior["r_county"].coords["county__level"].values)
    g = bounce["county"].map({lev: k for k, lev in enumerate(levels)}).to_numpy()
    x = bounce["std_age"].to_numpy()
    mu = b[:, [0]] + b[:, [1]] * x + r[:, g, 0] + r[:, g, 1] * x
    y = tutorial_pp["prior_predictive"]["y"].values[0]
    ratio = (y - mu).std(axis=1) / prior["sigma"].values[0]
    assert np.median(ratio) == pytest.approx(1, abs=0.03)
    assert ((ratio > 0.85) & (ratio < 1.15)).all()


def test_tutorial_priors_give_plausible_bounce_times(tutorial_pp):
    y = tutorial_pp["prior_predictive"]["y"].values
    assert ((y > 160) & (y < 250)).mean() > 0.5
    assert (y < 0).mean() < 0.05


def test_vague_priors_give_many_negative_times(bounce):
    pp = lb.prior_predictive(SLOPE, bounce, VAGUE_PRIORS, draws=DRAWS, seed=1)
    y = pp["prior_predictive"]["y"].values
    assert (y < 0).mean() > 0.3
    assert ((y > 160) & (y < 250)).mean() < 0.1


def test_seed_makes_it_reproducible(bounce):
    a = lb.prior_predictive(SLOPE, bounce, TUTORIAL_PRIORS, draws=5, seed=3)
    b = lb.prior_predictive(SLOPE, bounce, TUTORIAL_PRIORS, draws=5, seed=3)
    c = lb.prior_predictive(SLOPE, bounce, TUTORIAL_PRIORS, draws=5, seed=4)
    ya, yb, yc = (t["prior_predictive"]["y"].values for t in (a, b, c))
    np.testing.assert_array_equal(ya, yb)
    assert not np.allclose(ya, yc)


def test_flat_priors_are_refused_by_name(bounce):
    # b's default is flat (as in brms): nothing can be simulated from it.
    with pytest.raises(lb.PriorError, match="b_std_age") as info:
        lb.prior_predictive(SLOPE, bounce, draws=5, seed=1)
    assert "proper prior" in str(info.value)
    flat_sd = lb.prior("flat", class_="sd", group="county", coef="std_age")
    with pytest.raises(lb.PriorError) as info:
        lb.prior_predictive(SLOPE, bounce, TUTORIAL_PRIORS + [flat_sd], draws=5, seed=1)
    assert "sd_county__std_age" in str(info.value) and "b_std_age" not in str(info.value)
    without_b = [p for p in TUTORIAL_PRIORS if p.class_ != "b"] + [flat_sd]
    with pytest.raises(lb.PriorError) as info:
        lb.prior_predictive(SLOPE, bounce, without_b, draws=5, seed=1)
    assert "sd_county__std_age" in str(info.value) and "b_std_age" in str(info.value)


def test_data_frame_is_unchanged_and_missing_rows_are_dropped(bounce):
    data = bounce.copy()
    data.loc[[3, 10], "std_age"] = np.nan
    before = data.copy()
    with pytest.warns(lb.DataWarning, match="Dropped 2"):
        pp = lb.prior_predictive(SLOPE, data, TUTORIAL_PRIORS, draws=4, seed=1)
    pd.testing.assert_frame_equal(data, before)
    assert pp["prior_predictive"]["y"].shape == (1, 4, len(data) - 2)
    rows = pp["observed_data"]["row"].values
    assert 3 not in rows and 10 not in rows and len(rows) == len(data) - 2


def test_a_placeholder_response_is_enough(bounce):
    """The response is simulated, so it may be a constant placeholder (a fit would refuse it)."""
    placeholder = bounce.assign(bounce_time=0.0)
    a = lb.prior_predictive(SLOPE, placeholder, TUTORIAL_PRIORS, draws=5, seed=3)
    b = lb.prior_predictive(SLOPE, bounce, TUTORIAL_PRIORS, draws=5, seed=3)
    np.testing.assert_array_equal(a["prior_predictive"]["y"].values, b["prior_predictive"]["y"].values)
    assert (a["observed_data"]["y"].values == 0).all()
    with pytest.raises(lb.DataError, match="constant"):
        lb.fit(SLOPE, placeholder, TUTORIAL_PRIORS, sample_prior="only", draws=5, progress=False)


def test_bad_draws_and_seed_are_fit_errors(bounce):
    with pytest.raises(lb.FitError, match="draws"):
        lb.prior_predictive(SLOPE, bounce, TUTORIAL_PRIORS, draws=0)
    with pytest.raises(lb.FitError, match="seed"):
        lb.prior_predictive(SLOPE, bounce, TUTORIAL_PRIORS, draws=3, seed=-1)


def test_prior_predictive_stays_a_function_after_imports():
    # the function lives in lmmbayes.workflow.priorsim, so no submodule shadows the export
    import lmmbayes.workflow.priorsim  # noqa: F401

    assert callable(lb.prior_predictive) and lb.prior_predictive.__module__ == "lmmbayes.workflow.priorsim"


# -- fit(sample_prior="only") -------------------------------------------------------------

def test_sample_prior_only_returns_prior_draws(prior_only_fit):
    fixef = prior_only_fit.fixef()
    assert fixef.loc["Intercept", "Estimate"] == pytest.approx(200, abs=0.15)
    assert fixef.loc["Intercept", "Est.Error"] == pytest.approx(1, abs=0.1)
    assert fixef.loc["std_age", "Estimate"] == pytest.approx(4, abs=0.15)
    post = prior_only_fit.posterior
    assert post["b"].shape == (1, 1000, 2)
    assert post["r_county"].shape == (1, 1000, 8, 2)
    assert prior_only_fit.config.chains == 1 and prior_only_fit.config.draws == 1000
    assert "sample" not in prior_only_fit.timings  # NUTS never ran
    assert prior_only_fit.sampler_report.n_draws == 0


def test_sample_prior_only_summary_works(prior_only_fit):
    text = str(prior_only_fit.summary())
    assert "Regression Coefficients:" in text and "sd(Intercept)" in text
    assert "1 chains" in text
    table = prior_only_fit.posterior_summary()
    assert "r_county[kent,Intercept]" in table.index
    assert table.loc["sigma", "Estimate"] == pytest.approx(100 * np.sqrt(2 / np.pi), rel=0.1)


def test_sample_prior_is_validated(bounce):
    with pytest.raises(lb.FitError, match=r"sample_prior.*\['no', 'yes', 'only'\]"):
        lb.fit(SLOPE, bounce, TUTORIAL_PRIORS, sample_prior="both", progress=False)
    with pytest.raises(lb.PriorError, match="b_std_age"):
        lb.fit(SLOPE, bounce, sample_prior="only", draws=10, progress=False)


@pytest.mark.parametrize(("family", "check"), [
    ("poisson", lambda y: (y >= 0).all() and (y == np.round(y)).all()),
    ("bernoulli", lambda y: np.isin(y, (0, 1)).all()),
    ("beta", lambda y: ((y > 0) & (y < 1)).all()),
    ("binomial", lambda y: ((y >= 0) & (y <= 10)).all() and (y == np.round(y)).all()),
])
def test_every_family_simulates_its_own_kind_of_data(family, check):
    """The flip-book draws counts, 0/1 outcomes and proportions for the families that have them."""
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(2)
    # a placeholder response the family can take (it is simulated)
    data = pd.DataFrame({"y": 0.5 if family == "beta" else 0, "x": rng.normal(size=60),
                         "g": np.repeat(["a", "b", "c"], 20), "n": 10})
    formula = ("y | trials(n)" if family == "binomial" else "y") + " ~ x + (1 | g)"
    priors = [lb.prior("normal(0, 1)", class_="b"), lb.prior("normal(0, 1)", class_="sd"),
              lb.prior("gamma(4, 0.5)", class_="phi")] if family == "beta" else \
        [lb.prior("normal(0, 1)", class_="b"), lb.prior("normal(0, 1)", class_="sd")]
    pp = lb.prior_predictive(formula, data, priors, family=family, draws=30, seed=1)
    y = pp["prior_predictive"]["y"].values
    assert y.shape == (1, 30, 60) and check(y)
    fig = lb.plot_prior_predictive(pp, data, "x", "g", n=4, seed=0)
    assert len(fig.axes) >= 5
    plt.close(fig)
