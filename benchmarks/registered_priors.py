"""One fit with a registered prior family in place of the built-in normal on class b, in a fresh process.

usage: python benchmarks/registered_priors.py CASE [METHOD]

The registered ``mynormal`` is PyMC's Normal, so the posterior is the built-in prior's; compare the wall
time with the same case at the previous commit (a registered prior compiled the collapsed graph, or sent a
GLMM to the joint engine), and with ``PYTENSOR_FLAGS=compiledir=<empty dir>`` for a fresh machine's cache.
Prints one line: engine, route, wall, timings, min bulk ESS over all parameters and min-ESS/s.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import pymc as pm
from arviz_stats.base import array_stats

import lmmbayes as lb
from lmmbayes.results.posterior import flat_draws

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cases import CASES, FAMILIES  # noqa: E402


def main() -> None:
    case, method = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "auto"
    lb.register_distribution("mynormal", lambda name, mu, s, **kw: pm.Normal(name, mu, s, **kw), n_args=2)
    formula, make, priors, _ = CASES[case]
    data = make()
    chosen = [lb.prior(d.replace("normal(", "mynormal(") if c == "b" else d, class_=c, coef=k, group=g)
              for d, c, k, g in priors]
    if not any(c == "b" for _, c, _, _ in priors):
        chosen.append(lb.prior("mynormal(0, 5)", class_="b"))
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = lb.fit(formula, data, chosen, chains=4, draws=1000, tune=1000, seed=1, progress=False,
                     family=FAMILIES.get(case, ("gaussian",))[0], method=method)
    wall = time.perf_counter() - t0
    names, arr = flat_draws(fit.posterior, fit.design)
    ess = array_stats.ess(arr, chain_axis=0, draw_axis=1, method="bulk")
    print(case, fit.engine, fit.info.get("route"), f"wall {wall:.1f}",
          {k: round(v, 1) for k, v in fit.timings.items()}, f"min ESS {float(ess.min()):.0f}",
          f"ESS/s {float(ess.min()) / wall:.1f}")


if __name__ == "__main__":
    main()
