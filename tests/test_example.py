"""The tutorial example runs end to end in its reduced (--fast) form."""

from __future__ import annotations

import importlib.util
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "bounce_times_workflow.py"


def test_workflow_example_runs(tmp_path):
    spec = importlib.util.spec_from_file_location("bounce_times_workflow", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fits = module.main(tmp_path, fast=True)
    assert set(fits) == {"linear regression", "random intercept", "random intercept and slope"}
    expected = {"eda_groups", "flipbook_vague", "flipbook_tutorial", "pp_check",
                *(f"diag_{k}" for k in ("trace", "rank", "acf", "parallel", "pairs", "energy", "ranef"))}
    written = {p.stem for p in tmp_path.glob("*.png")}
    assert expected <= written
    assert all((tmp_path / f"{name}.png").stat().st_size > 5_000 for name in expected)
    assert (tmp_path / "random_slope.lmmb").is_file()
