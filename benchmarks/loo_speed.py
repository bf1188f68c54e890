"""PSIS-LOO speed: lmmbayes's vectorised PSIS against arviz-stats's, side by side in one run.

Two comparisons, each on the same numbers:

- ``psis``: the pointwise terms of one (4000 draws x 2000 rows) log-likelihood
  with long-tailed rows, ``lmmbayes.psis.loo_pointwise`` against
  ``arviz_stats.base.array_stats.loo`` (seconds per row and the ratio);
- ``loo``: ``fit.loo()`` of a 10^4-row collapsed fit (4 x 1000 draws), the
  whole matrix handed to arviz-stats against the row chunks (seconds), with
  the two elpd_loo values.

Usage: ``.venv/bin/python benchmarks/loo_speed.py``. Prints one JSON line per comparison.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def log_lik(n_draws: int = 4000, n_obs: int = 2000, seed: int = 1) -> np.ndarray:
    """A normal model's pointwise log-likelihood; a third of the rows are outliers (Pareto k > 0.7)."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(0, 0.3, size=(n_draws, 1)) + rng.normal(0, 0.1, size=(n_draws, n_obs))
    sigma = np.exp(rng.normal(0, 0.1, size=(n_draws, 1)))
    y = rng.normal(size=n_obs)
    y[: n_obs // 3] *= 8
    return -0.5 * ((y - mu) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)


def psis() -> dict:
    from arviz_stats.base import array_stats

    from lmmbayes.psis import loo_pointwise

    ll = log_lik()
    t0 = time.perf_counter()
    ours = loo_pointwise(ll, 0.9)
    ours_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        theirs = array_stats.loo(ll.T.reshape(ll.shape[1], 4, -1), chain_axis=-2, draw_axis=-1, r_eff=0.9)
    theirs_s = time.perf_counter() - t0
    return {"case": "psis", "rows": ll.shape[1], "draws": ll.shape[0],
            "lmmbayes_us_per_row": round(ours_s / ll.shape[1] * 1e6), "arviz_us_per_row": round(theirs_s / ll.shape[1] * 1e6),
            "ratio": round(theirs_s / ours_s, 2), "max_abs_diff_elpd": float(np.abs(ours[0] - theirs[0]).max())}


def loo() -> dict:
    sys.path.insert(0, str(HERE))
    from cases import simulated

    import lmmbayes as lb
    from lmmbayes import compare

    priors = [lb.prior("normal(0, 5)", class_=c) for c in ("Intercept", "b", "sigma")] + [
        lb.prior("normal(0, 5)", class_="sd", group="g")]
    fit = lb.fit("y ~ x + (x | g)", simulated(10_000, 1000), priors, method="collapsed", seed=1)
    out = {"case": "loo", "rows": 10_000, "draws": 4000}
    for name, limit in (("whole", 2**62), ("chunks", 0)):
        compare._WHOLE_MATRIX = limit  # force the path
        t0 = time.perf_counter()
        result = fit.loo()
        out[f"{name}_s"] = round(time.perf_counter() - t0, 2)
        out[f"{name}_elpd"] = round(float(result.elpd), 4)
    out["ratio_s"] = round(out["whole_s"] / out["chunks_s"], 2)
    return out


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    for case in (psis, loo):
        print(json.dumps(case()), flush=True)
