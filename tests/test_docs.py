"""The documentation site builds offline in strict mode (broken references fail)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None,
                    reason="mkdocs is not installed (it is in the test extra)")
def test_docs_build_strict(tmp_path):
    mkdocs = Path(sys.executable).parent / "mkdocs"
    result = subprocess.run([str(mkdocs), "build", "--strict", "-d", str(tmp_path / "site")], cwd=ROOT,
                            capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "tutorial" / "index.html").is_file()
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "register_distribution" in api and "posterior_summary" in api
    # every figure examples/after_the_fit.py writes is shown on the after-the-fit page
    page = (tmp_path / "site" / "after-the-fit" / "index.html").read_text()
    figures = sorted(p.name for p in (ROOT / "docs" / "figures").glob("after_*.png"))
    assert figures and [f for f in figures if f"figures/{f}" not in page] == []
