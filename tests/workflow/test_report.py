"""The HTML report: self-contained, tables as printed, and loaded in a real browser (headless Chromium)."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import warnings
from html.parser import HTMLParser
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pytest
from conftest import TUTORIAL_PRIORS

import lmmbayes as lb

PRIORS = TUTORIAL_PRIORS
FORMULAS = ["bounce_time ~ std_age + (1 | county)", "bounce_time ~ std_age + (1 + std_age | county)"]
#: Figures per model: trace, rank, parallel coordinates, posterior predictive check.
FIGURES = 4
ARTEFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class Tables(HTMLParser):
    """Every ``<table>`` of a page as header rows and body rows of cell texts, keyed by its CSS class."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[dict]] = {}
        self._table = self._row = self._cell = None
        self._section = ""

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            css = attrs.get("class", "").split()[-1]
            self._table = {"head": [], "body": []}
            self.tables.setdefault(css, []).append(self._table)
        elif tag in ("thead", "tbody"):
            self._section = "head" if tag == "thead" else "body"
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table[self._section].append(self._row)
        elif tag in ("th", "td") and self._row is not None:
            self._cell = [tag, ""]
            self._row.append(self._cell)

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        elif tag in ("th", "td"):
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1] += data.strip()


@pytest.fixture(scope="module")
def bounce():
    return lb.datasets.load_bounce_times()


@pytest.fixture(scope="module")
def fits(bounce):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lb.LmmbayesWarning)
        return [lb.fit(f, bounce, PRIORS, chains=2, draws=200, tune=200, seed=11, progress=False) for f in FORMULAS]


@pytest.fixture(scope="module")
def report_file(bounce, fits, tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "report.html"
    assert lb.report(fits, path, data=bounce) == path
    return path


@pytest.fixture(scope="module")
def tables(report_file):
    parser = Tables()
    parser.feed(report_file.read_text())
    return parser.tables


def test_report_is_self_contained(report_file):
    html = report_file.read_text()
    assert "Model comparison (PSIS-LOO)" in html
    assert html.count("Regression Coefficients:") == 2
    assert html.count('class="dataframe priors"') == 2
    assert "Data: 613 rows" in html
    # no external assets: every image is inline and decodes as PNG
    assert not re.search(r'(src|href)="(https?:|//|file:)', html)
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == 2 * FIGURES
    assert all(base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n" for data in images)
    assert "Not shown" not in html


def test_priors_tables_have_no_index_column(tables, fits):
    for table, fit in zip(tables["priors"], fits):
        expected = fit.prior_summary()
        (header,) = table["head"]
        assert [text for _, text in header] == list(expected.columns)
        assert len(table["body"]) == len(expected)
        for row, (_, prior) in zip(table["body"], expected.iterrows()):
            assert [tag for tag, _ in row] == ["td"] * len(expected.columns)  # no <th> of a row label
            assert row[0][1] == prior["prior"]


def test_comparison_table_has_one_header_row_with_the_model_as_a_column(tables, fits):
    (table,) = tables["compare"]
    (header,) = table["head"]  # pandas's index name used to add a second, mostly empty, header row
    texts = [text for _, text in header]
    assert texts[0] == "model" and "elpd_diff" in texts and "" not in texts
    models = [row[0][1] for row in table["body"]]
    assert sorted(models) == [f"model {k}: {f.formula}" for k, f in enumerate(fits, start=1)]
    assert all(tag == "td" for row in table["body"] for tag, _ in row)
    assert table["body"][0][texts.index("elpd_diff")][1] == "0.000"  # best model first


def test_diagnostics_print_ess_as_integers(tables, fits):
    assert len(tables["diagnostics"]) == 2
    for table, fit in zip(tables["diagnostics"], fits):
        (header,) = table["head"]
        texts = [text for _, text in header]
        assert texts == ["parameter", "Rhat", "Bulk_ESS", "Tail_ESS", "MCSE_mean", "MCSE_sd"]
        names = [row[0][1] for row in table["body"]]
        assert names == [n for n in fit.diagnostics().parameters.index if not n.startswith("r_")]
        expected = fit.diagnostics().parameters
        for row in table["body"]:
            for column in ("Bulk_ESS", "Tail_ESS"):
                cell = row[texts.index(column)][1]
                assert re.fullmatch(r"\d+", cell), (row[0][1], column, cell)
                assert int(cell) == round(expected.loc[row[0][1], column])


def test_report_of_one_fit_has_no_comparison(fits, tmp_path):
    path = lb.report(fits[0], tmp_path / "one.html", title="Bounce <times>")
    html = path.read_text()
    assert "Model comparison" not in html
    assert "<h1>Bounce &lt;times&gt;</h1>" in html
    assert html.count("<img") == FIGURES


def test_report_errors(fits, tmp_path):
    with pytest.raises(lb.LmmbayesError, match="one Fit or a non-empty list"):
        lb.report([], tmp_path / "r.html")
    with pytest.raises(lb.LmmbayesError, match="one Fit or a non-empty list"):
        lb.report(["not a fit"], tmp_path / "r.html")
    with pytest.raises(lb.DataError, match="DataFrame"):
        lb.report(fits[0], tmp_path / "r.html", data={"a": [1]})
    with pytest.raises(lb.LmmbayesError, match="could not write"):
        lb.report(fits[0], tmp_path / "missing" / "r.html")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_report_in_headless_chromium(report_file, tmp_path):
    profile = tmp_path / "profile"
    url = report_file.as_uri()
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000",
                          "--dump-dom", url], capture_output=True, text=True, timeout=120, check=False).stdout
    total = re.search(r'data-images-total="(\d+)"', dom)
    decoded = re.search(r'data-images-decoded="(\d+)"', dom)
    assert total and decoded, "the report's load script did not run"
    assert int(total.group(1)) == 2 * FIGURES and decoded.group(1) == total.group(1)
    assert dom.count("Regression Coefficients:") == 2 and "elpd_diff" in dom
    ARTEFACTS.mkdir(exist_ok=True)
    shot = ARTEFACTS / "report.png"
    subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--window-size=1280,2000",
                    f"--screenshot={shot}", url], capture_output=True, timeout=120, check=False)
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
