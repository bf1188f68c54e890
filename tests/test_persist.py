"""save() and load(): an exact round trip, prediction without the data frame, clear errors.

The sampled session fit checks draws, summaries and predictions; a prior-only
fit (no sampler, no compilation) checks a design with a categorical predictor,
a transform, nested and uncorrelated group terms, dropped rows and a custom prior.
"""

from __future__ import annotations

import warnings
import zipfile

import numpy as np
import pandas as pd
import pymc as pm
import pytest
import xarray as xr

import lmmbayes as lb
from lmmbayes.persist import FitFileError, save


@pytest.fixture(scope="module")
def saved(bounce_slope_fit, tmp_path_factory):
    path = tmp_path_factory.mktemp("persist") / "slope.lmmb"
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
    path = tmp_path_factory.mktemp("persist") / "mixed.lmmb"
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


def test_prediction_after_load_needs_no_data(bounce_slope_fit, saved):
    _, fit = saved
    new = pd.DataFrame({"std_age": [0.2, -0.4, 1.0], "county": ["kent", "shropshire", "devon"]})
    for how in ("uncertainty", "gaussian"):
        a = bounce_slope_fit.posterior_predict(new, allow_new_levels=True, sample_new_levels=how, seed=4)
        b = fit.posterior_predict(new, allow_new_levels=True, sample_new_levels=how, seed=4)
        assert np.array_equal(a, b)
    assert np.array_equal(fit.posterior_epred(), bounce_slope_fit.posterior_epred())
    assert np.array_equal(fit.log_lik(), bounce_slope_fit.log_lik())


def test_mixed_design_round_trip(mixed, tmp_path):
    fit, data, path = mixed
    lb.distributions._CUSTOM.pop("persist_laplace", None)  # a fresh session: the custom prior is not registered
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
    with pytest.raises(lb.DataError, match=r"column 'cat' has level\(s\) \(top\).*levels seen in training"):
        loaded.posterior_epred(rows.assign(cat="top"))
    with pytest.raises(lb.LmmbayesError, match="persist_laplace.*register"):
        loaded.priors.get("b", "x").family.factory("b", 0, 1)
    # saving a loaded fit gives the same content again
    again = tmp_path / "again.lmmb"
    loaded.save(again)
    xr.testing.assert_identical(lb.load(again).idata, fit.idata)


def test_file_is_one_self_contained_archive(saved):
    path, _ = saved
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    assert names[0] == "lmmbayes.json" and all(n.endswith(".npy") for n in names[1:])
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left behind


def test_bad_files_are_clear_errors(saved, tmp_path):
    path, _ = saved
    blob = path.read_bytes()
    cases = {}
    for cut in (100, 5000, len(blob) // 2, len(blob) - 1):
        cases[f"cut{cut}"] = (blob[:cut], "truncated or corrupted")
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 0xFF
    cases["flipped"] = (bytes(flipped), "truncated or corrupted")
    cases["csv"] = (b"a,b\n1,2\n", "not an lmmbayes fit file")
    cases["empty"] = (b"", "is empty")
    for name, (content, needle) in cases.items():
        target = tmp_path / f"{name}.lmmb"
        target.write_bytes(content)
        with pytest.raises(FitFileError, match=needle):
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
        with pytest.raises(lb.LmmbayesError, match=needle):
            lb.load(target)


def test_save_errors(bounce_slope_fit, tmp_path):
    with pytest.raises(FitFileError, match="Could not write"):
        bounce_slope_fit.save(tmp_path / "no" / "such" / "dir" / "fit.lmmb")
    with pytest.raises(FitFileError, match="needs an lmmbayes Fit"):
        save("not a fit", tmp_path / "x.lmmb")
    assert issubclass(FitFileError, lb.LmmbayesError)
