"""The command line: usage errors, model errors, and the commands end to end."""

from __future__ import annotations

import subprocess
import sys

import pytest

import lmmbayes as lb
from lmmbayes.cli import main


@pytest.fixture(scope="module")
def csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "bounce.csv"
    lb.datasets.load_bounce_times().to_csv(path, index=False)
    return path


def run(*args):
    return subprocess.run([sys.executable, "-m", "lmmbayes", *args], capture_output=True, text=True)


def test_get_prior_prints_the_table(csv, capsys):
    assert main(["get-prior", "bounce_time ~ std_age + (1 | county)", str(csv)]) == 0
    out = capsys.readouterr().out
    assert "student_t(3, 202.6, 14.3)" in out and "Intercept" in out and "county" in out


def test_fit_prints_summary_and_saves(csv, tmp_path, capsys):
    out_file = tmp_path / "fit.lmmb"
    code = main(["fit", "bounce_time ~ std_age", str(csv), "--prior", "normal(200, 1)", "--class", "Intercept",
                 "--prior", "normal(0, 5)", "--coef", "std_age", "--chains", "1", "--draws", "100",
                 "--tune", "100", "--seed", "1", "--method", "joint", "--out", str(out_file), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert "Regression Coefficients:" in out and "Formula: bounce_time ~ std_age" in out
    assert out_file.is_file()
    assert main(["summary", str(out_file)]) == 0
    again = capsys.readouterr().out
    assert again.strip() == out.split("\n\nSaved")[0].strip()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([], "COMMAND"),
        (["frobnicate"], "invalid choice"),
        (["fit", "y ~ x"], "required: data"),
        (["fit", "y ~ x", "d.csv", "--chains", "many"], "invalid int value"),
        (["fit", "y ~ x", "d.csv", "--class", "b"], "must follow the --prior"),
    ],
)
def test_usage_errors_exit_2_without_traceback(args, needle):
    result = run(*args)
    assert result.returncode == 2
    assert "usage:" in result.stderr and needle in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["get-prior", "y ~ x", "missing.csv"], "does not exist"),
        (["get-prior", "bounce_time ~ nope", "{csv}"], "'nope'"),
        (["fit", "bounce_time ~ std_age", "{csv}", "--prior", "normal(0, -1)"], "must be > 0"),
        (["fit", "bounce_time ~ std_age", "{csv}", "--chains", "0"], "chains must be a positive integer"),
        (["summary", "{csv}"], "error:"),
    ],
)
def test_model_errors_exit_1_with_one_line(csv, args, needle):
    result = run(*[a.format(csv=csv) for a in args])
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error:") and needle in result.stderr
    assert "Traceback" not in result.stderr
