"""Benchmark data sets, generated identically in every environment (numpy only).

Each case is a formula, a data generator and priors written once for
lmmbayes (brms syntax) and once for bambi, meaning the same distributions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def simulated(n: int, groups: int, seed: int = 20) -> pd.DataFrame:
    """y ~ x + (x | g): intercept 1, slope 2, sd (1, 0.5), cor 0.3, sigma 1."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, groups, size=n)
    x = rng.normal(size=n)
    cov = np.array([[1.0, 0.15], [0.15, 0.25]])
    r = rng.multivariate_normal([0.0, 0.0], cov, size=groups)
    y = 1.0 + 2.0 * x + r[g, 0] + r[g, 1] * x + rng.normal(size=n)
    return pd.DataFrame({"y": y, "x": x, "g": pd.Categorical([f"g{k:04d}" for k in g])})


def sleepstudy_shaped(seed: int = 18) -> pd.DataFrame:
    """180 rows, 18 subjects x 10 days, lme4's sleepstudy estimates as truth."""
    rng = np.random.default_rng(seed)
    subject = np.repeat(np.arange(18), 10)
    days = np.tile(np.arange(10.0), 18)
    cov = np.array([[24.7**2, 0.07 * 24.7 * 5.9], [0.07 * 24.7 * 5.9, 5.9**2]])
    r = rng.multivariate_normal([0.0, 0.0], cov, size=18)
    y = 251.4 + 10.5 * days + r[subject, 0] + r[subject, 1] * days + rng.normal(0, 25.6, 180)
    return pd.DataFrame({"Reaction": y, "Days": days, "Subject": [f"S{k:02d}" for k in subject]})


def bounce() -> pd.DataFrame:
    from pathlib import Path

    here = Path(__file__).resolve().parent.parent / "lmmbayes" / "datasets" / "data" / "bounce_rates_sim.csv"
    df = pd.read_csv(here)
    df["std_age"] = (df["age"] - df["age"].mean()) / df["age"].std(ddof=1)
    return df


# name -> (formula, data factory, lmmbayes priors (dist, class, coef, group), bambi priors)
CASES = {
    "bounce": ("bounce_time ~ std_age + (1 + std_age | county)", bounce,
               [("normal(200, 1)", "Intercept", "", ""), ("normal(4, 1)", "b", "std_age", ""),
                ("normal(0, 100)", "sigma", "", ""), ("normal(0, 10)", "sd", "", "county")],
               {"Intercept": ("Normal", {"mu": 200, "sigma": 1}), "std_age": ("Normal", {"mu": 4, "sigma": 1}),
                "sigma": ("HalfNormal", {"sigma": 100}), "sd": 10}),
    "sleepstudy": ("Reaction ~ Days + (Days | Subject)", sleepstudy_shaped,
                   [("normal(250, 50)", "Intercept", "", ""), ("normal(0, 20)", "b", "", ""),
                    ("normal(0, 50)", "sigma", "", ""), ("normal(0, 30)", "sd", "", "Subject")],
                   {"Intercept": ("Normal", {"mu": 250, "sigma": 50}), "Days": ("Normal", {"mu": 0, "sigma": 20}),
                    "sigma": ("HalfNormal", {"sigma": 50}), "sd": 30}),
}
for n, g in [(10_000, 10), (10_000, 1000), (100_000, 10), (100_000, 1000), (1_000_000, 10), (1_000_000, 1000)]:
    CASES[f"sim_N{n}_G{g}"] = (
        "y ~ x + (x | g)", (lambda n=n, g=g: simulated(n, g)),
        [("normal(0, 5)", "Intercept", "", ""), ("normal(0, 5)", "b", "", ""),
         ("normal(0, 5)", "sigma", "", ""), ("normal(0, 5)", "sd", "", "g")],
        {"Intercept": ("Normal", {"mu": 0, "sigma": 5}), "x": ("Normal", {"mu": 0, "sigma": 5}),
         "sigma": ("HalfNormal", {"sigma": 5}), "sd": 5},
    )
