"""Side-by-side benchmarks: lmmbayes (collapsed, joint) against bambi (PyMC NUTS, nutpie),
and against lme4 and brms where R is installed.

Every measurement runs in a fresh process. "cold" uses empty PyTensor and
numba compile caches, "warm" runs the same command again on the cache the cold run
filled. bambi runs in its own environment (benchmarks/.venv-bambi, made by
`make bench-env`), because bambi 0.21 pins formulae < 0.7. lme4 and brms run in
Rscript (benchmarks/worker_r.R) on the same data and priors, written to files
from benchmarks/cases.py; brms compiles its Stan model in every process, so its
cold and warm runs do the same work.

usage: python benchmarks/run.py [--cases bounce,sleepstudy,...] [--chains 4] [--draws 1000]
          [--tools lmmbayes-collapsed,lmmbayes-joint,bambi-nutpie,bambi-pymc,lme4,brms]
Results are appended to benchmarks/results/results.jsonl; docs/benchmarks.md is rewritten
from the rows of this run (with --append-doc, from every row of results.jsonl's last run of
each case and tool, so cases can be run separately).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LMM_PY = ROOT / ".venv" / "bin" / "python"
BAMBI_PY = HERE / ".venv-bambi" / "bin" / "python"
TOOLS = {
    "lmmbayes-collapsed": (LMM_PY, "worker_lmmbayes.py", "collapsed"),
    "lmmbayes-joint": (LMM_PY, "worker_lmmbayes.py", "joint"),
    "bambi-nutpie": (BAMBI_PY, "worker_bambi.py", "nutpie"),
    "bambi-pymc": (BAMBI_PY, "worker_bambi.py", "pymc"),
    "lme4": ("Rscript", "worker_r.R", "lme4"),
    "brms": ("Rscript", "worker_r.R", "brms"),
}


def r_command(case: str, option: str, chains: int, draws: int, cache: str) -> list[str]:
    """Rscript's command line, with the case's data and brms priors written under ``cache``."""
    sys.path.insert(0, str(HERE))
    from cases import CASES, FAMILIES

    formula, make, priors, _ = CASES[case]
    family, _, _, lme4_formula = FAMILIES.get(case, ("gaussian", "gaussian", None, None))
    if option == "lme4" and lme4_formula:
        formula = lme4_formula
    data_path, prior_path = Path(cache) / f"{case}.csv", Path(cache) / f"{case}-priors.tsv"
    if not data_path.exists():
        make().to_csv(data_path, index=False)
        prior_path.write_text("".join(f"{d}\t{c}\t{k}\t{g}\n" for d, c, k, g in priors))
    return ["Rscript", str(HERE / "worker_r.R"), str(data_path), formula, option, str(chains), str(draws),
            str(prior_path), family]


def run_one(tool: str, case: str, chains: int, draws: int, cache: str, timeout: int) -> dict:
    python, script, option = TOOLS[tool]
    # Both compile caches start empty in the cold run: PyTensor's, and numba's (PyMC models that
    # nutpie compiles). The collapsed engine's C kernel is built at install time, like any
    # compiled extension, so it is present in both runs.
    env = {**os.environ, "PYTENSOR_FLAGS": f"base_compiledir={cache}", "NUMBA_CACHE_DIR": f"{cache}/numba"}
    if python == "Rscript":
        command = r_command(case, option, chains, draws, cache)
    else:
        command = [str(python), str(HERE / script), case, option, str(chains), str(draws)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"tool": tool, "case": case, "error": f"timeout after {timeout} s"}
    total = time.perf_counter() - t0
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"tool": tool, "case": case, "error": proc.stderr.strip().splitlines()[-1:] or ["failed"]}
    result = json.loads(lines[-1])
    result["tool"] = tool
    result["case"] = case
    result["process_s"] = total
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", default="bounce,sleepstudy,sim_N10000_G10,sim_N10000_G1000,sim_N100000_G1000")
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--timeout", type=int, default=1800)
    parser.add_argument("--phases", default="cold,warm",
                        help="which caches to measure: cold, warm or both (the slowest cases run cold only)")
    parser.add_argument("--append-doc", action="store_true",
                        help="write docs/benchmarks.md from the newest row of every case, tool and cache "
                             "in results.jsonl (rows of runs that recorded a run id), not only this run's")
    args = parser.parse_args()
    run_id = time.strftime("%Y-%m-%dT%H:%M:%S")
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    rows = []
    tools = args.tools.split(",")
    if shutil.which("Rscript") is None and {"lme4", "brms"} & set(tools):
        print("Rscript not found: lme4 and brms are left out (apt-get install r-cran-lme4 r-cran-brms)")
        tools = [t for t in tools if TOOLS[t][0] != "Rscript"]
    for case in args.cases.split(","):
        for tool in tools:
            with tempfile.TemporaryDirectory(prefix="bench-cache-") as cache:
                for phase in args.phases.split(","):
                    r = run_one(tool, case, args.chains, args.draws, cache, args.timeout)
                    r.update(phase=phase, chains=args.chains, draws=args.draws, machine=platform.node(), run=run_id)
                    rows.append(r)
                    print(json.dumps(r), flush=True)
                    with open(out_dir / "results.jsonl", "a") as fh:
                        fh.write(json.dumps(r) + "\n")
    if args.append_doc:
        rows = newest_rows(out_dir / "results.jsonl")
    from report import write_markdown

    write_markdown(rows, ROOT / "docs" / "benchmarks.md")


def newest_rows(path: Path) -> list[dict]:
    """The newest row per (case, tool, cache) among rows with a run id, in first-seen order."""
    newest: dict[tuple, dict] = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if "run" in r:
            key = (r["case"], r["tool"], r["phase"])
            if key not in newest or r["run"] >= newest[key]["run"]:
                newest[key] = r
    return list(newest.values())


if __name__ == "__main__":
    sys.exit(main())
