"""The ordinal family ``cumulative``: its density, thresholds, names, predictions and files.

Witnesses: the category probabilities computed here from the threshold and
linear-predictor draws (``F(tau_k − eta) − F(tau_{k−1} − eta)``), exact
logistic tail algebra for the density's stable branches, frequencies of
draws, and the simulated truth of one fit (12 groups x 15 rows, 2 chains x
250 draws; the truth must lie in the 99% interval, as in
test_family_fits.py). The inhaler data against brms and ordinal::clmm are
in test_public_examples.py.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

import lmmbayes as lb
from lmmbayes.families import THRESHOLDS

TAU = np.array([-1.0, 0.3, 1.6])
B1, SD_G, G, PER = 0.9, 0.6, 12, 15
LABELS = ["never", "rarely", "often", "always"]
CDF = {"logit": special.expit, "probit": special.ndtr, "cloglog": lambda v: -np.expm1(-np.exp(v))}


def probs(link: str, tau: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """(..., n, K) category probabilities, the textbook way (differences of the CDF)."""
    cdf = CDF[link](tau[..., None, :] - eta[..., None])
    pad = np.zeros(cdf.shape[:-1] + (1,))
    return np.diff(np.concatenate([pad, cdf, pad + 1], axis=-1), axis=-1)


# -- the density ---------------------------------------------------------------------------


@pytest.mark.parametrize("link", ["logit", "probit", "cloglog"])
def test_log_mass_is_the_difference_of_cdfs_in_numpy_and_pytensor(link):
    import pytensor
    import pytensor.tensor as pt

    fam = lb.family("cumulative", link)
    rng = np.random.default_rng(0)
    eta = rng.normal(0, 1, 50)  # where differences of the CDF lose no digits (the tails: the next test)
    y = np.resize([1, 2, 3, 4], 50).astype(float)
    expected = np.log(np.take_along_axis(probs(link, TAU, eta), (y.astype(int) - 1)[:, None], 1)[:, 0])
    got = fam.logpdf(y, eta, {THRESHOLDS: TAU}, lb.families.Extra())
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    e, t = pt.dvector("e"), pt.dvector("t")
    f = pytensor.function([e, t], fam.logp_pt(y, e, {THRESHOLDS: t}, lb.families.Extra()))
    np.testing.assert_allclose(f(eta, TAU), expected, rtol=1e-10)


def test_log_mass_keeps_its_precision_in_both_tails():
    """A middle category far in the upper tail: 1 − F loses every digit, the complement branch does not."""
    fam = lb.family("cumulative")
    tau = np.array([30.0, 31.0])
    # P(y = 2 | eta = 0) = S(30) − S(31) with S(x) = 1 / (1 + e^x), exactly computable
    exact = np.log(special.expit(-30.0) - special.expit(-31.0))
    got = fam.logpdf(np.array([2.0]), np.array([0.0]), {THRESHOLDS: tau}, lb.families.Extra())[0]
    assert got == pytest.approx(exact, rel=1e-12)
    # the same category in the lower tail (thresholds far below eta): P = F(−30) − F(−31)
    got = fam.logpdf(np.array([2.0]), np.array([61.0]), {THRESHOLDS: tau}, lb.families.Extra())[0]
    assert got == pytest.approx(exact, rel=1e-12)
    # cloglog's upper tail: S(x) = exp(−e^x), so S(3) − S(3.3) is computed directly without cancellation
    fam = lb.family("cumulative", "cloglog")
    got = fam.logpdf(np.array([2.0]), np.array([0.0]), {THRESHOLDS: np.array([3.0, 3.3])}, lb.families.Extra())[0]
    assert got == pytest.approx(np.log(np.exp(-np.exp(3.0)) - np.exp(-np.exp(3.3))), rel=1e-12)


def test_gradient_is_finite_at_the_end_categories():
    import pytensor
    import pytensor.tensor as pt

    fam = lb.family("cumulative", "probit")
    e, t = pt.dvector("e"), pt.dvector("t")
    y = np.array([1.0, 4.0, 2.0, 3.0])
    lp = fam.logp_pt(y, e, {THRESHOLDS: t}, lb.families.Extra()).sum()
    grad = pytensor.function([e, t], pt.grad(lp, [e, t]))
    for g in grad(np.array([-8.0, 8.0, 0.1, 5.0]), TAU):
        assert np.isfinite(g).all()


def test_draws_follow_the_category_probabilities():
    fam = lb.family("cumulative")
    rng = np.random.default_rng(1)
    eta = np.full(40_000, 0.4)
    draws = fam.random(rng, eta, {THRESHOLDS: TAU}, lb.families.Extra())
    assert np.issubdtype(draws.dtype, np.integer) and set(np.unique(draws)) == {1, 2, 3, 4}
    counts = np.bincount(draws, minlength=5)[1:]
    p = probs("logit", TAU, np.array([0.4]))[0]
    assert stats.chisquare(counts, p * eta.size).pvalue > 0.001
    assert fam.mean(eta[:3], {THRESHOLDS: TAU}, lb.families.Extra()).sum(-1) == pytest.approx(1.0)


# -- the design and the priors ---------------------------------------------------------------


def simulate(seed: int = 5) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(G), PER)
    x = rng.normal(1.0, 1.0, g.size)  # mean 1: the centred thresholds must be shifted back
    r = rng.normal(0.0, SD_G, G)
    y = 1 + (rng.random(g.size)[:, None] > special.expit(TAU[None, :] - (B1 * x + r[g])[:, None])).sum(1)
    labels = pd.Categorical(np.array(LABELS)[y - 1], categories=LABELS, ordered=True)
    return pd.DataFrame({"y": labels, "k": y, "x": x, "g": [f"g{j:02d}" for j in g]}), r


def test_get_prior_lists_one_threshold_per_cut():
    data, _ = simulate()
    table = lb.get_prior("k ~ x + (1 | g)", data, family="cumulative")
    rows = table[table["class"] == "Intercept"]
    assert list(rows["coef"]) == ["", "1", "2", "3"]
    assert set(rows["prior"]) == {"student_t(3, 0, 2.5)"}  # brms: fixed scale for categorical responses
    assert "b_Intercept[k]" in repr(table)


def test_integer_responses_take_k_from_their_maximum_as_brms():
    data = pd.DataFrame({"y": [1, 3, 3, 5, 1, 3], "x": np.arange(6.0)})
    with pytest.warns(lb.DataWarning, match=r"no rows in categories \[2, 4\] of 1..5"):
        table = lb.get_prior("y ~ x", data, family="cumulative")
    assert list(table[table["class"] == "Intercept"]["coef"]) == ["", "1", "2", "3", "4"]


def test_prior_draws_of_thresholds_are_ordered():
    data, _ = simulate()
    priors = [lb.prior("normal(0, 1)", class_="b"), lb.prior("normal(0, 3)", class_="Intercept"),
              lb.prior("normal(-2, 0.5)", class_="Intercept", coef="1")]
    fit = lb.fit("y ~ x + (1 | g)", data, priors, family="cumulative", sample_prior="only", draws=400, seed=4)
    d = fit.draws()
    x_bar = data["x"].mean()
    centred = d[["b_Intercept[1]", "b_Intercept[2]", "b_Intercept[3]"]].to_numpy() - x_bar * d[["b_x"]].to_numpy()
    assert (np.diff(centred, axis=1) > 0).all()
    # the first threshold's own prior pulls it down (before the order is imposed: mean −2)
    assert centred[:, 0].mean() < -1.5


# -- one fit on simulated data ------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted():
    data, r = simulate()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lb.ConvergenceWarning)
        fit = lb.fit("y ~ x + (1 | g)", data, family="cumulative", chains=2, draws=250, tune=300, seed=3,
                     progress=False)
    return data, r, fit


def test_thresholds_and_slope_cover_the_truth(fitted):
    data, r, fit = fitted
    table = fit.posterior_summary(probs=(0.005, 0.995))
    truth = {"b_Intercept[1]": TAU[0], "b_Intercept[2]": TAU[1], "b_Intercept[3]": TAU[2], "b_x": B1,
             "sd_g__Intercept": SD_G}
    for name, value in truth.items():
        lo, hi = table.loc[name, "Q0.5"], table.loc[name, "Q99.5"]
        assert lo < value < hi, f"{name} = {value} outside [{lo:.3f}, {hi:.3f}]"
    est = fit.ranef()["g"]["Estimate"].to_numpy().ravel()
    assert np.corrcoef(est, r)[0, 1] > 0.6


def test_summary_names_and_categories_are_brms(fitted):
    _, _, fit = fitted
    text = str(fit.summary())
    assert "Family: cumulative" in text and "Links: mu = logit; disc = identity\n" in text
    assert "Categories: 1 = 'never', 2 = 'rarely', 3 = 'often', 4 = 'always'" in text
    assert list(fit.fixef().index) == ["Intercept[1]", "Intercept[2]", "Intercept[3]", "x"]
    assert fit.categories == tuple(LABELS)
    assert (np.diff(fit.draws()[["b_Intercept[1]", "b_Intercept[2]", "b_Intercept[3]"]].to_numpy(), axis=1) > 0).all()


def test_epred_is_the_category_probabilities(fitted):
    data, _, fit = fitted
    new = data.iloc[:6]
    epred = fit.posterior_epred(new)
    d = fit.draws()
    tau = d[["b_Intercept[1]", "b_Intercept[2]", "b_Intercept[3]"]].to_numpy()
    eta = fit.posterior_linpred(new)
    # the linear predictor excludes the thresholds: b_x * x + r_g
    r = fit.draws()[[f"r_g[{lev},Intercept]" for lev in new["g"]]].to_numpy()
    np.testing.assert_allclose(eta, d[["b_x"]].to_numpy() * new["x"].to_numpy() + r, rtol=1e-10, atol=1e-12)
    expected = np.stack([probs("logit", tau[s], eta[s]) for s in range(tau.shape[0])])
    np.testing.assert_allclose(epred, expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(epred.sum(-1), 1.0)
    np.testing.assert_array_equal(fit.posterior_linpred(new, transform=True), epred)
    table = fit.fitted(new)
    assert list(table["Estimate"].columns) == ["P(Y = 1)", "P(Y = 2)", "P(Y = 3)", "P(Y = 4)"]
    np.testing.assert_allclose(table["Estimate"].to_numpy(), epred.mean(0))


def test_conditional_effects_per_category_as_brms_categorical(fitted):
    """conditional_effects(categorical=True): each category's probability along x, from the thresholds and b_x
    (no group-level effects, as brms's re_formula = NA); without it the expected category, with brms's warning."""
    import matplotlib.pyplot as plt

    data, _, fit = fitted
    ce = fit.conditional_effects("x", categorical=True, resolution=5, prob=0.9)
    t = ce["x"]
    d = fit.draws()
    tau = d[["b_Intercept[1]", "b_Intercept[2]", "b_Intercept[3]"]].to_numpy()
    x = np.linspace(data["x"].min(), data["x"].max(), 5)
    p = probs("logit", tau, d[["b_x"]].to_numpy() * x)  # (draws, 5, 4)
    want = p.transpose(2, 1, 0).reshape(20, -1).T  # the grid once per category, category slowest
    assert list(t["cats__"].astype(str)) == [c for c in LABELS for _ in range(5)]
    assert list(t["cats__"].cat.categories) == LABELS and (t["effect2__"] == t["cats__"]).all()
    np.testing.assert_allclose(t["x"], np.tile(x, 4))
    np.testing.assert_allclose(t["estimate__"], np.median(want, axis=0), rtol=1e-9)
    np.testing.assert_allclose(t[["lower__", "upper__"]].to_numpy(),
                               np.quantile(want, [0.05, 0.95], axis=0).T, rtol=1e-9)
    fig = ce.plot()["x"]
    ax = [a for a in fig.axes if a.get_visible()][0]
    assert len(ax.lines) == 4 and [tx.get_text() for tx in ax.get_legend().get_texts()] == LABELS
    assert ax.get_legend().get_title().get_text() == "cats__"
    plt.close(fig)
    with pytest.warns(lb.LmmbayesWarning, match="set categorical=True"):
        mean = fit.conditional_effects("x", resolution=5)["x"]
    np.testing.assert_allclose(mean["estimate__"], np.median(p @ np.arange(1.0, 5.0), axis=0), rtol=1e-9)


def test_predictions_are_categories_one_to_k(fitted):
    data, _, fit = fitted
    draws = fit.posterior_predict(data.iloc[:50], seed=2)
    assert np.issubdtype(draws.dtype, np.integer) and set(np.unique(draws)) <= {1, 2, 3, 4}
    table = fit.predict(data.iloc[:50], seed=2)
    assert list(table.columns) == ["P(Y = 1)", "P(Y = 2)", "P(Y = 3)", "P(Y = 4)"]
    np.testing.assert_allclose(table.to_numpy().sum(1), 1.0)
    np.testing.assert_allclose(table["P(Y = 2)"], (draws == 2).mean(0))


def test_log_lik_and_loo_use_the_category_mass(fitted):
    data, _, fit = fitted
    ll = fit.log_lik().reshape(-1, len(data))
    epred = fit.posterior_epred()
    y = data["y"].cat.codes.to_numpy()
    np.testing.assert_allclose(ll, np.log(np.take_along_axis(epred, np.broadcast_to(y[None, :, None],
                                                                                      epred.shape[:2] + (1,)), 2)[..., 0]),
                               rtol=1e-8)
    assert np.isfinite(fit.loo().elpd)


def test_checks_r2_and_files(fitted, tmp_path):
    import matplotlib.pyplot as plt

    data, _, fit = fitted
    assert fit.design.family.default_check == "bars"
    plt.close(fit.pp_check(ndraws=5))
    with pytest.warns(lb.LmmbayesWarning, match="ordinal"):
        r2 = fit.bayes_r2(method="residual")
    mu = fit.posterior_epred() @ np.arange(1.0, 5.0)  # brms's ordinal_probs_continuous
    y = data["y"].cat.codes.to_numpy() + 1.0
    expected = mu.var(1, ddof=1) / (mu.var(1, ddof=1) + (y - mu).var(1, ddof=1))
    assert r2.loc["R2", "Estimate"] == pytest.approx(expected.mean(), rel=1e-12)
    back = lb.load(fit.save(tmp_path / "ordinal.lmmb"))
    assert back.categories == fit.categories and str(back.summary()) == str(fit.summary())
    np.testing.assert_array_equal(back.posterior_epred(data.iloc[:3]), fit.posterior_epred(data.iloc[:3]))
    hyp = fit.hypothesis("Intercept[2] - Intercept[1] > 0")
    assert hyp.table["Post.Prob"].iloc[0] == 1.0
