"""brms's hypothesis(): numbers against a computation on the draws, brms's table and the closed grammar."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from conftest import quiet_fit

import lmmbayes as lb
from lmmbayes.workflow.hypothesis import hypothesis, parse_hypothesis


def fake_draws(n: int = 4000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"b_Intercept": rng.normal(250, 8, n), "b_Days": rng.normal(10, 2, n),
                         "b_zBase:Trt1": rng.normal(0.05, 0.15, n), "sd_Subject__Days": rng.gamma(30, 0.2, n),
                         "r_Subject[308,Days]": rng.normal(9, 3, n)})


def test_one_sided_hypothesis_is_brms_arithmetic_on_the_draws():
    d = fake_draws()
    res = hypothesis(d, "Intercept - 25 * Days > 0")
    x = d["b_Intercept"] - 25 * d["b_Days"]
    row = res.table.iloc[0]
    assert row["Hypothesis"] == "(Intercept-25*Days) > 0"
    assert row["Estimate"] == pytest.approx(x.mean()) and row["Est.Error"] == pytest.approx(x.std())
    # one-sided: brms's probabilities (alpha, 1 - alpha), i.e. a 90% interval at alpha = 0.05
    assert (row["CI.Lower"], row["CI.Upper"]) == pytest.approx(tuple(np.quantile(x, [0.05, 0.95])))
    p = (x > 0).mean()
    assert row["Post.Prob"] == pytest.approx(p) and row["Evid.Ratio"] == pytest.approx(p / (1 - p))
    assert row["Star"] == ("*" if p > 0.95 else "")
    np.testing.assert_allclose(res.samples["H1"], x)


def test_point_hypothesis_two_sided_interval_and_star():
    d = fake_draws()
    res = hypothesis(d, ["Days = 10", "Days = 0", "zBase:Trt1 < 0"], alpha=0.1)
    t = res.table
    assert list(t["Hypothesis"]) == ["(Days)-(10) = 0", "(Days) = 0", "(zBase:Trt1) < 0"]
    x = d["b_Days"] - 10
    assert (t.loc[0, "CI.Lower"], t.loc[0, "CI.Upper"]) == pytest.approx(tuple(np.quantile(x, [0.05, 0.95])))
    assert t.loc[0, "Star"] == "" and t.loc[1, "Star"] == "*"
    assert t[["Evid.Ratio", "Post.Prob"]].iloc[:2].isna().all().all()  # no prior draws: no Savage-Dickey
    assert t.loc[2, "Post.Prob"] == pytest.approx((d["b_zBase:Trt1"] < 0).mean())
    assert list(t.columns) == ["Hypothesis", "Estimate", "Est.Error", "CI.Lower", "CI.Upper", "Evid.Ratio",
                               "Post.Prob", "Star"]


def test_full_names_powers_functions_and_precedence():
    d = fake_draws()
    res = hypothesis(d, ["sd_Subject__Days^2 > 30", "-2^2 + exp(log(b_Days)) * (1 + 1) / 2 = 0",
                         "r_Subject[308,Days] > 0"], class_=None)
    np.testing.assert_allclose(res.samples["H1"], d["sd_Subject__Days"] ** 2 - 30)
    np.testing.assert_allclose(res.samples["H2"], -(2.0**2) + d["b_Days"], rtol=1e-12)  # R: -2^2 is -4
    np.testing.assert_allclose(res.samples["H3"], d["r_Subject[308,Days]"])
    assert "Hypothesis Tests:" in str(res)


@pytest.mark.parametrize(("text", "needle"), [
    ("Days", "exactly one relation"),
    ("Days > 0 > 1", "exactly one relation"),
    ("> 0", "empty side"),
    ("Days + > 0", "ends too early at position 7"),
    ("(Days > 0", "')' is missing"),
    ("__import__('os').system('id') > 0", "not allowed"),
    ("Days.real > 0", "no parameter"),
    ("system(Days) > 0", "'system()' is not an allowed function"),
    ("Days; x > 0", "not allowed"),
    ("Nope > 0", "b_Nope"),
])
def test_bad_hypotheses_are_clear_errors_and_never_code(text, needle, tmp_path):
    sentinel = tmp_path / "pwned"
    with pytest.raises(lb.FormulaError, match="Hypothesis|hypothesis") as info:
        hypothesis(fake_draws(), text.replace("'id'", f"'touch {sentinel}'"))
    assert needle in str(info.value)
    assert not sentinel.exists()


def test_unknown_names_list_what_the_class_has():
    with pytest.raises(lb.FormulaError, match=r"\['Intercept', 'Days', 'zBase:Trt1'\]"):
        hypothesis(fake_draws(), "Nope > 0")
    with pytest.raises(lb.LmmbayesError, match="alpha"):
        hypothesis(fake_draws(), "Days > 0", alpha=1.5)
    with pytest.raises(lb.FormulaError, match="list of strings"):
        hypothesis(fake_draws(), 3)


def test_parse_keeps_brms_label():
    assert parse_hypothesis("a + b = c").label == "(a+b)-(c) = 0"


def test_fit_hypothesis_uses_the_fits_draws(simulated_fit):
    res = simulated_fit.hypothesis(["x - 2 = 0", "catb > catc"])
    d = simulated_fit.draws()
    np.testing.assert_allclose(res.samples["H1"], d["b_x"] - 2)
    np.testing.assert_allclose(res.samples["H2"], d["b_catb"] - d["b_catc"])
    # the simulated truth: b_x = 2, b_catb - b_catc = 1
    assert res.table.loc[0, "CI.Lower"] < 0 < res.table.loc[0, "CI.Upper"]
    assert res.table.loc[1, "Star"] == "*"
    text = str(res)
    assert text.startswith("Hypothesis Tests for class b:") and "(catb)-(catc) > 0" in text
    assert "'CI': 90%-CI for one-sided and 95%-CI for two-sided hypotheses." in text


def test_documented():
    docs = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    assert "hypothesis" in docs


# -- Savage-Dickey evidence ratios (sample_prior="yes") -------------------------------------------

# A conjugate model: y_i ~ N(mu, s_i) with known s_i (se()) and mu ~ N(0, TAU0), so the Bayes factor of
# mu = 0 is N(0; m, v) / N(0; 0, TAU0) exactly.
SD_Y = np.array([0.9, 0.2, 1.4, 0.6, -0.1, 1.1])
SD_S = np.array([1.0, 0.8, 1.2, 1.0, 0.9, 1.1])
TAU0 = 1.5


@pytest.fixture(scope="module")
def conjugate_fit():
    data = pd.DataFrame({"y": SD_Y, "s": SD_S})
    return quiet_fit("y | se(s) ~ 1", data, [lb.prior(f"normal(0, {TAU0})", class_="Intercept")],
                     sample_prior="yes", chains=2, draws=3000, seed=3)


def test_savage_dickey_matches_the_conjugate_bayes_factor(conjugate_fit, tmp_path):
    """Tolerance 5%: the kernel density at 0 of 6,000 draws (posterior and prior) is off by about 1-2%."""
    prec = 1 / TAU0**2 + (1 / SD_S**2).sum()
    m, v = (SD_Y / SD_S**2).sum() / prec, 1 / prec
    exact = scipy.stats.norm.pdf(0, m, np.sqrt(v)) / scipy.stats.norm.pdf(0, 0, TAU0)
    row = conjugate_fit.hypothesis("Intercept = 0").table.iloc[0]
    assert row["Evid.Ratio"] == pytest.approx(exact, rel=0.05)
    assert row["Post.Prob"] == pytest.approx(row["Evid.Ratio"] / (1 + row["Evid.Ratio"]))
    prior = conjugate_fit.prior_draws()["b_Intercept"]
    assert prior.std() == pytest.approx(TAU0, rel=0.05) and len(prior) == 6000
    # one-sided hypotheses keep the posterior-probability ratio; the prior group survives save and load
    assert conjugate_fit.hypothesis("Intercept > 0").table.iloc[0]["Evid.Ratio"] > 1
    back = lb.load(conjugate_fit.save(tmp_path / "sd.lmmb"))
    assert back.hypothesis("Intercept = 0").table.iloc[0]["Evid.Ratio"] == row["Evid.Ratio"]


def test_density_is_r_default_gaussian_kernel():
    """bw.nrd0 = 0.9 min(sd, IQR/1.34) n^-1/5; scipy's gaussian_kde with that bandwidth is the witness."""
    from lmmbayes.workflow.hypothesis import density_at

    x = np.random.default_rng(1).standard_t(5, 3000)
    iqr = np.subtract(*np.quantile(x, [0.75, 0.25])) / 1.34
    bw = 0.9 * min(x.std(ddof=1), iqr) * x.size ** -0.2
    kde = scipy.stats.gaussian_kde(x, bw_method=bw / x.std(ddof=1))
    for point in (0.0, 0.7, -2.5):
        assert density_at(x, point) == pytest.approx(float(kde(point)[0]), rel=1e-10)
    assert np.isnan(density_at(np.full(10, np.nan)))


def test_point_hypotheses_without_prior_draws_have_no_evidence_ratio(conjugate_fit):
    draws = conjugate_fit.draws()
    flat_prior = draws.assign(b_Intercept=np.nan)  # a flat prior leaves NaN prior draws
    assert np.isnan(hypothesis(draws, "Intercept = 0", prior=flat_prior).table.iloc[0]["Evid.Ratio"])
    assert np.isnan(hypothesis(draws, "Intercept = 0").table.iloc[0]["Evid.Ratio"])


def test_prior_draws_need_sample_prior_yes(conjugate_fit):
    data = pd.DataFrame({"y": SD_Y, "s": SD_S})
    fit = lb.fit("y | se(s) ~ 1", data, [lb.prior("normal(0, 1)", class_="Intercept")], sample_prior="only",
                 draws=50, seed=1)
    with pytest.raises(lb.FitError, match='sample_prior="yes"'):
        fit.prior_draws()


# -- plot(hypothesis(...)) and R's Inf ------------------------------------------------------------


def kde_nrd0(x: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The witness: scipy's gaussian_kde with R's bw.nrd0 bandwidth."""
    iqr = np.subtract(*np.quantile(x, [0.75, 0.25])) / 1.34
    bw = 0.9 * min(x.std(ddof=1), iqr) * x.size ** -0.2
    return scipy.stats.gaussian_kde(x, bw_method=bw / x.std(ddof=1))(at)


def curves(ax) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {line.get_label(): (np.asarray(line.get_xdata()), np.asarray(line.get_ydata())) for line in ax.lines}


def test_plot_draws_the_density_of_each_hypothesis(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    d = fake_draws(n=2000)
    res = hypothesis(d, ["Intercept - 25 * Days > 0", "Days = 10"])
    fig = res.plot()
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    for ax, draws, label in zip(fig.axes, (d["b_Intercept"] - 25 * d["b_Days"], d["b_Days"] - 10),
                                res.table["Hypothesis"]):
        shown = curves(ax)
        assert list(shown) == ["Posterior"] and ax.get_title() == label  # no prior draws: no prior curve
        x, y = shown["Posterior"]
        draws = draws.to_numpy()
        assert len(x) == 512 and x[0] == pytest.approx(draws.min()) and x[-1] == pytest.approx(draws.max())
        np.testing.assert_allclose(y, kde_nrd0(draws, x), rtol=1e-8)
        assert x[np.argmax(y)] == pytest.approx(np.median(draws), abs=0.5 * draws.std())  # a flat-topped mode
    fig.savefig(tmp_path / "h.png")
    plt.close(fig)
    with pytest.raises(lb.LmmbayesError, match="points"):
        res.plot(points=1)
    with pytest.raises(lb.LmmbayesError, match="ignore_prior must be True or False"):
        res.plot(ignore_prior="yes")


def test_plot_overlays_the_prior_density_only_with_prior_draws(conjugate_fit):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = conjugate_fit.hypothesis(["Intercept = 0", "Intercept > 0.5"])
    prior = conjugate_fit.prior_draws()["b_Intercept"].to_numpy()
    post = conjugate_fit.draws()["b_Intercept"].to_numpy()
    np.testing.assert_allclose(res.prior_samples["H2"], prior - 0.5)
    fig = res.plot()
    for ax, shift in zip(fig.axes, (0.0, 0.5)):
        shown = curves(ax)
        assert sorted(shown) == ["Posterior", "Prior"]
        for what, draws in (("Posterior", post - shift), ("Prior", prior - shift)):
            x, y = shown[what]
            assert x[0] == pytest.approx(draws.min()) and x[-1] == pytest.approx(draws.max())
            np.testing.assert_allclose(y, kde_nrd0(draws, x), rtol=1e-8)
        # the prior (sd 1.5) is wider and lower than the posterior (sd ~0.4)
        assert shown["Prior"][1].max() < shown["Posterior"][1].max()
    plt.close(fig)
    fig = res.plot(ignore_prior=True)
    assert all(list(curves(ax)) == ["Posterior"] for ax in fig.axes)
    plt.close(fig)
    # a flat prior leaves NaN prior draws: no prior curve, as brms
    draws = conjugate_fit.draws()
    flat = hypothesis(draws, "Intercept = 0", prior=draws.assign(b_Intercept=np.nan))
    assert flat.prior_samples["H1"].isna().all()
    fig = flat.plot()
    assert list(curves(fig.axes[0])) == ["Posterior"]
    plt.close(fig)


def test_infinite_evidence_ratio_prints_as_r_does():
    d = fake_draws()
    res = hypothesis(d, ["Days > 0", "Days < 0"])
    assert np.isinf(res.table.loc[0, "Evid.Ratio"]) and res.table.loc[1, "Evid.Ratio"] == 0.0
    text = str(res)
    line = text.splitlines()[2]
    assert "Inf" in line and "inf" not in line.replace("Inf", "")
    assert "inf" not in text.replace("Inf", "")
