"""brms's conditional_effects: tables against hand computations from posterior_epred, brms's defaults and labels."""

from __future__ import annotations

import warnings

import matplotlib
import numpy as np
import pandas as pd
import pytest

import lmmbayes as lb
from lmmbayes.design import build_design
from lmmbayes.families import Gaussian, family
from lmmbayes.spec import parse_formula
from lmmbayes.workflow import effects as eff

matplotlib.use("Agg")

FORMULA = "y ~ x * cat + z + trt + (1 | g)"


def robust(draws: np.ndarray, prob: float = 0.95) -> dict[str, np.ndarray]:
    med = np.median(draws, axis=0)
    lo, hi = np.quantile(draws, [(1 - prob) / 2, (1 + prob) / 2], axis=0)
    return {"estimate__": med, "se__": 1.4826 * np.median(np.abs(draws - med), axis=0), "lower__": lo,
            "upper__": hi}


def assert_summaries(table: pd.DataFrame, draws: np.ndarray, prob: float = 0.95) -> None:
    for name, values in robust(draws, prob).items():
        np.testing.assert_allclose(table[name].to_numpy(), values, rtol=1e-12, atol=1e-12, err_msg=name)


def test_numeric_effect_is_the_hand_computed_grid(effects_fit, effects_data):
    d = effects_data
    ce = effects_fit.conditional_effects("x", resolution=7, prob=0.9)
    table = ce["x"]
    grid = pd.DataFrame({"x": np.linspace(d.x.min(), d.x.max(), 7), "cat": "a", "z": d.z.mean(), "trt": "C"})
    draws = effects_fit.posterior_epred(grid, include_groups=False)
    assert_summaries(table, draws, 0.9)
    assert list(table.columns) == ["x", "cat", "z", "trt", "cond__", "effect1__", "estimate__", "se__", "lower__",
                                   "upper__"]
    np.testing.assert_allclose(table["x"], grid["x"])
    np.testing.assert_allclose(table["effect1__"], grid["x"])
    assert (table["z"] == d.z.mean()).all() and (table["cat"] == "a").all() and (table["trt"] == "C").all()
    assert list(table["cond__"].astype(str)) == ["1"] * 7


def test_defaults_main_effects_then_interactions_at_means_and_reference_levels(effects_fit, effects_data):
    ce = effects_fit.conditional_effects()
    assert list(ce) == ["x", "cat", "z", "trt", "x:cat"] and len(ce) == 5
    assert len(ce["x"]) == 100 and len(ce["z"]) == 100
    cat = ce["cat"]
    assert list(cat["cat"]) == ["a", "b", "c"] and list(cat["cat"].cat.categories) == ["a", "b", "c"]
    assert np.allclose(cat["x"], effects_data.x.mean()) and (cat["trt"] == "C").all()
    grid = pd.DataFrame({"x": effects_data.x.mean(), "cat": ["a", "b", "c"], "z": effects_data.z.mean(),
                         "trt": "C"})
    assert_summaries(cat, effects_fit.posterior_epred(grid, include_groups=False))


def test_interactions_use_brms_values_and_labels(effects_fit, effects_data):
    d = effects_data
    ce = effects_fit.conditional_effects(["x:cat", "x:z", "cat:x"], resolution=4)
    xc = ce["x:cat"]
    assert len(xc) == 12 and list(xc["effect2__"].cat.categories) == ["a", "b", "c"]
    assert list(xc["cat"][:3]) == ["a", "b", "c"]  # sorted by the first effect, then the second
    # a numeric second effect: mean - SD, mean, mean + SD (R's sd), labelled rounded, largest first
    xz = ce["x:z"]
    values = d.z.mean() + np.array([-1, 0, 1]) * d.z.std(ddof=1)
    np.testing.assert_allclose(xz["z"][:3], values)
    labels = [f"{round(v, 2):.15g}" for v in values]
    assert list(xz["effect2__"].cat.categories) == labels[::-1]
    assert list(xz["effect2__"][:3]) == labels
    grid = xz[["x", "cat", "z", "trt"]]
    assert_summaries(xz, effects_fit.posterior_epred(grid, include_groups=False))
    # a categorical first effect with a numeric second one, as the user ordered them
    cx = ce["cat:x"]
    assert list(cx["effect1__"][:3]) == ["a", "a", "a"] and len(cx) == 9


def test_conditions_are_facets_and_groups_come_from_them(effects_fit, effects_data):
    cond = pd.DataFrame({"z": [-1.0, 1.0], "trt": ["T", "C"]})
    before = cond.copy()
    ce = effects_fit.conditional_effects("cat", conditions=cond)
    pd.testing.assert_frame_equal(cond, before)  # the user's frame is untouched
    t = ce["cat"]
    assert list(t["cond__"].astype(str)) == ["1"] * 3 + ["2"] * 3
    assert list(t["z"]) == [-1.0] * 3 + [1.0] * 3 and list(t["trt"]) == ["T"] * 3 + ["C"] * 3
    labelled = effects_fit.conditional_effects("cat", conditions=cond.assign(cond__=["low", "high"]))
    assert list(labelled["cat"]["cond__"].cat.categories) == ["low", "high"]
    # no grouping column given: a new level, as brms's NA (its effects simulated per draw)
    new = effects_fit.conditional_effects("cat", include_groups=True, seed=5)["cat"]
    assert new["g"].nunique() == 1 and new["g"].iloc[0] not in set(effects_data["g"])
    grid = new[["x", "cat", "z", "trt"]].assign(g="elsewhere")
    assert_summaries(new, effects_fit.posterior_epred(grid, allow_new_levels=True, seed=5))
    population = effects_fit.conditional_effects("cat")["cat"]
    assert ((new["upper__"] - new["lower__"]) > (population["upper__"] - population["lower__"])).all()
    with_g = effects_fit.conditional_effects("cat", conditions=pd.DataFrame({"g": ["g03"]}), include_groups=True)
    grid = with_g["cat"][["x", "cat", "z", "trt", "g"]]
    assert_summaries(with_g["cat"], effects_fit.posterior_epred(grid))


def test_save_and_load_give_identical_tables(effects_fit, tmp_path):
    loaded = lb.load(effects_fit.save(tmp_path / "effects.lmmb"))
    assert loaded.design.predictors == effects_fit.design.predictors
    for name in ("x", "x:cat", "trt"):
        pd.testing.assert_frame_equal(loaded.conditional_effects(name, resolution=9)[name],
                                      effects_fit.conditional_effects(name, resolution=9)[name])


def test_poisson_effects_are_on_the_response_scale(poisson_effects_fit):
    fit = poisson_effects_fit
    pr = fit.design.predictors
    ce = fit.conditional_effects("x", resolution=11)
    grid = pd.DataFrame({"x": np.linspace(pr.get("x").min, pr.get("x").max, 11), "cat": "a"})
    eta = fit.posterior_linpred(grid, include_groups=False)
    assert_summaries(ce["x"], np.exp(eta))
    assert (ce["x"]["lower__"] > 0).all()
    assert_summaries(fit.conditional_effects("x", resolution=11, method="posterior_linpred")["x"], eta)
    predicted = fit.conditional_effects("cat", method="posterior_predict", seed=3)["cat"]
    assert np.all(predicted["estimate__"] == np.round(predicted["estimate__"]))  # medians of counts


@pytest.mark.parametrize(("kwargs", "error", "needle"), [
    ({"effects": "nope"}, lb.DataError, r"no predictor 'nope'; its predictors are \['x', 'cat', 'z', 'trt'\]"),
    ({"effects": "g"}, lb.DataError, "grouping factor's column"),
    ({"effects": "x:cat:z"}, lb.DataError, "more than two variables"),
    ({"effects": "x:x"}, lb.DataError, "twice"),
    ({"effects": 3}, lb.DataError, "effects must be"),
    ({"method": "predict"}, lb.LmmbayesError, r"method 'predict'; choose one of \['posterior_epred'"),
    ({"prob": 1.5}, lb.LmmbayesError, "prob must be"),
    ({"resolution": 1}, lb.LmmbayesError, "resolution must be"),
    ({"conditions": pd.DataFrame({"w": [1]})}, lb.DataError, r"column\(s\) \['w'\] that the model does not use"),
    ({"conditions": pd.DataFrame({"z": [1.0, 2.0], "cond__": ["a", "a"]})}, lb.DataError, "unique"),
    ({"include_groups": ["h"]}, lb.LmmbayesError, "unknown grouping factor"),
])
def test_bad_arguments_are_clear_errors(effects_fit, kwargs, error, needle):
    with pytest.raises(error, match=needle):
        effects_fit.conditional_effects(**kwargs)


def test_categorical_response_is_refused_by_factor_like_and_ndim(effects_fit, monkeypatch):
    monkeypatch.setattr(Gaussian, "factor_like", True)
    effects_fit.conditional_effects("cat")  # factor-like with (draws, rows) predictions (bernoulli): fine
    real = eff.posterior_epred
    monkeypatch.setattr(eff, "posterior_epred", lambda *a, **k: np.stack([real(*a, **k)] * 3, axis=-1))
    with pytest.raises(lb.LmmbayesError, match="categorical response .* pass categorical=True"):
        effects_fit.conditional_effects("cat")
    # categorical=True: the grid once per category, each summarised on its own (no labels: 1..K)
    ce = effects_fit.conditional_effects("cat", categorical=True)
    t = ce["cat"]
    assert list(t["cats__"].astype(str)) == ["1"] * 3 + ["2"] * 3 + ["3"] * 3
    assert (t["effect2__"].astype(str) == t["cats__"].astype(str)).all() and ce.effects["cat"] == ("cat", "cats__")
    np.testing.assert_allclose(t["estimate__"].to_numpy().reshape(3, 3), np.tile(t["estimate__"][:3], (3, 1)))
    with pytest.raises(lb.DataError, match="Interactions cannot be shown directly"):
        effects_fit.conditional_effects("x:cat", categorical=True)
    with pytest.raises(lb.LmmbayesError, match="method='posterior_epred'"):
        effects_fit.conditional_effects("cat", categorical=True, method="posterior_predict")


def test_categorical_is_refused_for_a_numeric_response(effects_fit):
    with pytest.raises(lb.LmmbayesError, match="categorical=True is for categorical and ordinal responses"):
        effects_fit.conditional_effects("cat", categorical=True)


def test_plot_lines_ribbons_points_and_facets(effects_fit):
    ce = effects_fit.conditional_effects(["x", "cat", "x:cat"], resolution=10,
                                         conditions=pd.DataFrame({"z": [-1.0, 0.0, 1.0, 2.0]}))
    figs = ce.plot()
    assert set(figs) == {"x", "cat", "x:cat"}
    axes = [ax for ax in figs["x"].axes if ax.get_visible()]
    assert len(axes) == 4 and [ax.get_title() for ax in axes] == ["1", "2", "3", "4"]
    assert all(len(ax.lines) == 1 and len(ax.collections) == 1 for ax in axes)  # a line and its ribbon
    inter = [ax for ax in figs["x:cat"].axes if ax.get_visible()][0]
    assert len(inter.lines) == 3 and len(inter.collections) == 3
    assert [t.get_text() for t in inter.get_legend().get_texts()] == ["a", "b", "c"]
    cat = [ax for ax in figs["cat"].axes if ax.get_visible()][0]
    assert len(cat.containers) == 1 and len(cat.containers[0].lines[0].get_xdata()) == 3  # points with error bars
    assert [t.get_text() for t in cat.get_xticklabels()] == ["a", "b", "c"]
    import matplotlib.pyplot as plt

    plt.close("all")


def test_effect_names_are_data_never_code(effects_fit, tmp_path):
    sentinel = tmp_path / "S"
    for text in (f"__import__('os').system('touch {sentinel}')", f"x:os.system('touch {sentinel}')",
                 f"open('{sentinel}', 'w')"):
        with pytest.raises(lb.DataError):
            effects_fit.conditional_effects(text)
        with pytest.raises(lb.DataError):
            effects_fit.conditional_effects("x", conditions=pd.DataFrame({text: [1.0]}))
    assert not sentinel.exists()


def test_dask_designs_remember_the_same_predictors(effects_data):
    dd = pytest.importorskip("dask.dataframe")
    spec = parse_formula("y ~ x * cat + z + C(k) + (1 + z | g)")
    df = effects_data.assign(k=np.arange(len(effects_data)) % 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lb.DataWarning)
        memory = build_design(spec, family("gaussian"), df)
        from lmmbayes.design.dask import build_dask_design

        dask = build_dask_design(spec, family("gaussian"), dd.from_pandas(df, npartitions=5))
    for a, b in zip(memory.predictors.items, dask.predictors.items):
        assert (a.name, a.kind, a.role, a.levels) == (b.name, b.kind, b.role, b.levels)
        np.testing.assert_allclose([a.mean, a.sd, a.min, a.max], [b.mean, b.sd, b.min, b.max], rtol=1e-12)
    assert memory.predictors.get("k").levels.values == (0, 1, 2)
    assert dask.predictor_rows is None and len(memory.predictor_rows) == len(df)


def test_a_dask_fit_gives_the_same_effects(effects_fit, effects_data):
    dd = pytest.importorskip("dask.dataframe")
    priors = [lb.prior("normal(0, 5)", class_="b"), lb.prior("normal(0, 10)", class_="Intercept")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lb.ConvergenceWarning)
        fit = lb.fit(FORMULA, dd.from_pandas(effects_data, npartitions=3), priors, chains=2, draws=200, tune=200,
                     seed=7, progress=False)
    a, b = fit.conditional_effects("x:cat", resolution=5), effects_fit.conditional_effects("x:cat", resolution=5)
    pd.testing.assert_frame_equal(a["x:cat"], b["x:cat"], rtol=1e-9)
    pd.testing.assert_frame_equal(fit.emmeans("cat").table, effects_fit.emmeans("cat").table, rtol=1e-9)
    with pytest.raises(lb.FitError, match=r"fitted on a Dask DataFrame\); pass newdata="):
        fit.avg_predictions()
