"""The tutorial's three models on the embedded bounce data: ``python -m lmmbayes.app.demo``.

Fits, with the tutorial's priors,

1. ``bounce_time ~ std_age`` (linear regression),
2. ``bounce_time ~ std_age + (1 | county)`` (random intercept),
3. ``bounce_time ~ std_age + (1 + std_age | county)`` (correlated random
   intercept and slope),

and prints each brms-style summary.
"""

from __future__ import annotations

import argparse
import warnings

from .. import datasets
from ..api import Fit, fit
from ..errors import ConvergenceWarning
from ..priors import prior

MODELS = (
    ("Linear regression", "bounce_time ~ std_age"),
    ("Random intercept", "bounce_time ~ std_age + (1 | county)"),
    ("Random intercept and slope", "bounce_time ~ std_age + (1 + std_age | county)"),
)


def tutorial_priors(formula: str) -> list:
    """The tutorial's priors; the sd prior only where the model has group terms."""
    priors = [
        prior("normal(200, 1)", class_="Intercept"),
        prior("normal(4, 1)", class_="b", coef="std_age"),
        prior("normal(0, 100)", class_="sigma"),
    ]
    if "|" in formula:
        priors.append(prior("normal(0, 10)", class_="sd", group="county"))
    return priors


def run(chains: int = 4, draws: int = 1000, tune: int = 1000, seed: int = 2020,
        progress: bool = False) -> dict[str, Fit]:
    """Fit the three tutorial models and return them by formula."""
    data = datasets.load_bounce_times()
    fits = {}
    for title, formula in MODELS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # shown in the summary instead
            fits[formula] = fit(formula, data, tutorial_priors(formula), chains=chains, draws=draws,
                                tune=tune, seed=seed, progress=progress)
        print(f"=== {title} ===")
        print(fits[formula].summary())
        print()
    return fits


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lmmbayes.app.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=2020)
    args = parser.parse_args(argv)
    run(args.chains, args.draws, args.tune, args.seed)


if __name__ == "__main__":
    main()
