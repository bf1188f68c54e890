"""The figures and printed outputs of docs/after-the-fit.md.

    python examples/after_the_fit.py [OUTDIR]

1. The bounce data with a made-up age class (``older``): conditional effects of a
   numeric predictor (ribbon), of a factor (error bars) and of their interaction
   (by colour); posterior predictive checks (ECDF overlay, the mean by county).
2. A simulated count data set (Poisson, a random intercept per site, a treatment and
   a numeric covariate; simulated here with a fixed seed): conditional effects on the
   response scale, marginal means of the treatment as rates and their ratio (and their
   plot), a hypothesis test (and its posterior density), marginaleffects's plots of
   predictions, comparisons and slopes, PSIS-LOO, k-fold and Bayes factor comparisons of two models, and posterior
   predictive checks (intervals, LOO-PIT).

Figures go to OUTDIR (default: docs/figures), named ``after_*.png``.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import lmmbayes as lb  # noqa: E402

#: Small sampling: the page shows the tools, not a final analysis.
SAMPLING = dict(chains=2, draws=1000, tune=1000, seed=1, progress=False)
DPI = 100


def save(fig: plt.Figure, out: Path, name: str) -> None:
    """Save a figure as ``after_<name>.png`` (dpi 100: small files for the repository)."""
    fig.savefig(out / f"after_{name}.png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    print(f"  wrote {out / ('after_' + name)}.png")


def simulate_counts(seed: int = 2024) -> pd.DataFrame:
    """Counts at 30 sites, 12 visits each: log rate = 1 + 0.5 treated + 0.3 x + site effect (SD 0.4)."""
    rng = np.random.default_rng(seed)
    sites, visits = 30, 12
    site = np.repeat(np.arange(sites), visits)
    treatment = np.where(rng.random(sites * visits) < 0.5, "control", "treated")
    x = rng.normal(0.0, 1.0, sites * visits)
    u = rng.normal(0.0, 0.4, sites)[site]
    eta = 1.0 + 0.5 * (treatment == "treated") + 0.3 * x + u
    data = pd.DataFrame({"count": rng.poisson(np.exp(eta)), "treatment": treatment, "x": x,
                         "site": [f"s{k:02d}" for k in site]})
    data.attrs["name"] = "counts"  # the summary's "Data:" line
    return data


def bounce(out: Path) -> None:
    print("1. Bounce data")
    data = lb.datasets.load_bounce_times()
    data = data.assign(older=np.where(data["age"] >= 50, "50+", "under 50"))
    priors = [lb.prior("normal(200, 1)", class_="Intercept"),
              lb.prior("normal(0, 10)", class_="sd", group="county")]
    fit = lb.fit("bounce_time ~ std_age * older + (1 + std_age | county)", data, priors, **SAMPLING)
    print("\n".join(str(fit.summary()).splitlines()[:4]))  # the header names the data: bounce_times
    ce = fit.conditional_effects()
    print(ce["older"].round(2).to_string())
    figures = ce.plot()
    save(figures["std_age"], out, "ce_numeric")
    save(figures["older"], out, "ce_factor")
    save(figures["std_age:older"], out, "ce_interaction")
    save(fit.pp_check("ecdf_overlay", ndraws=50, seed=1), out, "pp_ecdf_overlay")
    save(fit.pp_check("stat_grouped", group="county", stat="mean", ndraws=None, seed=1), out, "pp_stat_grouped")


def counts(out: Path) -> None:
    print("2. Simulated counts")
    data = simulate_counts()
    priors = [lb.prior("normal(0, 1)", class_="b"), lb.prior("normal(0, 1)", class_="sd")]
    fit = lb.fit("count ~ treatment + x + (1 | site)", data, priors, family="poisson", **SAMPLING)
    fit0 = lb.fit("count ~ x + (1 | site)", data, priors, family="poisson", **SAMPLING)
    print(fit.summary())

    ce = fit.conditional_effects(["x", "treatment"])
    print(ce["treatment"][["treatment", "estimate__", "lower__", "upper__"]].round(2).to_string())
    figures = ce.plot()
    save(figures["x"], out, "count_ce_x")
    save(figures["treatment"], out, "count_ce_treatment")

    emm = fit.emmeans("treatment", type="response")
    print(emm)
    print(emm.pairs().round(3).to_string())
    save(emm.plot(), out, "count_emmeans")
    hyp = fit.hypothesis("treatmenttreated > 0")
    print(hyp)
    save(hyp.plot(), out, "count_hypothesis")

    # marginaleffects's plots: predictions on a grid, and comparisons and slopes along x
    save(fit.plot_predictions(condition=["x", "treatment"], seed=1), out, "count_plot_predictions")
    save(fit.plot_comparisons("treatment", condition="x", seed=1), out, "count_plot_comparisons")
    save(fit.plot_slopes("x", by="treatment", seed=1), out, "count_plot_slopes")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pareto k warnings are shown in the table's n_high_k
        print(lb.loo_compare({"treatment + x": fit, "x only": fit0}).round(2).to_string())
    kf1 = fit.kfold(K=5, folds="grouped", group="site", seed=1)
    kf0 = fit0.kfold(K=5, folds="grouped", group="site", seed=1)
    print(kf1)
    print(lb.loo_compare({"treatment + x": kf1, "x only": kf0}).round(2).to_string())
    print(lb.bayes_factor(fit, fit0, names=("treatment + x", "x only"), log=True))

    save(fit.pp_check("intervals", seed=1), out, "pp_intervals")
    save(fit.pp_check("loo_pit_overlay", seed=1), out, "pp_loo_pit")
    save(fit.pp_check("rootogram", seed=1), out, "pp_rootogram")


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    pd.set_option("display.width", 120)
    bounce(out)
    counts(out)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/figures"))
