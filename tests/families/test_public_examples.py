"""Public examples no one here wrote, against numbers from outside lmmbayes.

- cbpp (lme4; binomial with trials), epilepsy (brms's vignette; poisson) and
  VerbAgg (lme4; bernoulli, persons x items crossed; `make validate`):
  glmer's Laplace estimates, made by hand with fixtures/glmer_estimates.R
  (the cbpp and VerbAgg numbers are those printed in lme4's documentation).
- sleepstudy (lme4) with a student likelihood: a brms 2.18 run made by hand
  (fixtures/brms_sleepstudy_student.R).
- inhaler (brms's ordinal example; cumulative): a brms 2.18 run and an
  ``ordinal::clmm`` fit (adaptive quadrature, maximum likelihood) made by hand
  (fixtures/brms_inhaler_cumulative.R), and brms's get_prior table.
- The eight schools (BDA3 section 5.5) with ``se()`` and BDA's flat prior on
  (mu, tau): BDA3's Table 5.3.

The R data sets are GPL and are read from ../shared/data/lme4_brms (the tests
skip where it is absent); the eight schools' 16 numbers are in this file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import quiet_fit, shared_csv

import lmmbayes as lb

GLMER = pd.read_csv(Path(__file__).parent / "fixtures" / "glmer_estimates.csv")


def glmer(model: str) -> pd.DataFrame:
    table = GLMER.loc[GLMER["model"] == model].set_index("term")
    return table.rename(index={"(Intercept)": "Intercept"})


def check_against_glmer(fit: lb.Fit, model: str, group: str) -> None:
    """Posterior means of the coefficients within 0.5 glmer standard errors of glmer's estimates.

    With flat priors on b the posterior mean differs from the Laplace ML
    estimate only by the skew of the posterior and the integration over the
    group SD (a few hundredths here); Monte Carlo error is about 0.02 SE. A
    wrong link, design column or trials handling moves a coefficient by
    several SEs. The group SD: the posterior median within 30% of glmer's
    (the ML estimate of an SD is biased low; the posterior is right-skewed).
    """
    ref = glmer(model)
    fixef = fit.fixef()
    coefs = [t for t in ref.index if not t.startswith("sd_")]
    assert sorted(fixef.index) == sorted(coefs)
    gap = (fixef.loc[coefs, "Estimate"] - ref.loc[coefs, "estimate"]).abs() / ref.loc[coefs, "se"]
    assert (gap < 0.5).all(), gap.to_dict()
    sd = float(fit.draws()[f"sd_{group}__Intercept"].median())
    assert sd == pytest.approx(ref.loc[f"sd_{group}__Intercept", "estimate"], rel=0.3)


@pytest.fixture(scope="module")
def cbpp_fit():
    data = shared_csv("cbpp.csv").assign(period=lambda d: d["period"].astype(str))
    return quiet_fit("incidence | trials(size) ~ period + (1 | herd)", data, family="binomial",
                     chains=2, draws=1000, tune=1000, seed=4)


def test_cbpp_binomial_matches_glmer(cbpp_fit):
    check_against_glmer(cbpp_fit, "cbpp", "herd")
    text = str(cbpp_fit.summary())
    assert "Family: binomial" in text and "Links: mu = logit" in text
    # brms's posterior_epred for a binomial is trials x probability
    epred = cbpp_fit.posterior_epred().mean(axis=0)
    data = shared_csv("cbpp.csv")
    assert (epred <= data["size"].to_numpy()).all()
    assert abs(epred.sum() - data["incidence"].sum()) < 0.05 * data["incidence"].sum()


@pytest.fixture(scope="module")
def epilepsy_fit():
    data = shared_csv("epilepsy.csv").assign(Trt=lambda d: d["Trt"].astype(str))
    return quiet_fit("count ~ zAge + zBase * Trt + (1 | patient)", data, family="poisson",
                     chains=2, draws=1000, tune=1000, seed=5)


def test_epilepsy_poisson_matches_glmer(epilepsy_fit):
    check_against_glmer(epilepsy_fit, "epilepsy", "patient")
    assert "b_zBase:Trt1" in epilepsy_fit.posterior_summary().index


@pytest.mark.slow
def test_verbagg_bernoulli_crossed_matches_glmer():
    """7,584 answers, persons x items crossed (joint engine; about 2 minutes, so in `make validate`)."""
    data = shared_csv("VerbAgg.csv")
    fit = quiet_fit("r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)", data, family="bernoulli",
                    chains=2, draws=500, tune=500, seed=6)
    check_against_glmer(fit, "VerbAgg", "id")
    item = float(fit.draws()["sd_item__Intercept"].median())
    assert item == pytest.approx(glmer("VerbAgg").loc["sd_item__Intercept", "estimate"], rel=0.3)


BRMS_STUDENT = pd.read_csv(Path(__file__).parent / "fixtures" / "brms_sleepstudy_student.csv", index_col=0)


@pytest.mark.slow  # about a minute of compile and sampling: `make validate`
def test_sleepstudy_student_matches_brms():
    """A robust random-slope model against brms 2.18 run by hand (fixtures/brms_sleepstudy_student.R: rstan,
    4 chains x 3000 draws, brms's default priors, which lmmbayes shares).

    Tolerance: posterior means within 0.25 brms posterior SDs and posterior SDs within 25% (nu: 35%,
    its posterior is skewed and heavy-tailed). Monte Carlo error of ours (2 x 1000 draws) is about
    0.05 SD; a wrong t density, scale or nu bound moves sigma and nu by several SDs.
    """
    data = shared_csv("sleepstudy.csv")
    fit = quiet_fit("Reaction ~ Days + (Days | Subject)", data, family="student", chains=2, draws=1000,
                    tune=1000, seed=11)
    draws = fit.draws()
    for name, row in BRMS_STUDENT.iterrows():
        mean, sd = float(draws[name].mean()), float(draws[name].std())
        assert abs(mean - row["Estimate"]) < 0.25 * row["Est.Error"], (name, mean, row["Estimate"])
        assert sd == pytest.approx(row["Est.Error"], rel=0.35 if name == "nu" else 0.25), (name, sd)


INHALER = pd.read_csv(Path(__file__).parent / "fixtures" / "brms_inhaler_cumulative.csv")
INHALER_PRIOR = pd.read_csv(Path(__file__).parent / "fixtures" / "brms_inhaler_get_prior.csv", keep_default_na=False)
INHALER_FORMULA = "rating ~ treat + period + carry + (1 | subject)"


def test_inhaler_get_prior_is_brms():
    """brms 2.18's get_prior for the cumulative inhaler model, row for row: one Intercept row per threshold.

    brms leaves inherited rows blank and writes "" for flat; lmmbayes prints the inherited prior and
    "flat". So: the same (class, coef, group) rows, and brms's prior wherever brms prints one.
    """
    data = shared_csv("inhaler.csv")
    ours = lb.get_prior(INHALER_FORMULA, data, family="cumulative")
    key = ["class", "coef", "group"]
    assert sorted(map(tuple, ours[key].to_numpy())) == sorted(map(tuple, INHALER_PRIOR[key].to_numpy()))
    printed = ours.set_index(key)["prior"]
    for _, row in INHALER_PRIOR.iterrows():
        expected = row["prior"] or ("flat" if row["class"] == "b" else None)
        if expected:
            assert printed.loc[tuple(row[key])] == expected, row.to_dict()


@pytest.mark.slow  # a minute of compile and sampling: `make validate`
def test_inhaler_cumulative_matches_brms_and_clmm():
    """brms's ordinal example: 572 ratings (4 categories) of 286 subjects, each rated twice.

    Against brms 2.18 (same default priors: flat b, student_t(3, 0, 2.5) thresholds and sd): posterior
    means within 0.25 brms posterior SDs, posterior SDs within 25%. Against ordinal::clmm's maximum
    likelihood (a different method, so looser): thresholds and coefficients within 0.5 clmm SEs. A
    wrong threshold sign, centring shift or link moves them by several SEs. Monte Carlo error of ours
    (2 x 1000 draws) is about 0.05 posterior SD.
    """
    data = shared_csv("inhaler.csv")
    fit = quiet_fit(INHALER_FORMULA, data, family="cumulative", chains=2, draws=1000, tune=1000, seed=12)
    draws = fit.draws()
    brms = INHALER.loc[INHALER["source"] == "brms"].set_index("parameter")
    for name, row in brms.iterrows():
        mean, sd = float(draws[name].mean()), float(draws[name].std())
        assert abs(mean - row["Estimate"]) < 0.25 * row["Est.Error"], (name, mean, row["Estimate"])
        assert sd == pytest.approx(row["Est.Error"], rel=0.25), (name, sd)
    clmm = INHALER.loc[(INHALER["source"] == "clmm") & INHALER["Est.Error"].notna()].set_index("parameter")
    for name, row in clmm.iterrows():
        assert abs(float(draws[name].mean()) - row["Estimate"]) < 0.5 * row["Est.Error"], (name, row["Estimate"])


LMER_INSTEVAL = pd.read_csv(Path(__file__).parent / "fixtures" / "lmer_insteval.csv", index_col=0)["estimate"]


@pytest.mark.slow  # about 2 minutes: `make validate`
def test_insteval_crossed_matches_lmer():
    """lme4's InstEval: 73,421 ratings, 2,972 students x 1,128 lecturers crossed, plus dept:service (28
    levels). auto fits it on the collapsed engine with the students integrated out. With this many rows the
    priors barely matter: posterior means of sd(s), sd(d) and sigma within 5% of lmer's REML estimates,
    sd(dept:service) within 20% (28 levels), the coefficients within 0.05 (fixtures/lmer_insteval.R)."""
    data = shared_csv("InstEval.csv").astype({"s": str, "d": str, "dept": str, "service": str})
    priors = [lb.prior("normal(0, 2)", class_="b"), lb.prior("normal(0, 2)", class_="sd"),
              lb.prior("normal(0, 2)", class_="sigma")]
    fit = quiet_fit("y ~ service + (1 | s) + (1 | d) + (1 | dept:service)", data, priors, chains=2, draws=500,
                    tune=500, seed=14)
    assert fit.engine == "collapsed" and "s integrated out" in str(fit.summary())
    means = fit.draws().mean()
    for name, rel in {"sd_s__Intercept": 0.05, "sd_d__Intercept": 0.05, "sigma": 0.05,
                      "sd_dept:service__Intercept": 0.2}.items():
        assert means[name] == pytest.approx(LMER_INSTEVAL[name], rel=rel), name
    for name in ("b_Intercept", "b_service1"):
        assert means[name] == pytest.approx(LMER_INSTEVAL[name], abs=0.05), name


# BDA3 section 5.5: estimated effects and standard errors of the coaching programmes
SCHOOLS = pd.DataFrame({"school": list("ABCDEFGH"), "y": [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0],
                        "sigma": [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]})
# BDA3 Table 5.3: posterior medians of the school effects theta_j, of mu and of tau
# (from 200 simulations, so themselves uncertain by about +-1).
BDA_MEDIANS = {"A": 10.0, "B": 8.0, "C": 7.0, "D": 8.0, "E": 5.0, "F": 6.0, "G": 10.0, "H": 8.0}
BDA_MU, BDA_TAU = 8.0, 5.1


@pytest.mark.parametrize("method", ["collapsed", "joint"])
def test_eight_schools_with_known_standard_errors_match_bda(method):
    """``se()``: sigma fixed at 0, each school's known SD; BDA's p(mu, tau) ∝ 1 as flat priors.

    Tolerance: medians within 2.5. BDA's medians come from 200 draws (SE about
    1 for a school, whose posterior SD is about 6-9); ours from 4000 draws.
    Treating se() as sigma (or adding a free sigma) moves every school toward
    the mean by several units and tau's median toward 0. Both engines: the
    collapsed one integrates the school effects out (se() as weights 1/s²).
    """
    priors = [lb.prior("flat", class_="Intercept"), lb.prior("flat", class_="sd")]
    fit = quiet_fit("y | se(sigma) ~ 1 + (1 | school)", SCHOOLS, priors, chains=4, draws=1000, tune=1000,
                    seed=8, target_accept=0.95, method=method)
    assert fit.engine == method
    assert "sigma" not in fit.posterior_summary().index
    medians = {s: float(np.median(fit.draws()["b_Intercept"] + fit.draws()[f"r_school[{s},Intercept]"]))
               for s in BDA_MEDIANS}
    for school, expected in BDA_MEDIANS.items():
        assert medians[school] == pytest.approx(expected, abs=2.5), (school, medians)
    d = fit.draws()
    assert float(d["b_Intercept"].median()) == pytest.approx(BDA_MU, abs=1.5)
    assert float(d["sd_school__Intercept"].median()) == pytest.approx(BDA_TAU, abs=1.5)
