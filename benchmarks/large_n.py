"""Large-N collapsed fits: wall time by stage and peak memory, one JSON line per run.

    .venv/bin/python benchmarks/large_n.py                 # every case below
    .venv/bin/python benchmarks/large_n.py memory_1e6      # one case

Each case runs in a fresh process, so that its peak resident memory
(``resource.getrusage(...).ru_maxrss``) is its own:

- ``memory_1e6``: ``y ~ x + (x | g)``, 10^6 rows and 1000 groups as a pandas
  frame (:func:`cases.simulated`), fitted in memory;
- ``dask_1e7``: the same model on 10^7 rows generated lazily, partition by
  partition (``dask.dataframe.from_map``), so that they never exist in
  memory at once; reduced on Dask's threaded scheduler;
- ``dask_loo_1e6``: the same on 10^6 lazy rows, then PSIS-LOO, which maps
  the rows again in chunks (the draws x rows matrix would be 32 GB);
- ``dask_crossed_1e6``: crossed factors on Dask, ``y ~ x + (1 | user) + (1 | item)``
  on 10^6 lazy ratings (cases.users_items's design: 10^4 users, each rating
  100 of 10^3 items), reduced to sparse pair sums partition by partition; the
  users are integrated out and the items sampled.

All fit 4 chains x 1000 draws (after 1000 warmup). Not part of the test
suite: it takes minutes. Each row also carries ``bounce_fit_s``, the bounce
model's collapsed fit timed in a fresh process in the same run, as a
yardstick of the machine's speed. Rows are appended to results/large_n.jsonl, and the
Large-N section of docs/benchmarks.md is rewritten from it (the other tables stay).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
FORMULA = "y ~ x + (x | g)"
GROUPS = 1000
LEVELS = [f"g{k:04d}" for k in range(GROUPS)]
SAMPLING = dict(chains=4, draws=1000, tune=1000, seed=1, progress=False)


def _priors():
    import lmmbayes as lb

    return [lb.prior("normal(0, 5)", class_=c) for c in ("Intercept", "b", "sigma", "sd")]


def peak_mb() -> float:
    """Peak resident memory of this process so far, in MiB (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def lazy_partition(i: int, rows: int, seed: int = 20) -> pd.DataFrame:
    """Partition ``i`` of the simulated data: cases.simulated's model, generated on demand."""
    cov = np.array([[1.0, 0.15], [0.15, 0.25]])
    r = np.random.default_rng(seed).multivariate_normal([0.0, 0.0], cov, size=GROUPS)
    rng = np.random.default_rng([seed, i])
    g = rng.integers(0, GROUPS, size=rows)
    x = rng.normal(size=rows)
    y = 1.0 + 2.0 * x + r[g, 0] + r[g, 1] * x + rng.normal(size=rows)
    return pd.DataFrame({"y": y, "x": x, "g": pd.Categorical.from_codes(g, categories=LEVELS)})


USERS, ITEMS, PER_USER = 10_000, 1_000, 100


def lazy_ratings(i: int, partitions: int, seed: int = 24) -> pd.DataFrame:
    """Partition ``i`` of ``partitions`` of the ratings: its share of the users, each rating ``PER_USER`` distinct
    items; user and item effects (sds 0.5 and 0.8) drawn once from ``seed``, as in cases.users_items."""
    effects = np.random.default_rng(seed)
    user_effect, item_effect = effects.normal(0, 0.5, USERS), effects.normal(0, 0.8, ITEMS)
    users = np.arange(i * USERS // partitions, (i + 1) * USERS // partitions)
    rng = np.random.default_rng([seed, i])
    user = np.repeat(users, PER_USER)
    item = np.argsort(rng.random((users.size, ITEMS)), axis=1)[:, :PER_USER].ravel()
    x = rng.normal(size=user.size)
    y = 3.0 + 0.2 * x + user_effect[user] + item_effect[item] + rng.normal(size=user.size)
    return pd.DataFrame({"y": y, "x": x, "user": pd.Categorical.from_codes(user, categories=[f"u{k}" for k in range(USERS)]),
                         "item": pd.Categorical.from_codes(item, categories=[f"i{k}" for k in range(ITEMS)])})


def _report(case: str, n: int, fit, wall: float, extra: dict) -> dict:
    t0 = time.perf_counter()
    table = fit.posterior_summary()
    summary_s = time.perf_counter() - t0
    fixef = fit.fixef()["Estimate"]
    return {
        "case": case, "n": n, "groups": GROUPS, "chains": fit.config.chains, "draws": fit.config.draws,
        **extra,
        "timings_s": {k: round(v, 3) for k, v in fit.timings.items()},
        "posterior_summary_s": round(summary_s, 3),
        "fit_wall_s": round(wall, 3),
        "peak_rss_mb": round(peak_mb(), 1),
        "parameters": len(table),
        "b_Intercept": round(float(fixef["Intercept"]), 4), "b_x": round(float(fixef["x"]), 4),
        "max_rhat": round(float(fit.summary().to_frame()["Rhat"].max()), 4),
    }


def memory_1e6() -> dict:
    sys.path.insert(0, str(HERE))
    from cases import simulated

    import lmmbayes as lb

    n = 1_000_000
    t0 = time.perf_counter()
    df = simulated(n, GROUPS)
    data_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    fit = lb.fit(FORMULA, df, _priors(), method="collapsed", **SAMPLING)
    return _report("memory_1e6", n, fit, time.perf_counter() - t0, {"data_s": round(data_s, 3)})


def dask_1e7(partitions: int = 20) -> dict:
    import dask
    import dask.dataframe as dd

    import lmmbayes as lb

    n = 10_000_000
    rows = n // partitions
    meta = lazy_partition(0, 0)
    ddf = dd.from_map(lazy_partition, range(partitions), rows=rows, meta=meta, enforce_metadata=False)
    t0 = time.perf_counter()
    with dask.config.set(scheduler="threads", num_workers=2):
        fit = lb.fit(FORMULA, ddf, _priors(), **SAMPLING)
    return _report("dask_1e7", n, fit, time.perf_counter() - t0,
                   {"partitions": partitions, "rows_in_memory": fit.design.rows_in_memory})


def dask_loo_1e6(partitions: int = 10) -> dict:
    import dask
    import dask.dataframe as dd

    import lmmbayes as lb

    n = 1_000_000
    meta = lazy_partition(0, 0)
    ddf = dd.from_map(lazy_partition, range(partitions), rows=n // partitions, meta=meta, enforce_metadata=False)
    with dask.config.set(scheduler="threads", num_workers=2):
        t0 = time.perf_counter()
        fit = lb.fit(FORMULA, ddf, _priors(), **SAMPLING)
        wall = time.perf_counter() - t0
        t0 = time.perf_counter()
        loo = fit.loo()
        loo_s = time.perf_counter() - t0
    return _report("dask_loo_1e6", n, fit, wall, {
        "partitions": partitions, "loo_s": round(loo_s, 2), "elpd_loo": round(float(loo.elpd), 1),
        "se_elpd_loo": round(float(loo.se), 1), "p_loo": round(float(loo.p), 1),
        "max_pareto_k": round(float(loo.pareto_k.max()), 3)})


def dask_crossed_1e6(partitions: int = 10) -> dict:
    import dask
    import dask.dataframe as dd

    import lmmbayes as lb

    meta = lazy_ratings(0, partitions).iloc[:0]
    ddf = dd.from_map(lazy_ratings, range(partitions), partitions=partitions, meta=meta, enforce_metadata=False)
    t0 = time.perf_counter()
    with dask.config.set(scheduler="threads", num_workers=2):
        fit = lb.fit("y ~ x + (1 | user) + (1 | item)", ddf, _priors(), **SAMPLING)
    return _report("dask_crossed_1e6", USERS * PER_USER, fit, time.perf_counter() - t0,
                   {"groups": f"{USERS} x {ITEMS} crossed", "partitions": partitions,
                    "rows_in_memory": fit.design.rows_in_memory, "route": fit.info.get("route", "")})


def reference() -> dict:
    """The bounce model's collapsed fit, the first case of ``run.py``: how fast this machine is,
    so that rows from different days (and machines) can be read side by side."""
    import lmmbayes as lb

    data = lb.datasets.load_bounce_times()
    priors = [lb.prior("normal(200, 1)", class_="Intercept"), lb.prior("normal(0, 10)", class_="sd", group="county")]
    t0 = time.perf_counter()
    lb.fit("bounce_time ~ std_age + (1 + std_age | county)", data, priors, method="collapsed", **SAMPLING)
    return {"bounce_fit_s": round(time.perf_counter() - t0, 2)}


CASES = {"memory_1e6": memory_1e6, "dask_1e7": dask_1e7, "dask_loo_1e6": dask_loo_1e6,
         "dask_crossed_1e6": dask_crossed_1e6}


def _run(case: str) -> dict:
    """One case in a fresh process (its own peak memory), as a dict; an error is a row too."""
    out = subprocess.run([sys.executable, __file__, "--run", case], capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {"case": case, "error": out.stderr[-2000:]}


def main(argv: list[str]) -> None:
    if len(argv) == 2 and argv[0] == "--run":
        print(json.dumps({**CASES, "reference": reference}[argv[1]]()), flush=True)
        return
    speed = _run("reference")
    for case in argv or list(CASES):
        row = {**_run(case), **speed, "date": time.strftime("%Y-%m-%d")}
        print(json.dumps(row), flush=True)
        (HERE / "results").mkdir(exist_ok=True)
        with open(HERE / "results" / "large_n.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")
    from report import update_large_n

    update_large_n(HERE.parent / "docs" / "benchmarks.md", HERE / "results" / "large_n.jsonl")


if __name__ == "__main__":
    main(sys.argv[1:])
