"""Shared fixtures: data sets and fitted models, each fitted once per test process.

Fits are small (2 chains, a few hundred draws): enough for the assertions,
cheap for CI. The same fitted objects are reused across test modules.
Data sets from R packages (GPL) are read from the project's shared folder,
never shipped: tests that need them skip with a reason where it is absent.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import lmmbayes as lb

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "lme4_brms"

TUTORIAL_PRIORS = [
    lb.prior("normal(200, 1)", class_="Intercept"),
    lb.prior("normal(4, 1)", class_="b", coef="std_age"),
    lb.prior("normal(0, 100)", class_="sigma"),
    lb.prior("normal(0, 10)", class_="sd", group="county"),
]
SLOPE = "bounce_time ~ std_age + (1 + std_age | county)"


def quiet_fit(*args, **kwargs):
    """lb.fit without the sampler's advisory warnings (tests assert on them explicitly)."""
    kwargs.setdefault("progress", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lb.ConvergenceWarning)
        return lb.fit(*args, **kwargs)


def shared_csv(name: str) -> pd.DataFrame:
    """A data set of ../shared/data/lme4_brms (GPL: for tests only); skip where the folder is absent."""
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} is not available (the GPL data sets are not shipped with lmmbayes)")
    return pd.read_csv(path)


@pytest.fixture(scope="session")
def bounce() -> pd.DataFrame:
    return lb.datasets.load_bounce_times()


@pytest.fixture(scope="session")
def bounce_slope_fit(bounce) -> lb.Fit:
    return quiet_fit(SLOPE, bounce, TUTORIAL_PRIORS, chains=2, draws=400, tune=400, seed=11)


def simulate_lmm(seed: int = 1, n_groups: int = 30, per_group: int = 20) -> tuple[pd.DataFrame, dict]:
    """y ~ x + cat + (1 + x | g) with known parameters; the true random effects are kept in ``truth["r"]``."""
    rng = np.random.default_rng(seed)
    truth = {"b_Intercept": 1.0, "b_x": 2.0, "b_catb": 0.5, "b_catc": -0.5,
             "sd_g__Intercept": 1.0, "sd_g__x": 0.5, "cor_g__Intercept__x": 0.3, "sigma": 0.8}
    n = n_groups * per_group
    g = np.repeat(np.arange(n_groups), per_group)
    x = rng.normal(loc=1.5, size=n)  # a mean far from 0, so the centred intercept differs from b_Intercept
    cat = rng.choice(["a", "b", "c"], size=n)
    sd = np.array([truth["sd_g__Intercept"], truth["sd_g__x"]])
    rho = truth["cor_g__Intercept__x"]
    cov = np.diag(sd) @ np.array([[1, rho], [rho, 1]]) @ np.diag(sd)
    r = rng.multivariate_normal(np.zeros(2), cov, size=n_groups)
    mu = (truth["b_Intercept"] + truth["b_x"] * x + truth["b_catb"] * (cat == "b")
          + truth["b_catc"] * (cat == "c") + r[g, 0] + r[g, 1] * x)
    y = mu + rng.normal(scale=truth["sigma"], size=n)
    data = pd.DataFrame({"y": y, "x": x, "cat": cat, "g": [f"g{i:02d}" for i in g]})
    truth["r"] = pd.DataFrame(r, index=[f"g{i:02d}" for i in range(n_groups)], columns=["Intercept", "x"])
    return data, truth


@pytest.fixture(scope="session")
def simulated():
    return simulate_lmm()


@pytest.fixture(scope="session")
def simulated_fit(simulated) -> lb.Fit:
    data, _ = simulated
    priors = [lb.prior("normal(0, 5)", class_="b"), lb.prior("normal(0, 5)", class_="Intercept")]
    return quiet_fit("y ~ x + cat + (1 + x | g)", data, priors, chains=2, draws=500, tune=500, seed=5)


def simulate_effects(seed: int = 4, n: int = 240) -> pd.DataFrame:
    """y ~ x * cat + z + trt + (1 | g), trt unbalanced across cat (so equal and data weights differ)."""
    rng = np.random.default_rng(seed)
    cat = rng.choice(["a", "b", "c"], size=n)
    trt = np.where(rng.random(n) < np.select([cat == "a", cat == "b"], [0.2, 0.5], 0.85), "T", "C")
    x, z = rng.normal(2.0, 1.0, n), rng.normal(0.0, 2.0, n)
    g = rng.integers(0, 12, n)
    r = rng.normal(0, 0.5, 12)
    y = (1 + 2 * x + 0.5 * (cat == "b") - 0.5 * (cat == "c") + 0.7 * x * (cat == "b") + 0.3 * z
         + 1.0 * (trt == "T") + r[g] + rng.normal(0, 0.7, n))
    return pd.DataFrame({"y": y, "x": x, "cat": cat, "z": z, "trt": trt, "g": [f"g{k:02d}" for k in g]})


@pytest.fixture(scope="session")
def effects_data() -> pd.DataFrame:
    return simulate_effects()


@pytest.fixture(scope="session")
def effects_fit(effects_data) -> lb.Fit:
    """A Gaussian fit (collapsed engine) with an interaction, two factors and two numeric predictors."""
    priors = [lb.prior("normal(0, 5)", class_="b"), lb.prior("normal(0, 10)", class_="Intercept")]
    return quiet_fit("y ~ x * cat + z + trt + (1 | g)", effects_data, priors, chains=2, draws=200, tune=200,
                     seed=7)


@pytest.fixture(scope="session")
def poisson_effects_fit() -> lb.Fit:
    """A Poisson fit (log link) with a numeric and a categorical predictor."""
    rng = np.random.default_rng(3)
    n = 200
    x, cat = rng.normal(size=n), rng.choice(["a", "b", "c"], size=n)
    eta = 0.5 + 0.4 * x + 0.5 * (cat == "b") - 0.3 * (cat == "c")
    data = pd.DataFrame({"count": rng.poisson(np.exp(eta)), "x": x, "cat": cat})
    return quiet_fit("count ~ x + cat", data, family="poisson", chains=2, draws=200, tune=200, seed=2)
