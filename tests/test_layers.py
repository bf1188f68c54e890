"""The package's architecture: layers in order, no import circles, a light ``import lmmbayes``.

The layers (``docs/architecture.md``), each importing only those before it:
errors and _validate, spec, families, design, priors, engines, results,
pipeline, workflow, api, app. Imports inside functions count too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "lmmbayes"
LAYERS = ["errors", "_validate", "spec", "families", "datasets", "design", "priors", "engines", "results", "pipeline",
          "workflow", "api", "app"]
# Layers that may import each other's modules freely (none: each is one stage).
HEAVY = ("pymc", "pytensor", "nutpie", "numba", "matplotlib", "arviz_plots")


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """lmmbayes modules ``name`` imports (TYPE_CHECKING blocks excluded, function-level imports included)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rsplit(".", 1)[0]
            target = (base + "." + node.module if node.module else base) if node.level else node.module
            for candidate in [target] + [f"{target}.{a.name}" for a in node.names]:
                if candidate in modules and candidate != name:
                    found.add(candidate)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules and a.name != name)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_every_module_belongs_to_a_layer(graph):
    loose = [m for m in graph if m not in ("lmmbayes", "lmmbayes.__main__") and _layer(m) is None]
    assert not loose, f"modules outside the layers: {loose}"


def test_layers_import_only_earlier_layers(graph):
    bad = []
    for module, targets in graph.items():
        own = _layer(module)
        if own is None:
            continue
        for target in targets:
            other = _layer(target)
            if other is not None and other > own:
                bad.append(f"{module} -> {target}")
    assert not bad, "imports against the layer order:\n" + "\n".join(sorted(bad))


def test_no_import_circles(graph):
    """Tarjan's strongly connected components over the import graph: every one must be a single module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            strong(v)
    # a package's __init__ re-exporting its own modules is not a circle between stages
    real = [c for c in circles if len({".".join(m.split(".")[:2]) for m in c}) > 1]
    assert not real, f"import circles: {real}"


@pytest.mark.parametrize("statement", [
    "import lmmbayes",
    "import lmmbayes as lb; lb.prior('normal(0, 1)'); lb.family('gaussian'); lb.FormulaError",
])
def test_import_is_light(statement):
    code = f"{statement}; import sys; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", f"{statement!r} loaded {out}"
