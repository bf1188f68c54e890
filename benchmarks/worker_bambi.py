"""One bambi fit in a fresh process (run with the bambi environment's python).

usage: python worker_bambi.py CASE SAMPLER CHAINS DRAWS    (SAMPLER: pymc or nutpie)
bambi cannot correlate group-level terms: (1 + x | g) is fitted with independent terms.
"""

from __future__ import annotations

import json
import re
import resource
import sys
import time
import warnings

warnings.simplefilter("ignore")
t_start = time.perf_counter()
import arviz as az  # noqa: E402
import bambi as bmb  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from cases import CASES, FAMILIES  # noqa: E402

t_import = time.perf_counter() - t_start


def main() -> None:
    case, sampler, chains, draws = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    formula, make, _, spec = CASES[case]
    data = make()
    priors = {k: bmb.Prior(v[0], **v[1]) for k, v in spec.items() if k != "sd"}
    for group_term in re.findall(r"\(([^()|]*)\|([^()]*)\)", formula.split("~")[1]):
        lhs, factor = (part.strip() for part in group_term)
        for term in [t.strip() for t in lhs.split("+")] or ["1"]:
            priors[f"{term}|{factor}"] = bmb.Prior("Normal", mu=0, sigma=bmb.Prior("HalfNormal", sigma=spec["sd"]))
    _, family, bambi_formula, _ = FAMILIES.get(case, ("gaussian", "gaussian", None, None))
    t0 = time.perf_counter()
    family, _, link = family.partition(":")  # "gamma:log": bambi's gamma defaults to the inverse link
    model = bmb.Model(bambi_formula or formula, data, priors=priors, family=family, link=link or None)
    idata = model.fit(draws=draws, tune=draws, chains=chains, random_seed=1, inference_method=sampler,
                      progressbar=False)
    text = str(az.summary(idata))
    wall = time.perf_counter() - t0
    post = idata["posterior"] if not hasattr(idata, "posterior") else idata.posterior
    ess_min, where = np.inf, ""
    for name, var in post.data_vars.items():
        if any(str(d).endswith("__obs__") for d in var.dims):
            continue
        ess = np.asarray(az.ess(var.to_dataset(name=name) if hasattr(var, "to_dataset") else var)[name])
        if np.nanmin(ess) < ess_min:
            ess_min, where = float(np.nanmin(ess)), name
    stats = idata["sample_stats"] if not hasattr(idata, "sample_stats") else idata.sample_stats
    print(json.dumps({
        "tool": f"bambi-{sampler}", "case": case, "rows": len(data), "import_s": t_import, "wall_s": wall,
        "min_ess": ess_min, "min_ess_param": where, "divergences": int(np.asarray(stats["diverging"]).sum()),
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "summary_chars": len(text),
    }))


if __name__ == "__main__":
    main()
