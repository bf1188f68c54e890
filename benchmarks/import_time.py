"""`import lmmbayes` against importing its heavy dependencies, in fresh processes.

Run: .venv/bin/python benchmarks/import_time.py [repeats]. Prints the median of
``python -X importtime`` cumulative microseconds per statement and the ratio
to `import lmmbayes`. The package imports none of pymc, pytensor, nutpie,
numba, matplotlib or arviz_plots until a call needs them (tests/test_layers.py
asserts which modules stay unloaded); this measures what that buys.
"""

from __future__ import annotations

import statistics
import subprocess
import sys

STATEMENTS = {
    "import lmmbayes": "lmmbayes",
    "import lmmbayes; lmmbayes.fit": "lmmbayes",
    "import pandas": "pandas",
    "import arviz_stats": "arviz_stats",
    "import pymc": "pymc",
}


def cumulative_us(statement: str, module: str) -> float:
    """The cumulative import time of ``module`` (µs) when ``statement`` runs in a fresh interpreter;
    for a statement that touches a lazy attribute, the whole statement's wall time instead."""
    code = statement if "." not in statement.split(";")[-1] else (
        f"import time; t = time.perf_counter(); {statement}; print('WALL', (time.perf_counter() - t) * 1e6)")
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                         check=True)
    for line in out.stdout.splitlines():
        if line.startswith("WALL"):
            return float(line.split()[1])
    for line in out.stderr.splitlines()[::-1]:
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[2] == module:
            return float(parts[1])
    raise RuntimeError(f"no import time for {module}")


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    base = None
    print("| statement | median ms | vs import lmmbayes |\n|---|---|---|")
    for statement, module in STATEMENTS.items():
        ms = statistics.median(cumulative_us(statement, module) for _ in range(repeats)) / 1000
        base = base or ms
        print(f"| `{statement}` | {ms:.0f} | {ms / base:.1f}x |")


if __name__ == "__main__":
    main()
