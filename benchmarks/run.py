"""Side-by-side benchmarks: lmmbayes (collapsed, joint) against bambi (PyMC NUTS, nutpie).

Every measurement runs in a fresh process. "cold" uses empty PyTensor and
numba compile caches, "warm" runs the same command again on the cache the cold run
filled. bambi runs in its own environment (benchmarks/.venv-bambi, made by
`make bench-env`), because bambi 0.21 pins formulae < 0.7.

usage: python benchmarks/run.py [--cases bounce,sleepstudy,...] [--chains 4] [--draws 1000]
                                [--tools lmmbayes-collapsed,lmmbayes-joint,bambi-nutpie,bambi-pymc]
Results are appended to benchmarks/results/results.jsonl and written to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
}


def run_one(tool: str, case: str, chains: int, draws: int, cache: str, timeout: int) -> dict:
    python, script, option = TOOLS[tool]
    # Both compile caches start empty in the cold run: PyTensor's, and numba's (PyMC models that
    # nutpie compiles). The collapsed engine's C kernel is built at install time, like any
    # compiled extension, so it is present in both runs.
    env = {**os.environ, "PYTENSOR_FLAGS": f"base_compiledir={cache}", "NUMBA_CACHE_DIR": f"{cache}/numba"}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([str(python), str(HERE / script), case, option, str(chains), str(draws)],
                              capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"tool": tool, "case": case, "error": f"timeout after {timeout} s"}
    total = time.perf_counter() - t0
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"tool": tool, "case": case, "error": proc.stderr.strip().splitlines()[-1:] or ["failed"]}
    result = json.loads(lines[-1])
    result["tool"] = tool
    result["process_s"] = total
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", default="bounce,sleepstudy,sim_N10000_G10,sim_N10000_G1000,sim_N100000_G1000")
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--timeout", type=int, default=1800)
    args = parser.parse_args()
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    rows = []
    for case in args.cases.split(","):
        for tool in args.tools.split(","):
            with tempfile.TemporaryDirectory(prefix="bench-cache-") as cache:
                for phase in ("cold", "warm"):
                    r = run_one(tool, case, args.chains, args.draws, cache, args.timeout)
                    r.update(phase=phase, chains=args.chains, draws=args.draws, machine=platform.node())
                    rows.append(r)
                    print(json.dumps(r), flush=True)
                    with open(out_dir / "results.jsonl", "a") as fh:
                        fh.write(json.dumps(r) + "\n")
    from report import write_markdown

    write_markdown(rows, ROOT / "docs" / "benchmarks.md")


if __name__ == "__main__":
    sys.exit(main())
