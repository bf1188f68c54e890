"""save() and load(): exact round trip, prediction without the data, clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import lmmbayes as lb


@pytest.fixture(scope="module")
def restored(bounce_slope_fit, tmp_path_factory):
    path = tmp_path_factory.mktemp("persist") / "fit.lmmb"
    bounce_slope_fit.save(path)
    return path, lb.load(path)


def test_round_trip_is_exact(bounce_slope_fit, restored):
    _, fit = restored
    assert np.array_equal(bounce_slope_fit.draws().to_numpy(), fit.draws().to_numpy())
    assert str(fit.summary()) == str(bounce_slope_fit.summary())
    pd.testing.assert_frame_equal(fit.prior_summary(), bounce_slope_fit.prior_summary())
    assert fit.config == bounce_slope_fit.config and fit.engine == bounce_slope_fit.engine
    assert set(fit.idata.children) == set(bounce_slope_fit.idata.children)


def test_prediction_after_load_needs_no_data(bounce_slope_fit, restored):
    _, fit = restored
    new = pd.DataFrame({"std_age": [0.2, -0.4], "county": ["kent", "shropshire"]})
    a = bounce_slope_fit.posterior_predict(new, allow_new_levels=True, seed=4)
    b = fit.posterior_predict(new, allow_new_levels=True, seed=4)
    assert np.array_equal(a, b)


def test_bad_files(restored, tmp_path):
    path, _ = restored
    truncated = tmp_path / "truncated.lmmb"
    truncated.write_bytes(path.read_bytes()[:4000])
    foreign = tmp_path / "foreign.lmmb"
    foreign.write_text("a,b\n1,2\n")
    for target, needle in [(truncated, "truncated or corrupted"), (foreign, "not an lmmbayes fit"),
                           (tmp_path / "missing.lmmb", "Could not read")]:
        with pytest.raises(lb.FitError, match=needle):
            lb.load(target)
