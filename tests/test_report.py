"""The HTML report: self-contained, loaded in a real browser (headless Chromium)."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import lmmbayes as lb
from conftest import quiet_fit

ARTEFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def report_file(bounce, bounce_slope_fit, tmp_path_factory):
    intercept = quiet_fit("bounce_time ~ std_age + (1 | county)", bounce, chains=2, draws=400, tune=400, seed=11)
    path = tmp_path_factory.mktemp("report") / "report.html"
    lb.report([intercept, bounce_slope_fit], path, data=bounce)
    return path


def test_report_is_self_contained(report_file):
    html = report_file.read_text()
    assert "Model comparison (PSIS-LOO)" in html
    assert html.count("Regression Coefficients:") == 2
    assert html.count('class="dataframe priors"') == 2
    # no external assets: every image is inline and decodes as PNG
    assert not re.search(r'(src|href)="(https?:|//|file:)', html)
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == 2 * 4
    assert all(base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n" for data in images)


def test_report_errors(tmp_path):
    with pytest.raises(lb.LmmbayesError, match="one Fit or a non-empty list"):
        lb.report([], tmp_path / "r.html")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_report_in_headless_chromium(report_file, tmp_path):
    profile = tmp_path / "profile"
    url = report_file.as_uri()
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000",
                          "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    total = re.search(r'data-images-total="(\d+)"', dom)
    decoded = re.search(r'data-images-decoded="(\d+)"', dom)
    assert total and decoded, "the report's load script did not run"
    assert int(total.group(1)) == 8 and decoded.group(1) == total.group(1)
    assert dom.count("Regression Coefficients:") == 2 and "elpd_diff" in dom
    ARTEFACTS.mkdir(exist_ok=True)
    shot = ARTEFACTS / "report.png"
    subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--window-size=1280,2000",
                    f"--screenshot={shot}", url], capture_output=True, timeout=120)
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
