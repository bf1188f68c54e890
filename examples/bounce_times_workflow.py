"""The tutorial's Bayesian workflow on the bounce data, start to finish.

    python examples/bounce_times_workflow.py [OUTDIR] [--fast]

1. Look at the data by group (Simpson's paradox: pooled vs within-county trends).
2. Choose priors by prior predictive simulation: a flip-book of fake data sets,
   vague priors against the tutorial's weakly informative ones.
3. Fit the three candidate models.
4. Check the chains: diagnostics, trace, rank, autocorrelation, parallel
   coordinates, pairs, energy.
5. Check the fit (pp_check, Bayes R2) and compare the models (PSIS-LOO).
6. Predict for a new county, and save the chosen model.

Figures go to OUTDIR (default: docs/figures); `--fast` samples less (CI).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

import lmmbayes as lb  # noqa: E402

TUTORIAL = [lb.prior("normal(200, 1)", class_="Intercept"),
            lb.prior("normal(4, 1)", class_="b", coef="std_age"),
            lb.prior("normal(0, 100)", class_="sigma")]
SD = lb.prior("normal(0, 10)", class_="sd", group="county")
VAGUE = [lb.prior("normal(0, 1000)", class_="Intercept"), lb.prior("normal(0, 1000)", class_="b"),
         lb.prior("normal(0, 1000)", class_="sigma"), lb.prior("normal(0, 1000)", class_="sd")]
MODELS = {
    "linear regression": "bounce_time ~ std_age",
    "random intercept": "bounce_time ~ std_age + (1 | county)",
    "random intercept and slope": "bounce_time ~ std_age + (1 + std_age | county)",
}


def save(fig: plt.Figure, out: Path, name: str) -> None:
    fig.savefig(out / f"{name}.png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    print(f"  wrote {out / name}.png")


def main(out: Path, fast: bool) -> dict[str, lb.Fit]:
    out.mkdir(parents=True, exist_ok=True)
    sampling = dict(chains=2, draws=300, tune=300) if fast else dict(chains=4, draws=1000, tune=1000)
    data = lb.datasets.load_bounce_times()

    print("1. The data by county")
    print(data.groupby("county")["bounce_time"].agg(["count", "mean", "std"]).round(1))
    save(lb.plot_groups(data, "bounce_time", "std_age", "county"), out, "eda_groups")

    print("2. Priors by prior predictive simulation")
    formula = MODELS["random intercept"]
    for label, priors in [("vague", VAGUE), ("tutorial", TUTORIAL + [SD])]:
        pp = lb.prior_predictive(formula, data, priors, draws=100, seed=1)
        y = pp["prior_predictive"]["y"].values
        share = ((y > 160) & (y < 250)).mean()
        print(f"  {label} priors: {100 * share:.0f}% of simulated times in 160-250 s, "
              f"{100 * (y < 0).mean():.0f}% negative")
        save(lb.plot_prior_predictive(pp, data, "std_age", "county", n=11,
                                      animate=out / f"flipbook_{label}.gif" if not fast else None),
             out, f"flipbook_{label}")

    print("3. Fit the candidates")
    fits = {}
    for name, f in MODELS.items():
        priors = TUTORIAL + ([SD] if "|" in f else [])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", lb.ConvergenceWarning)  # shown in the diagnostics below
            fits[name] = lb.fit(f, data, priors, seed=2020, progress=False, **sampling)
        print(f"--- {name} ---")
        print(fits[name].summary())

    print("4. Check the chains")
    chosen = fits["random intercept and slope"]
    print(chosen.diagnostics())
    for kind in ("trace", "rank", "acf", "parallel", "pairs", "energy", "ranef"):
        save(chosen.plot(kind), out, f"diag_{kind}")

    print("5. Check and compare")
    save(chosen.pp_check(), out, "pp_check")
    for name, f in fits.items():
        print(f"  Bayes R2 {name}: {f.bayes_r2()['Estimate'].iloc[0]:.3f}")
    comparison = lb.loo_compare(*fits.values(), names=list(fits))
    print(comparison.round(1))

    print("6. Predict for a new county and save")
    new = pd.DataFrame({"std_age": [-1.0, 0.0, 1.0], "county": "rutland"})
    print(chosen.predict(new, allow_new_levels=True, seed=1).round(1))
    chosen.save(out / "random_slope.lmmb")
    restored = lb.load(out / "random_slope.lmmb")
    assert str(restored.summary()) == str(chosen.summary())
    print(f"  saved and restored {out / 'random_slope.lmmb'}")
    return fits


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    main(Path(args[0]) if args else Path("docs/figures"), fast="--fast" in sys.argv)
