"""One lmmbayes fit in a fresh process; prints one JSON line of measurements.

usage: python worker_lmmbayes.py CASE METHOD CHAINS DRAWS
"""

from __future__ import annotations

import json
import resource
import sys
import time

t_start = time.perf_counter()
import numpy as np  # noqa: E402
from arviz_stats.base import array_stats  # noqa: E402

import lmmbayes as lb  # noqa: E402
from lmmbayes.results.posterior import flat_draws  # noqa: E402

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from cases import CASES, FAMILIES  # noqa: E402

t_import = time.perf_counter() - t_start


def main() -> None:
    case, method, chains, draws = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    formula, make, priors, _ = CASES[case]
    data = make()
    t0 = time.perf_counter()
    family = FAMILIES.get(case, ("gaussian",))[0]
    fit = lb.fit(formula, data, [lb.prior(d, class_=c, coef=k, group=g) for d, c, k, g in priors],
                 chains=chains, draws=draws, tune=draws, seed=1, progress=False, method=method, family=family)
    text = str(fit.summary())
    wall = time.perf_counter() - t0
    names, arr = flat_draws(fit.posterior, fit.design)
    ess = array_stats.ess(arr, chain_axis=0, draw_axis=1, method="bulk")
    print(json.dumps({
        "tool": f"lmmbayes-{fit.engine}", "case": case, "rows": len(data), "import_s": t_import,
        "wall_s": wall, "compile_s": fit.timings.get("compile", 0.0), "sample_s": fit.timings.get("sample", 0.0),
        "min_ess": float(np.nanmin(ess)), "min_ess_param": names[int(np.nanargmin(ess))],
        "divergences": fit.sampler_report.divergences, "integration": fit.info.get("integration", ""),
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "summary_chars": len(text),
    }))


if __name__ == "__main__":
    main()
