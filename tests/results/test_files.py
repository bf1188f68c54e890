"""save() and load(): an exact round trip, prediction without the data frame, clear errors, and
files that cannot make the loader run anything.

The sampled session fit checks draws, summaries and predictions; prior-only
fits (no sampler, no compilation) check a design with a categorical
predictor, a transform, nested and uncorrelated group terms, dropped rows and
a custom prior, and one with ``poly()`` and ``scale()`` whose learnt states
travel as data. Crafted files (a real file unzipped, edited, zipped again)
check that the manifest is a schema, not code: a formula or expression
reaching outside the allow-list, a forbidden Zarr codec or data type, and an
old format are refused before anything is evaluated or read.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pymc as pm
import pytest
import xarray as xr

import lmmbayes as lb
from lmmbayes.priors import distributions
from lmmbayes.results import files
from lmmbayes.results.files import save

PRIOR_ONLY = [lb.prior("normal(0, 1)", class_="b"), lb.prior("normal(0, 1)", class_="Intercept"),
              lb.prior("exponential(1)", class_="sd"), lb.prior("exponential(1)", class_="sigma")]


def rewrite(source: Path, target: Path, *, manifest: Callable[[dict], Any] | None = None,
            entries: dict[str, Callable[[bytes], bytes]] | None = None) -> Path:
    """A copy of a fit file with its manifest and entries edited as given (the manifest stays first)."""
    with zipfile.ZipFile(source) as zf:
        contents = [(info.filename, zf.read(info.filename)) for info in zf.infolist()]
    out = []
    for name, blob in contents:
        if name == "lmmbayes.json" and manifest is not None:
            m = json.loads(blob)
            edited = manifest(m)
            blob = json.dumps(m if edited is None else edited).encode()
        if entries and name in entries:
            blob = entries[name](blob)
        out.append((name, blob))
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as zf:
        for name, blob in out:
            zf.writestr(name, blob)
    return target


def edit_json(fn: Callable[[dict], None]) -> Callable[[bytes], bytes]:
    def apply(blob: bytes) -> bytes:
        meta = json.loads(blob)
        fn(meta)
        return json.dumps(meta).encode()
    return apply


@pytest.fixture(scope="module")
def saved(bounce_slope_fit, tmp_path_factory):
    path = tmp_path_factory.mktemp("files") / "slope.lmmb"
    bounce_slope_fit.save(path)
    return path, lb.load(path)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    lb.register_distribution("persist_laplace", lambda name, mu, b, **kw: pm.Laplace(name, mu, b, **kw),
                             n_args=2)
    rng = np.random.default_rng(8)
    n = 120
    data = pd.DataFrame({
        "y": rng.normal(size=n), "x": rng.normal(size=n),
        "cat": pd.Categorical(rng.choice(["lo", "mid", "hi"], n)), "flag": rng.choice([True, False], n),
        "g": rng.choice([3, 10, 200], n), "site": rng.choice(["N", "S"], n), "plot": rng.choice(["p_1", "p2"], n),
    }, index=[f"row{i}" for i in range(n)])
    data.loc["row5", "x"] = np.nan  # dropped when fitting
    priors = [lb.prior("persist_laplace(0, 1)", class_="b"), lb.prior("normal(0, 1)", class_="Intercept"),
              lb.prior("exponential(1)", class_="sd"), lb.prior("exponential(1)", class_="sigma")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lb.LmmbayesWarning)
        fit = lb.fit("y ~ x * cat + scale(x) + flag + (1 + x || g) + (1 | site/plot)", data, priors,
                     sample_prior="only", draws=200, seed=3)
    path = tmp_path_factory.mktemp("files") / "mixed.lmmb"
    fit.save(path)
    return fit, data, path


@pytest.fixture(scope="module")
def stateful(tmp_path_factory):
    """poly() and scale(): transforms whose learnt states (coefficients, centre, spread) are stored as data."""
    rng = np.random.default_rng(21)
    n = 90
    data = pd.DataFrame({"y": rng.normal(size=n), "x": rng.normal(3.0, 2.0, size=n), "z": rng.gamma(2.0, 5.0, n),
                         "g": rng.choice(["a", "b", "c", "d"], n)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lb.LmmbayesWarning)
        fit = lb.fit("y ~ poly(x, 2) + scale(z) + (1 | g)", data, PRIOR_ONLY, sample_prior="only", draws=150,
                     seed=6)
    path = tmp_path_factory.mktemp("files") / "stateful.lmmb"
    fit.save(path)
    return fit, data, path


def test_round_trip_is_exact(bounce_slope_fit, saved):
    _, fit = saved
    xr.testing.assert_identical(fit.idata, bounce_slope_fit.idata)  # every group, coordinate and attribute
    for name, var in bounce_slope_fit.posterior.data_vars.items():
        assert np.array_equal(fit.posterior[name].values, var.values)  # bit for bit
    assert np.array_equal(fit.draws().to_numpy(), bounce_slope_fit.draws().to_numpy())
    assert str(fit.summary()) == str(bounce_slope_fit.summary())
    pd.testing.assert_frame_equal(fit.posterior_summary(), bounce_slope_fit.posterior_summary())
    pd.testing.assert_frame_equal(fit.prior_summary(), bounce_slope_fit.prior_summary())
    for table in ("ranef", "coef"):
        got, want = getattr(fit, table)(), getattr(bounce_slope_fit, table)()
        for key in want:
            pd.testing.assert_frame_equal(got[key], want[key])
    assert (fit.config, fit.engine, fit.family, fit.timings) == (
        bounce_slope_fit.config, bounce_slope_fit.engine, bounce_slope_fit.family, bounce_slope_fit.timings)
    assert fit.priors.get("sd", "Intercept", "county").dist == "normal(0, 10)"
    assert isinstance(fit, lb.Fit) and fit.formula == bounce_slope_fit.formula
    assert fit.design.stats.fingerprint == bounce_slope_fit.design.stats.fingerprint


def test_load_issues_no_warnings(saved):
    path, _ = saved
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lb.load(path)


def test_prediction_after_load_needs_no_data(bounce_slope_fit, saved):
    _, fit = saved
    new = pd.DataFrame({"std_age": [0.2, -0.4, 1.0], "county": ["kent", "shropshire", "devon"]})
    for how in ("uncertainty", "gaussian"):
        a = bounce_slope_fit.posterior_predict(new, allow_new_levels=True, sample_new_levels=how, seed=4)
        b = fit.posterior_predict(new, allow_new_levels=True, sample_new_levels=how, seed=4)
        assert np.array_equal(a, b)
    assert np.array_equal(fit.posterior_epred(), bounce_slope_fit.posterior_epred())
    assert np.array_equal(fit.log_lik(), bounce_slope_fit.log_lik())
    # the loaded fit compares with the original: the same data by its fingerprint
    table = lb.loo_compare({"saved": fit, "original": bounce_slope_fit})
    assert list(table["elpd_diff"]) == [0.0, 0.0]


def test_mixed_design_round_trip(mixed, tmp_path):
    fit, data, path = mixed
    distributions._CUSTOM.pop("persist_laplace", None)  # a fresh session: the custom prior is not registered
    loaded = lb.load(path)
    xr.testing.assert_identical(loaded.idata, fit.idata)
    assert str(loaded.summary()) == str(fit.summary())
    pd.testing.assert_frame_equal(loaded.prior_summary(), fit.prior_summary())
    assert loaded.prior_only and loaded.dropped_rows == ("row5",) and loaded.nobs == 119
    # the stateful transform, interaction, categorical coding and nested levels come back
    rows = data.drop(index="row5").iloc[[0, 3, 50]]
    np.testing.assert_array_equal(loaded.posterior_epred(rows), fit.posterior_epred(rows))
    np.testing.assert_array_equal(loaded.posterior_epred(rows), fit.posterior_epred()[:, [0, 3, 50]])
    new = rows.assign(plot="p9", g=11)
    np.testing.assert_array_equal(loaded.posterior_predict(new, allow_new_levels=True, seed=2),
                                  fit.posterior_predict(new, allow_new_levels=True, seed=2))
    with pytest.raises(lb.DataError, match=r"column 'cat' has level\(s\) \['top'\].*levels seen in training"):
        loaded.posterior_epred(rows.assign(cat="top"))
    with pytest.raises(lb.LmmbayesError, match="persist_laplace.*register"):
        loaded.priors.get("b", "x").family.factory("b", 0, 1)
    # saving a loaded fit gives the same content again
    again = tmp_path / "again.lmmb"
    loaded.save(again)
    xr.testing.assert_identical(lb.load(again).idata, fit.idata)


def test_transform_states_are_stored_as_data(stateful, tmp_path):
    fit, data, path = stateful
    loaded = lb.load(path)
    assert loaded.design.encoder.states == fit.design.encoder.states
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("lmmbayes.json"))
    states = dict((key, body) for key, body in manifest["encoder"]["states"])
    assert set(states) == {"poly(x, 2)", "scale(z)"}
    scale = dict(states["scale(z)"]["params"])
    assert scale["mean"] == pytest.approx(data["z"].mean(), rel=1e-15)
    assert scale["sd"] == pytest.approx(data["z"].std(ddof=1), rel=1e-15)
    assert all(isinstance(v, (int, float, bool, list)) for _, v in states["poly(x, 2)"]["params"])
    # new data: one row alone and values outside the training range, predicted as the original fit does
    new = pd.DataFrame({"x": [3.1, -20.0, 50.0], "z": [0.5, 10.0, 200.0], "g": ["b", "a", "d"]})
    for frame in (new, new.iloc[[1]], data.iloc[[4, 8]]):
        np.testing.assert_array_equal(loaded.posterior_epred(frame), fit.posterior_epred(frame))
        np.testing.assert_array_equal(loaded.posterior_predict(frame, seed=3), fit.posterior_predict(frame, seed=3))
    np.testing.assert_allclose(loaded.posterior_linpred(data.iloc[[4, 8]]), fit.posterior_linpred()[:, [4, 8]],
                               rtol=1e-12)
    # the loaded states are used, not relearnt: a file with another centre predicts otherwise
    def shift_centre(m: dict) -> None:
        for key, body in m["encoder"]["states"]:
            if key == "scale(z)":
                body["params"] = [[k, v + 1.0 if k == "mean" else v] for k, v in body["params"]]
    moved = lb.load(rewrite(path, tmp_path / "moved.lmmb", manifest=shift_centre))
    b = fit.posterior["b"].sel(coef="scalez").values.reshape(-1, 1)
    np.testing.assert_allclose(moved.posterior_linpred(new) - loaded.posterior_linpred(new),
                               np.broadcast_to(-b / dict(states["scale(z)"]["params"])["sd"], (b.size, 3)),
                               rtol=1e-9, atol=1e-12)


def test_file_is_one_self_contained_archive(saved):
    path, _ = saved
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    assert names[0] == "lmmbayes.json"
    assert "zarr.json" in names and "posterior/b/zarr.json" in names and "design/X/zarr.json" in names
    assert all(n.split("/")[0] in ("zarr.json", "posterior", "sample_stats", "observed_data", "design")
               for n in names[1:])
    assert not any(n.endswith((".npy", ".pkl", ".pickle")) for n in names)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left behind


def test_bad_files_are_clear_errors(saved, tmp_path):
    path, _ = saved
    blob = path.read_bytes()
    cases = {}
    for cut in (100, 5000, len(blob) // 2, len(blob) - 1):
        cases[f"cut{cut}"] = (blob[:cut], "truncated or corrupted")
    for where in (len(blob) // 3, len(blob) // 2, 2 * len(blob) // 3):
        flipped = bytearray(blob)
        flipped[where] ^= 0xFF
        cases[f"flipped{where}"] = (bytes(flipped), "truncated or corrupted|not a valid lmmbayes fit file")
    cases["csv"] = (b"a,b\n1,2\n", "not an lmmbayes fit file")
    cases["empty"] = (b"", "is empty")
    for name, (content, needle) in cases.items():
        target = tmp_path / f"{name}.lmmb"
        target.write_bytes(content)
        with pytest.raises(lb.FitFileError, match=needle):
            lb.load(target)
    foreign_zip = tmp_path / "foreign.zip"
    with zipfile.ZipFile(foreign_zip, "w") as zf:
        zf.writestr("data.csv", "a,b\n1,2\n")
    newer = tmp_path / "newer.lmmb"
    with zipfile.ZipFile(newer, "w") as zf:
        zf.writestr("lmmbayes.json", '{"format": "lmmbayes.Fit", "version": 99}')
    for target, needle in [(foreign_zip, "zip archive but not an lmmbayes fit file"),
                           (newer, "format 99.*Upgrade lmmbayes"),
                           (tmp_path / "missing.lmmb", "does not exist"),
                           (tmp_path, "is a directory")]:
        with pytest.raises(lb.FitFileError, match=needle):
            lb.load(target)


@pytest.mark.parametrize("path", [None, 123, b"fit.lmmb", "", ["fit.lmmb"]])
def test_load_needs_a_path(path):
    with pytest.raises(lb.FitFileError, match="needs the path of a fit file"):
        lb.load(path)


def test_format_1_files_are_refused_with_advice(tmp_path):
    old = tmp_path / "old.lmmb"
    with zipfile.ZipFile(old, "w") as zf:
        zf.writestr("lmmbayes.json", json.dumps({"format": "lmmbayes.Fit", "version": 1, "lmmbayes_version": "0.1.0",
                                                  "formula": "y ~ x", "arrays": ["b.npy"]}))
        zf.writestr("b.npy", b"\x93NUMPY")
    with pytest.raises(lb.FitFileError, match=r"format 1.*Refit the model and save it again"):
        lb.load(old)
    assert issubclass(lb.FitFileError, lb.FitError) and issubclass(lb.FitFileError, lb.LmmbayesError)


def test_a_formula_with_code_is_refused_and_never_run(saved, tmp_path, monkeypatch):
    path, _ = saved
    monkeypatch.chdir(tmp_path)
    for k, formula in enumerate(["y ~ 1 + I(x + 0*os.system('touch SENTINEL'))",
                                 "bounce_time ~ std_age + (1 + std_age | county) + os.system('touch SENTINEL')",
                                 "bounce_time ~ std_age + (1 + std_age | county) + eval('open(\"SENTINEL\", \"w\")')"]):
        crafted = rewrite(path, tmp_path / f"crafted{k}.lmmb", manifest=lambda m: {**m, "formula": formula})
        with pytest.raises(lb.FitFileError, match="cannot be loaded"):
            lb.load(crafted)
        assert not (tmp_path / "SENTINEL").exists()


def test_a_stored_expression_outside_the_allow_list_is_refused(saved, tmp_path):
    path, _ = saved

    def evil_component(m: dict) -> None:
        m["encoder"]["components"][0]["expr"] = {"call": "eval", "args": [{"lit": "__import__('os')"}],
                                                 "kwargs": []}

    with pytest.raises(lb.FitFileError, match="function 'eval' is not in the allow-list"):
        lb.load(rewrite(path, tmp_path / "evil.lmmb", manifest=evil_component))

    def other_component(m: dict) -> None:  # allow-listed, but not what the formula says
        m["encoder"]["components"][0]["expr"] = {"call": "log", "args": [{"col": "std_age"}], "kwargs": []}

    with pytest.raises(lb.FitFileError, match="does not match the stored formula"):
        lb.load(rewrite(path, tmp_path / "other.lmmb", manifest=other_component))

    def evil_state(m: dict) -> None:
        m["encoder"]["states"] = [["scale(std_age)", {"fn": "system", "params": []}]]

    with pytest.raises(lb.FitFileError, match="unknown transform 'system'"):
        lb.load(rewrite(path, tmp_path / "state.lmmb", manifest=evil_state))


@pytest.mark.parametrize(("entry", "edit", "needle"), [
    ("posterior/b/zarr.json", lambda meta: meta["codecs"].append({"name": "pickle"}), "codec 'pickle' is not allowed"),
    ("posterior/b/zarr.json", lambda meta: meta.update(data_type="object"), "data type 'object' is not allowed"),
    ("design/y/zarr.json", lambda meta: meta.update(data_type={"name": "object"}), "data type 'object'"),
    ("posterior/b/zarr.json", lambda meta: meta.update(storage_transformers=[{"name": "x"}]), "storage transformers"),
    ("posterior/zarr.json", lambda meta: meta.update(consolidated_metadata={"kind": "inline", "metadata": {}}),
     "consolidated metadata"),
    ("posterior/b/zarr.json", lambda meta: meta.update(shape=[10**7, 10**6, 8]), "implausibly many"),
])
def test_forbidden_zarr_metadata_is_refused_before_anything_is_read(saved, tmp_path, monkeypatch, entry, edit,
                                                                    needle):
    path, _ = saved
    crafted = rewrite(path, tmp_path / "crafted.lmmb", entries={entry: edit_json(edit)})
    opened = []
    real = files._open_tree
    monkeypatch.setattr(files, "_open_tree", lambda source: opened.append(source) or real(source))
    with pytest.raises(lb.FitFileError, match=needle):
        lb.load(crafted)
    assert opened == []  # xarray never saw the store


def test_a_manifest_out_of_schema_is_refused(saved, tmp_path):
    path, _ = saved
    edits = {
        "extra key": (lambda m: {**m, "code": "print(1)"}, "the manifest has keys"),
        "levels": (lambda m: m["encoder"]["factors"][0].update(levels=[{"values": [{"x": 1}], "kind": "str"}]),
                   "level values malformed"),
        "engine": (lambda m: {**m, "engine": "exec"}, "unknown engine 'exec'"),
        "family": (lambda m: {**m, "family": {"name": "os.system", "link": "identity"}}, "cannot be loaded"),
        "draws": (lambda m: m["config"].update(draws="1000"), "sampler counts are not integers"),
        "predictor kind": (lambda m: m["design"]["predictors"][0].update(kind="code"), "unknown predictor kind"),
        "predictor name": (lambda m: m["design"]["predictors"][0].update(name="os"),
                           "predictor summaries do not match the formula"),
        "predictor summary": (lambda m: m["design"]["predictors"][0].update(summary=[1.0, 1.0, 2.0, 0.0]),
                              "inconsistent"),
        "predictor levels": (lambda m: m["design"]["predictors"][0].update(summary=None, kind="categorical",
                                                                           levels={"values": [1], "kind": "str"}),
                             "level values malformed"),
        "predictor extra": (lambda m: m["design"]["predictors"][0].update(code="x"), "a predictor summary has keys"),
    }
    for name, (edit, needle) in edits.items():
        with pytest.raises(lb.FitFileError, match=needle):
            lb.load(rewrite(path, tmp_path / f"{name}.lmmb", manifest=edit))


def test_files_without_predictor_summaries_load_and_say_so(saved, tmp_path):
    """Format-2 files written before the summaries (and the raw columns) were stored still load."""
    path, fit = saved

    def drop(m: dict) -> None:
        del m["design"]["predictors"]

    old = lb.load(rewrite(path, tmp_path / "old.lmmb", manifest=drop))
    np.testing.assert_array_equal(old.posterior_epred(), fit.posterior_epred())
    with pytest.raises(lb.FitError, match="older lmmbayes. Refit"):
        old.conditional_effects()
    assert fit.design.predictors.names == ("std_age",) and fit.design.predictors.get("std_age").numeric
    assert list(fit.design.predictor_rows.columns) == ["std_age", "county"]


def test_files_without_the_normal_scale_jacobian_load(saved, tmp_path):
    """Files written before ``log_jacobian`` was stored (a Gaussian fit's is 0) load with it 0; a bad one is refused."""
    path, fit = saved

    def drop(m: dict) -> None:
        del m["design"]["stats"]["log_jacobian"]

    old = lb.load(rewrite(path, tmp_path / "old.lmmb", manifest=drop))
    assert old.design.stats.log_jacobian == 0.0 == fit.design.stats.log_jacobian
    with pytest.raises(lb.FitFileError, match="log_jacobian is not a number"):
        lb.load(rewrite(path, tmp_path / "bad.lmmb", manifest=lambda m: m["design"]["stats"].update(log_jacobian="x")))


def test_save_errors(bounce_slope_fit, tmp_path):
    with pytest.raises(lb.FitFileError, match="Could not write"):
        bounce_slope_fit.save(tmp_path / "no" / "such" / "dir" / "fit.lmmb")
    assert not (tmp_path / "no").exists()
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(lb.FitFileError, match="Could not write"):
        bounce_slope_fit.save(blocker / "fit.lmmb")
    with pytest.raises(lb.FitFileError, match="needs an lmmbayes Fit"):
        save("not a fit", tmp_path / "x.lmmb")
    with pytest.raises(lb.FitFileError, match="needs a file path"):
        bounce_slope_fit.save(None)
    assert issubclass(lb.FitFileError, lb.LmmbayesError)
    assert sorted(os.listdir(tmp_path)) == ["a_file"]  # nothing half-written left behind
