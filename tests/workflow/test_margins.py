"""marginaleffects's avg_* and emmeans: numbers against hand computations from posterior_epred and the draws of b."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from arviz_stats import hdi

import lmmbayes as lb
from lmmbayes.workflow import margins, predict


def eti(draws: np.ndarray, prob: float = 0.95) -> np.ndarray:
    lo, hi = np.quantile(draws, [(1 - prob) / 2, (1 + prob) / 2], axis=0)
    return np.column_stack([np.median(draws, axis=0), lo, hi])


def check(table: pd.DataFrame, draws: np.ndarray, prob: float = 0.95) -> None:
    np.testing.assert_allclose(table[["estimate", "conf.low", "conf.high"]].to_numpy(), eti(draws, prob),
                               rtol=1e-10, atol=1e-12)


def test_avg_predictions_average_epred_over_rows(effects_fit, effects_data):
    d = effects_data
    epred = effects_fit.posterior_epred(d)
    check(effects_fit.avg_predictions(), epred.mean(axis=1)[:, None])
    by = effects_fit.avg_predictions(by="cat", prob=0.8)
    assert list(by.columns) == ["cat", "estimate", "conf.low", "conf.high"] and list(by["cat"]) == ["a", "b", "c"]
    check(by, np.column_stack([epred[:, (d.cat == c).to_numpy()].mean(axis=1) for c in "abc"]), 0.8)
    new = d.iloc[:30]
    check(effects_fit.avg_predictions(newdata=new, include_groups=False),
          effects_fit.posterior_epred(new, include_groups=False).mean(axis=1)[:, None])
    two = effects_fit.avg_predictions(by=["trt", "cat"])
    assert list(two.columns[:2]) == ["trt", "cat"] and len(two) == 6


def test_avg_comparisons_of_a_factor_and_a_number(effects_fit, effects_data):
    d = effects_data
    before = d.copy()
    table = effects_fit.avg_comparisons(["cat", "x"])
    pd.testing.assert_frame_equal(d, before)  # never modifies the user's data
    assert list(table.columns) == ["term", "contrast", "estimate", "conf.low", "conf.high"]
    assert list(table["contrast"]) == ["b - a", "c - a", "+1"] and list(table["term"]) == ["cat", "cat", "x"]
    lo = effects_fit.posterior_epred(d.assign(cat="a"))
    diffs = [(effects_fit.posterior_epred(d.assign(cat=c)) - lo).mean(axis=1) for c in "bc"]
    step = (effects_fit.posterior_epred(d.assign(x=d.x + 1)) - effects_fit.posterior_epred(d)).mean(axis=1)
    check(table, np.column_stack(diffs + [step]))
    ratio = effects_fit.avg_comparisons("cat", comparison="ratio", by="trt")
    assert list(ratio["contrast"]) == ["mean(b) / mean(a)"] * 2 + ["mean(c) / mean(a)"] * 2
    assert list(ratio.columns) == ["term", "contrast", "trt", "estimate", "conf.low", "conf.high"]
    rows = [(d.trt == t).to_numpy() for t in ("C", "T")]
    want = [effects_fit.posterior_epred(d.assign(cat=c))[:, r].mean(axis=1) / lo[:, r].mean(axis=1)
            for c in "bc" for r in rows]
    check(ratio, np.column_stack(want))


def test_avg_slopes_forward_differences_with_marginaleffects_step(effects_fit, effects_data):
    d = effects_data
    eps = 1e-4 * (d.x.max() - d.x.min())
    table = effects_fit.avg_slopes("x", by="cat")
    assert list(table["contrast"]) == ["dY/dX"] * 3
    base = effects_fit.posterior_epred(d)
    hi = effects_fit.posterior_epred(d.assign(x=d.x + eps))
    check(table, np.column_stack([((hi - base) / eps)[:, (d.cat == c).to_numpy()].mean(axis=1) for c in "abc"]))
    custom = effects_fit.avg_slopes(["x", "trt"], eps=0.5, include_groups=False)
    hi = effects_fit.posterior_epred(d.assign(x=d.x + 0.5), include_groups=False)
    base = effects_fit.posterior_epred(d, include_groups=False)
    trt = effects_fit.posterior_epred(d.assign(trt="T"), include_groups=False) \
        - effects_fit.posterior_epred(d.assign(trt="C"), include_groups=False)
    check(custom, np.column_stack([((hi - base) / 0.5).mean(axis=1), trt.mean(axis=1)]))
    assert list(custom["contrast"]) == ["dY/dX", "T - C"]


def test_averages_are_computed_in_bounded_chunks(effects_fit, monkeypatch):
    whole = effects_fit.avg_comparisons("cat", by="trt")
    calls = []
    real = predict.linear_predictor

    def spy(*args, **kwargs):
        eta = real(*args, **kwargs)
        calls.append(eta.shape[1])
        return eta

    monkeypatch.setattr(margins, "CHUNK_CELLS", 400 * 17)  # 400 draws: 17 rows a chunk
    monkeypatch.setattr(predict, "linear_predictor", spy)
    chunked = effects_fit.avg_comparisons("cat", by="trt")
    assert max(calls) == 17
    pd.testing.assert_frame_equal(chunked, whole, rtol=1e-10)


def test_avg_errors_name_the_argument(effects_fit, effects_data):
    with pytest.raises(lb.DataError, match=r"no predictor 'nope'; its predictors are \['x', 'cat', 'z', 'trt'\]"):
        effects_fit.avg_comparisons("nope")
    with pytest.raises(lb.DataError, match="grouping factor's column"):
        effects_fit.avg_slopes("g")
    with pytest.raises(lb.DataError, match=r"by names column\(s\) \['w'\]"):
        effects_fit.avg_predictions(by="w")
    with pytest.raises(lb.LmmbayesError, match=r"comparison 'lift'; choose one of \['difference', 'ratio'\]"):
        effects_fit.avg_comparisons("x", comparison="lift")
    with pytest.raises(lb.LmmbayesError, match="eps must be a positive"):
        effects_fit.avg_slopes("x", eps=0)
    with pytest.raises(lb.LmmbayesError, match="prob must be"):
        effects_fit.avg_predictions(prob=0)
    without = replace(effects_fit, design=replace(effects_fit.design, predictor_rows=None))  # as a Dask fit
    with pytest.raises(lb.FitError, match="pass newdata="):
        without.avg_predictions()
    check(without.avg_predictions(newdata=effects_data), effects_fit.posterior_epred(effects_data).mean(1)[:, None])


def test_loaded_fits_average_over_the_same_rows(effects_fit, tmp_path):
    loaded = lb.load(effects_fit.save(tmp_path / "f.lmmb"))
    assert list(loaded.design.predictor_rows.columns) == ["x", "cat", "z", "trt", "g"]
    pd.testing.assert_frame_equal(loaded.avg_comparisons(["cat", "x"], by="trt"),
                                  effects_fit.avg_comparisons(["cat", "x"], by="trt"))
    pd.testing.assert_frame_equal(loaded.emmeans(["cat", "trt"]).table, effects_fit.emmeans(["cat", "trt"]).table)


def reference_grid(fit, data) -> tuple[pd.DataFrame, np.ndarray]:
    """Every cat x trt combination, x and z at their means, and its linear predictor from the draws of b."""
    grid = pd.DataFrame(list(itertools.product("abc", "CT")), columns=["cat", "trt"])
    grid["x"], grid["z"] = data.x.mean(), data.z.mean()
    b = fit.draws()
    eta = np.column_stack([
        b["b_Intercept"] + b["b_x"] * r.x + b["b_z"] * r.z + b["b_trtT"] * (r.trt == "T")
        + (b["b_catb"] + b["b_x:catb"] * r.x) * (r.cat == "b") + (b["b_catc"] + b["b_x:catc"] * r.x) * (r.cat == "c")
        for r in grid.itertuples()])
    return grid, eta


def test_emmeans_equal_weights_over_the_other_factor(effects_fit, effects_data):
    grid, eta = reference_grid(effects_fit, effects_data)
    res = effects_fit.emmeans("cat", prob=0.9)
    want = np.column_stack([eta[:, (grid.cat == c).to_numpy()].mean(axis=1) for c in "abc"])
    np.testing.assert_allclose(res.draws, want, rtol=1e-10)
    t = res.table
    assert list(t.columns) == ["cat", "emmean", "lower.HPD", "upper.HPD"] and list(t["cat"]) == ["a", "b", "c"]
    np.testing.assert_allclose(t["emmean"], np.median(want, axis=0))
    bounds = np.asarray([hdi(want[:, k], prob=0.9) for k in range(3)])
    np.testing.assert_allclose(t[["lower.HPD", "upper.HPD"]].to_numpy(), bounds)
    # trt is unbalanced across cat: the data-weighted average is a different number
    d = effects_data
    weighted = [eta[:, [list(zip(grid.cat, grid.trt)).index((c, s)) for s in d.trt[d.cat == c]]].mean(axis=1)
                for c in "abc"]
    assert np.abs(np.median(np.column_stack(weighted), axis=0) - t["emmean"]).max() > 0.1
    pairs = res.pairs()
    assert list(pairs["contrast"]) == ["a - b", "a - c", "b - c"]
    assert list(pairs.columns) == ["contrast", "estimate", "lower.HPD", "upper.HPD"]
    diffs = np.column_stack([want[:, i] - want[:, j] for i, j in ((0, 1), (0, 2), (1, 2))])
    np.testing.assert_allclose(pairs["estimate"], np.median(diffs, axis=0))
    np.testing.assert_allclose(pairs[["lower.HPD", "upper.HPD"]].to_numpy(),
                               np.asarray([hdi(diffs[:, k], prob=0.9) for k in range(3)]))
    both = effects_fit.emmeans(["cat", "trt"])
    np.testing.assert_allclose(both.draws, eta[:, [0, 2, 4, 1, 3, 5]], rtol=1e-10)  # the first factor fastest
    assert list(both.table["cat"].astype(str) + both.table["trt"].astype(str)) == ["aC", "bC", "cC", "aT", "bT", "cT"]
    assert list(both.pairs()["contrast"][:2]) == ["a C - b C", "a C - c C"]
    assert "Point estimate displayed: median" in str(res)


def test_emmeans_by_gives_means_and_pairs_within_each_level(effects_fit, effects_data):
    """emmeans(fit, "cat", by = "trt"): cat's means within each trt level, contrasts within trt."""
    grid, eta = reference_grid(effects_fit, effects_data)
    res = effects_fit.emmeans("cat", by="trt", prob=0.9)
    cell = list(zip(grid.cat, grid.trt))
    order = [(c, t) for t in "CT" for c in "abc"]  # cat fastest, the by variable slowest (emmeans's order)
    want = eta[:, [cell.index(k) for k in order]]
    np.testing.assert_allclose(res.draws, want, rtol=1e-10)
    t = res.table
    assert list(t.columns) == ["cat", "trt", "emmean", "lower.HPD", "upper.HPD"]
    assert list(zip(t["cat"].astype(str), t["trt"].astype(str))) == order
    np.testing.assert_allclose(t["emmean"], np.median(want, axis=0))
    np.testing.assert_allclose(t[["lower.HPD", "upper.HPD"]].to_numpy(),
                               np.asarray([hdi(want[:, k], prob=0.9) for k in range(6)]))
    pairs = res.pairs()
    assert list(pairs.columns) == ["contrast", "trt", "estimate", "lower.HPD", "upper.HPD"]
    assert list(pairs["contrast"]) == ["a - b", "a - c", "b - c"] * 2
    assert list(pairs["trt"].astype(str)) == ["C"] * 3 + ["T"] * 3
    diffs = np.column_stack([want[:, i] - want[:, j] for i, j in ((0, 1), (0, 2), (1, 2), (3, 4), (3, 5), (4, 5))])
    np.testing.assert_allclose(pairs["estimate"], np.median(diffs, axis=0))
    np.testing.assert_allclose(pairs[["lower.HPD", "upper.HPD"]].to_numpy(),
                               np.asarray([hdi(diffs[:, k], prob=0.9) for k in range(6)]))
    pd.testing.assert_frame_equal(res.contrast("pairwise"), pairs)
    text = str(res)
    assert "trt = C:" in text and "trt = T:" in text and text.index("trt = C:") < text.index("trt = T:")
    # averaging over x values given in at=, within each cat x trt cell; and lb.emmeans the same
    two = lb.emmeans(effects_fit, "trt", by="cat", at={"x": [-1.0, 1.0]})
    b = effects_fit.draws()
    z = effects_data.z.mean()

    def cell_eta(c: str, s: str, x: float) -> np.ndarray:
        return (b["b_Intercept"] + b["b_x"] * x + b["b_z"] * z + b["b_trtT"] * (s == "T")
                + (b["b_catb"] + b["b_x:catb"] * x) * (c == "b") + (b["b_catc"] + b["b_x:catc"] * x) * (c == "c"))
    hand = np.column_stack([(cell_eta(c, s, -1.0) + cell_eta(c, s, 1.0)) / 2 for c in "abc" for s in "CT"])
    np.testing.assert_allclose(two.draws, hand, rtol=1e-10)
    assert list(two.pairs()["contrast"]) == ["C - T"] * 3 and list(two.pairs()["cat"].astype(str)) == list("abc")
    with pytest.raises(lb.DataError, match="specs names too"):
        effects_fit.emmeans("cat", by="cat")
    with pytest.raises(lb.DataError, match="by: 'x' is numeric"):
        effects_fit.emmeans("cat", by="x")
    with pytest.raises(lb.LmmbayesError, match="within each level of \\['trt'\\]"):
        effects_fit.emmeans("cat", by="trt", at={"cat": ["a"]}).pairs()


def test_emmeans_at_and_errors(effects_fit, effects_data):
    grid, _ = reference_grid(effects_fit, effects_data)
    at = effects_fit.emmeans("trt", at={"x": 0.0, "cat": ["b"]})
    b = effects_fit.draws()
    z = effects_data.z.mean()
    base = b["b_Intercept"] + b["b_catb"] + b["b_z"] * z
    np.testing.assert_allclose(at.draws, np.column_stack([base, base + b["b_trtT"]]), rtol=1e-10)
    with pytest.raises(lb.DataError, match="'x' is numeric"):
        effects_fit.emmeans("x")
    with pytest.raises(lb.DataError, match=r"no predictor 'g2'"):
        effects_fit.emmeans("g2")
    with pytest.raises(lb.LmmbayesError, match=r"type 'probs'; choose one of \['link', 'response'\]"):
        effects_fit.emmeans("cat", type="probs")
    with pytest.raises(lb.DataError, match=r"level\(s\) \['d'\]"):
        effects_fit.emmeans("cat", at={"cat": ["a", "d"]})


def test_poisson_response_scale_rates_and_ratios(poisson_effects_fit):
    fit = poisson_effects_fit
    b = fit.draws()
    xbar = fit.design.predictors.get("x").mean
    eta = np.column_stack([b["b_Intercept"] + b["b_x"] * xbar + (b[f"b_cat{c}"] if c != "a" else 0.0)
                           for c in "abc"])
    res = fit.emmeans("cat", type="response")
    assert list(res.table.columns) == ["cat", "rate", "lower.HPD", "upper.HPD"]
    np.testing.assert_allclose(res.table["rate"], np.median(np.exp(eta), axis=0), rtol=1e-10)
    pairs = res.pairs()
    assert list(pairs.columns) == ["contrast", "ratio", "lower.HPD", "upper.HPD"]
    assert list(pairs["contrast"]) == ["a / b", "a / c", "b / c"]
    np.testing.assert_allclose(pairs["ratio"], np.median(np.exp(eta[:, [0, 0, 1]] - eta[:, [1, 2, 2]]), axis=0))
    assert "back-transformed from the log scale" in str(res)
    link = fit.emmeans("cat")
    assert "emmean" in link.table.columns and list(link.pairs().columns)[1] == "estimate"


def test_margin_strings_are_data_never_code(effects_fit, tmp_path):
    sentinel = tmp_path / "S"
    evil = f"__import__('os').system('touch {sentinel}')"
    for call in (lambda: effects_fit.avg_comparisons(evil), lambda: effects_fit.avg_predictions(by=evil),
                 lambda: effects_fit.emmeans(evil), lambda: effects_fit.emmeans("cat", at={evil: 1}),
                 lambda: effects_fit.avg_slopes([evil])):
        with pytest.raises(lb.DataError):
            call()
    assert not sentinel.exists()


# -- new grouping levels, variables=None, the plots ----------------------------------------------


def test_avg_new_levels_match_posterior_epred_with_the_same_seed(effects_fit, effects_data):
    new = effects_data.iloc[:40].copy()
    new.loc[new.index[:15], "g"] = "new1"  # a level the model never saw
    with pytest.raises(lb.DataError, match="allow_new_levels=True"):
        effects_fit.avg_predictions(newdata=new)
    with pytest.raises(lb.DataError, match="allow_new_levels=True"):
        lb.avg_comparisons(effects_fit, "cat", newdata=new)
    for how in ("uncertainty", "gaussian"):
        got = lb.avg_predictions(effects_fit, newdata=new, by="trt", allow_new_levels=True,
                                 sample_new_levels=how, seed=3)
        epred = effects_fit.posterior_epred(new, allow_new_levels=True, sample_new_levels=how, seed=3)
        check(got, np.column_stack([epred[:, (new.trt == t).to_numpy()].mean(axis=1) for t in ("C", "T")]))
    # the same simulated effects in every chunk and in both counterfactual frames
    lo = effects_fit.posterior_epred(new.assign(cat="a"), allow_new_levels=True, seed=5)
    hi = effects_fit.posterior_epred(new.assign(cat="b"), allow_new_levels=True, seed=5)
    whole = effects_fit.avg_comparisons("cat", newdata=new, allow_new_levels=True, seed=5)
    check(whole.iloc[:1], (hi - lo).mean(axis=1)[:, None])
    slopes = effects_fit.avg_slopes("x", newdata=new, allow_new_levels=True, seed=5, eps=0.5)
    base = effects_fit.posterior_epred(new, allow_new_levels=True, seed=5)
    step = effects_fit.posterior_epred(new.assign(x=new.x + 0.5), allow_new_levels=True, seed=5)
    check(slopes, ((step - base) / 0.5).mean(axis=1)[:, None])
    with pytest.raises(lb.LmmbayesError, match=r"sample_new_levels 'old'; choose one of \['uncertainty', 'gaus"):
        effects_fit.avg_predictions(newdata=new, allow_new_levels=True, sample_new_levels="old")
    with pytest.raises(lb.LmmbayesError, match="allow_new_levels must be True or False"):
        effects_fit.avg_slopes("x", allow_new_levels="yes")
    with pytest.raises(lb.LmmbayesError, match="seed must be None or a non-negative integer"):
        effects_fit.avg_predictions(seed=-1)


def test_chunks_share_new_level_effects(effects_fit, effects_data, monkeypatch):
    new = effects_data.iloc[:60].copy()
    new.loc[new.index[::2], "g"] = "new1"  # rows of the new level in every chunk
    whole = effects_fit.avg_predictions(newdata=new, allow_new_levels=True, seed=9)
    monkeypatch.setattr(margins, "CHUNK_CELLS", 400 * 7)  # 400 draws: 7 rows a chunk
    pd.testing.assert_frame_equal(effects_fit.avg_predictions(newdata=new, allow_new_levels=True, seed=9), whole,
                                  rtol=1e-10)


def test_variables_none_uses_every_predictor(effects_fit):
    every = effects_fit.avg_comparisons(by="trt")
    pd.testing.assert_frame_equal(every, effects_fit.avg_comparisons(["x", "cat", "z", "trt"], by="trt"))
    parts = [lb.avg_comparisons(effects_fit, v, by="trt") for v in ("x", "cat", "z", "trt")]
    pd.testing.assert_frame_equal(every, pd.concat(parts, ignore_index=True))
    assert list(dict.fromkeys(every["term"])) == ["x", "cat", "z", "trt"]
    slopes = lb.avg_slopes(effects_fit)
    pd.testing.assert_frame_equal(slopes, pd.concat([effects_fit.avg_slopes(v) for v in ("x", "cat", "z", "trt")],
                                                    ignore_index=True))
    assert list(slopes["contrast"]) == ["dY/dX", "b - a", "c - a", "dY/dX", "T - C"]


def lines_y(fig) -> list[np.ndarray]:
    return [line.get_ydata() for line in fig.axes[0].lines]


def test_plot_predictions_draw_the_tables(effects_fit, effects_data):
    import matplotlib.pyplot as plt

    d = effects_data
    fig = lb.plot_predictions(effects_fit, by=["cat", "trt"])
    table = effects_fit.avg_predictions(by=["cat", "trt"])
    ax = fig.axes[0]
    assert len(ax.containers) == 2 and [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    for k, t in enumerate(("C", "T")):
        np.testing.assert_allclose(ax.containers[k][0].get_ydata(), table.loc[table.trt == t, "estimate"])
    plt.close(fig)
    # condition: a grid along x (50 values), others at mean / reference level, g at its most frequent level
    fig = effects_fit.plot_predictions(condition="x")
    grid = pd.DataFrame({"x": np.linspace(d.x.min(), d.x.max(), 50), "cat": "a", "z": d.z.mean(), "trt": "C",
                         "g": d.g.value_counts().idxmax()})
    np.testing.assert_allclose(lines_y(fig)[0], np.median(effects_fit.posterior_epred(grid), axis=0), rtol=1e-10)
    np.testing.assert_allclose(fig.axes[0].lines[0].get_xdata(), grid.x)
    plt.close(fig)
    fig = effects_fit.plot_predictions(condition=["x", "cat"], include_groups=False)
    assert len(fig.axes[0].lines) == 3
    for k, c in enumerate("abc"):
        want = np.median(effects_fit.posterior_epred(grid.assign(cat=c), include_groups=False), axis=0)
        np.testing.assert_allclose(lines_y(fig)[k], want, rtol=1e-10)
    plt.close(fig)


def test_plot_comparisons_and_slopes_draw_the_tables(effects_fit, effects_data):
    import matplotlib.pyplot as plt

    d = effects_data
    fig = effects_fit.plot_comparisons("cat", by="trt")
    table = effects_fit.avg_comparisons("cat", by="trt")
    ax = fig.axes[0]
    assert len(ax.containers) == 2  # the two contrasts by colour
    for k, c in enumerate(("b - a", "c - a")):
        np.testing.assert_allclose(ax.containers[k][0].get_ydata(), table.loc[table.contrast == c, "estimate"])
    plt.close(fig)
    fig = lb.plot_slopes(effects_fit, "x", condition="cat", include_groups=False)
    grid = pd.DataFrame({"x": d.x.mean(), "cat": list("abc"), "z": d.z.mean(), "trt": "C"})
    eps = 1e-4 * (d.x.max() - d.x.min())
    step = effects_fit.posterior_epred(grid.assign(x=grid.x + eps), include_groups=False)
    want = np.median((step - effects_fit.posterior_epred(grid, include_groups=False)) / eps, axis=0)
    np.testing.assert_allclose(fig.axes[0].containers[0][0].get_ydata(), want, rtol=1e-8)
    plt.close(fig)
    fig = lb.plot_comparisons(effects_fit, "trt", condition="z", include_groups=False)
    z = np.linspace(d.z.min(), d.z.max(), 50)
    grid = pd.DataFrame({"x": d.x.mean(), "cat": "a", "z": z, "trt": "C"})
    diff = effects_fit.posterior_epred(grid.assign(trt="T"), include_groups=False) \
        - effects_fit.posterior_epred(grid, include_groups=False)
    np.testing.assert_allclose(lines_y(fig)[0], np.median(diff, axis=0), rtol=1e-8)
    plt.close(fig)


def test_plot_errors_name_the_argument(effects_fit, effects_data):
    with pytest.raises(lb.DataError, match="exactly one of condition= .* and by="):
        effects_fit.plot_predictions()
    with pytest.raises(lb.DataError, match="exactly one of condition="):
        effects_fit.plot_predictions(condition="x", by="cat")
    with pytest.raises(lb.DataError, match=r"condition: the model has no predictor 'w'"):
        effects_fit.plot_predictions(condition="w")
    with pytest.raises(lb.DataError, match="condition must be a column name or a list of one or two"):
        effects_fit.plot_predictions(condition=["x", "cat", "z"])
    with pytest.raises(lb.DataError, match=r"by names column\(s\) \['w'\]"):
        effects_fit.plot_predictions(by="w")
    with pytest.raises(lb.DataError, match="variables must name one predictor"):
        effects_fit.plot_slopes(["x", "z"], condition="x")
    with pytest.raises(lb.DataError, match="variables: the model has no predictor 'w'"):
        effects_fit.plot_comparisons("w", by="trt")
    with pytest.raises(lb.DataError, match="newdata= goes with by="):
        effects_fit.plot_predictions(condition="x", newdata=effects_data)
    without = replace(effects_fit, design=replace(effects_fit.design, predictor_rows=None))
    with pytest.raises(lb.FitError, match="include_groups=False"):
        without.plot_predictions(condition="x")


# -- emmeans's contrast families and formula specs ------------------------------------------------


def check_contrasts(table: pd.DataFrame, column: str, labels: list[str], draws: np.ndarray, prob: float) -> None:
    """A contrast table against hand-made contrast draws: labels, median, HPD (arviz-stats's hdi)."""
    assert list(table["contrast"]) == labels
    np.testing.assert_allclose(table[column], np.median(draws, axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(table[["lower.HPD", "upper.HPD"]].to_numpy(),
                               np.asarray([hdi(draws[:, k], prob=prob) for k in range(draws.shape[1])]),
                               rtol=1e-9, atol=1e-12)


def test_emmeans_contrast_families_as_emmeans_names_and_computes_them(effects_fit, effects_data):
    """revpairwise, trt.vs.ctrl (ref), consec and eff against differences of the hand grid's means."""
    grid, eta = reference_grid(effects_fit, effects_data)
    a, b, c = (eta[:, (grid.cat == k).to_numpy()].mean(axis=1) for k in "abc")
    res = effects_fit.emmeans("cat", prob=0.9)
    mean = (a + b + c) / 3
    cases = {
        "revpairwise": (["b - a", "c - a", "c - b"], [b - a, c - a, c - b]),
        "trt.vs.ctrl": (["b - a", "c - a"], [b - a, c - a]),
        "consec": (["b - a", "c - b"], [b - a, c - b]),
        "eff": (["a effect", "b effect", "c effect"], [a - mean, b - mean, c - mean]),
        "pairwise": (["a - b", "a - c", "b - c"], [a - b, a - c, b - c]),
    }
    for method, (labels, cols) in cases.items():
        table = res.contrast(method)
        assert list(table.columns) == ["contrast", "estimate", "lower.HPD", "upper.HPD"]
        check_contrasts(table, "estimate", labels, np.column_stack(cols), 0.9)
        # contrast= carries the same table, as emmeans's $contrasts; the means are unchanged
        both = effects_fit.emmeans("cat", prob=0.9, contrast=method)
        pd.testing.assert_frame_equal(both.contrasts, table)
        pd.testing.assert_frame_equal(both.table, res.table)
    check_contrasts(res.contrast("trt.vs.ctrl", ref="b"), "estimate", ["a - b", "c - b"],
                    np.column_stack([a - b, c - b]), 0.9)
    with_ref = effects_fit.emmeans("cat", contrast="trt.vs.ctrl", ref="c", prob=0.9)
    check_contrasts(with_ref.contrasts, "estimate", ["a - c", "b - c"], np.column_stack([a - c, b - c]), 0.9)
    assert res.contrasts is None and "$contrasts" not in str(res)
    text = str(with_ref)
    assert text.startswith("$emmeans") and "$contrasts" in text and "a - c" in text


def test_emmeans_formula_specs_are_by_and_contrasts(effects_fit, effects_data):
    """'~ cat | trt' is by='trt'; 'consec ~ cat | trt' adds contrasts within trt; '~ cat + trt' two specs."""
    grid, eta = reference_grid(effects_fit, effects_data)
    cell = list(zip(grid.cat, grid.trt))
    want = eta[:, [cell.index((k, t)) for t in "CT" for k in "abc"]]  # cat fastest, trt slowest
    formula = effects_fit.emmeans("~ cat | trt", prob=0.9)
    np.testing.assert_allclose(formula.draws, want, rtol=1e-10)
    pd.testing.assert_frame_equal(formula.table, effects_fit.emmeans("cat", by="trt", prob=0.9).table)
    assert formula.by == ("trt",) and formula.contrasts is None
    consec = effects_fit.emmeans("consec ~ cat | trt", prob=0.9)
    pd.testing.assert_frame_equal(consec.table, formula.table)
    table = consec.contrasts
    assert list(table.columns) == ["contrast", "trt", "estimate", "lower.HPD", "upper.HPD"]
    assert list(table["trt"].astype(str)) == ["C", "C", "T", "T"]
    check_contrasts(table, "estimate", ["b - a", "c - b"] * 2,
                    np.column_stack([want[:, 1] - want[:, 0], want[:, 2] - want[:, 1],
                                     want[:, 4] - want[:, 3], want[:, 5] - want[:, 4]]), 0.9)
    eff = effects_fit.emmeans("eff~cat|trt", prob=0.9).contrasts  # spaces are optional
    check_contrasts(eff, "estimate", ["a effect", "b effect", "c effect"] * 2,
                    np.column_stack([want[:, k] - want[:, 3 * (k // 3):3 * (k // 3) + 3].mean(axis=1)
                                     for k in range(6)]), 0.9)
    pairwise = effects_fit.emmeans("pairwise ~ cat")
    pd.testing.assert_frame_equal(pairwise.contrasts, effects_fit.emmeans("cat").pairs())
    two = effects_fit.emmeans(["cat", "trt"])
    for spec in ("~ cat + trt", "~ cat * trt", "~ cat:trt"):
        np.testing.assert_allclose(effects_fit.emmeans(spec).draws, two.draws, rtol=1e-12)
    ctrl = effects_fit.emmeans("trt.vs.ctrl ~ trt | cat", ref="T").contrasts
    assert list(ctrl["contrast"]) == ["C - T"] * 3 and list(ctrl["cat"].astype(str)) == list("abc")


@pytest.mark.parametrize("spec, needle", [
    ("cat ~ trt", "the left side must be one of"),
    ("~", "predictor names joined by"),
    ("~ cat |", "predictor names joined by"),
    ("~ cat | trt | x", "more than one '|'"),
    ("~ cat ~ trt", "exactly one '~'"),
    ("cat | trt", "exactly one '~'"),
    ("~ cat + (trt)", "'\\(' at position"),
    ("pairwise ~ __import__('os').system('x')", "is not allowed"),
    ("~ cat trt", "predictor names joined by"),
])
def test_emmeans_bad_formula_specs_name_the_spec_and_the_forms(effects_fit, spec, needle):
    with pytest.raises(lb.DataError, match=needle) as err:
        effects_fit.emmeans(spec)
    assert repr(spec) in str(err.value) and "Valid forms" in str(err.value) and "'pairwise ~ f1'" in str(err.value)


def test_emmeans_contrast_argument_errors(effects_fit):
    with pytest.raises(lb.DataError, match=r"Unknown contrast 'poly'; choose one of \['pairwise', 'revpairwise'"):
        effects_fit.emmeans("cat", contrast="poly")
    with pytest.raises(lb.DataError, match=r"Unknown contrast method 'tukey'"):
        effects_fit.emmeans("cat").contrast("tukey")
    with pytest.raises(lb.DataError, match="ref= chooses the reference level"):
        effects_fit.emmeans("cat", contrast="pairwise", ref="a")
    with pytest.raises(lb.DataError, match="method 'consec' takes no ref"):
        effects_fit.emmeans("cat").contrast("consec", ref="a")
    with pytest.raises(lb.DataError, match=r"ref must be the label of one of the means, one of \['a', 'b', 'c'\]"):
        effects_fit.emmeans("cat", contrast="trt.vs.ctrl", ref="d")
    with pytest.raises(lb.DataError, match="give them one way"):
        effects_fit.emmeans("~ cat | trt", by="trt")
    with pytest.raises(lb.DataError, match="asks for 'pairwise' contrasts and contrast='eff'"):
        effects_fit.emmeans("pairwise ~ cat", contrast="eff")
    with pytest.raises(lb.DataError, match=r"no predictor 'nope'"):
        effects_fit.emmeans("~ nope")
    with pytest.raises(lb.LmmbayesError, match="contrast\\('consec'\\) needs at least two"):
        effects_fit.emmeans("cat", at={"cat": ["a"]}, contrast="consec")


def test_poisson_response_scale_contrast_families_are_ratios(poisson_effects_fit):
    """On the response scale of a log link every family is exp of the link-scale contrast (emmeans's ratios)."""
    fit = poisson_effects_fit
    b = fit.draws()
    xbar = fit.design.predictors.get("x").mean
    a, bb, c = (b["b_Intercept"].to_numpy() + b["b_x"].to_numpy() * xbar
                + (b[f"b_cat{k}"].to_numpy() if k != "a" else 0.0) for k in "abc")
    res = fit.emmeans("cat", type="response")
    mean = (a + bb + c) / 3
    check_contrasts(res.contrast("revpairwise"), "ratio", ["b / a", "c / a", "c / b"],
                    np.exp(np.column_stack([bb - a, c - a, c - bb])), 0.95)
    check_contrasts(res.contrast("consec"), "ratio", ["b / a", "c / b"], np.exp(np.column_stack([bb - a, c - bb])),
                    0.95)
    check_contrasts(res.contrast("eff"), "ratio", ["a effect", "b effect", "c effect"],
                    np.exp(np.column_stack([a - mean, bb - mean, c - mean])), 0.95)
    text = str(fit.emmeans("trt.vs.ctrl ~ cat", type="response"))
    assert "b / a" in text and "ratios" in text


@pytest.fixture(scope="module")
def bernoulli_fit():
    """A small logistic regression (logit link) with a factor of three levels."""
    from conftest import quiet_fit

    rng = np.random.default_rng(11)
    n = 300
    x, cat = rng.normal(size=n), rng.choice(["a", "b", "c"], size=n)
    eta = -0.3 + 0.8 * x + 1.0 * (cat == "b") - 0.7 * (cat == "c")
    data = pd.DataFrame({"y": (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(int), "x": x, "cat": cat})
    return quiet_fit("y ~ x + cat", data, family="bernoulli", chains=2, draws=200, tune=200, seed=4)


def test_logit_response_scale_probabilities_and_odds_ratios(bernoulli_fit):
    """prob = inverse logit of each draw's mean; contrasts are odds ratios exp(eta_i - eta_j) ("b / a")."""
    fit = bernoulli_fit
    b = fit.draws()
    xbar = fit.design.predictors.get("x").mean
    a, bb, c = (b["b_Intercept"].to_numpy() + b["b_x"].to_numpy() * xbar
                + (b[f"b_cat{k}"].to_numpy() if k != "a" else 0.0) for k in "abc")
    res = fit.emmeans("pairwise ~ cat", type="response", prob=0.9)
    assert list(res.table.columns) == ["cat", "prob", "lower.HPD", "upper.HPD"]
    probs = 1 / (1 + np.exp(-np.column_stack([a, bb, c])))
    np.testing.assert_allclose(res.table["prob"], np.median(probs, axis=0), rtol=1e-9)
    pairs = res.contrasts
    assert list(pairs.columns) == ["contrast", "odds.ratio", "lower.HPD", "upper.HPD"]
    # the odds ratio is the ratio of the odds p / (1 - p), per draw
    odds = probs / (1 - probs)
    check_contrasts(pairs, "odds.ratio", ["a / b", "a / c", "b / c"],
                    np.column_stack([odds[:, 0] / odds[:, 1], odds[:, 0] / odds[:, 2], odds[:, 1] / odds[:, 2]]), 0.9)
    check_contrasts(res.contrast("trt.vs.ctrl", ref="c"), "odds.ratio", ["a / c", "b / c"],
                    np.column_stack([odds[:, 0] / odds[:, 2], odds[:, 1] / odds[:, 2]]), 0.9)
    text = str(res)
    assert "back-transformed from the logit scale" in text and "odds.ratios" in text
    assert list(fit.emmeans("cat").pairs().columns)[1] == "estimate"


def test_emmeans_plot_draws_each_mean_and_its_hpd(effects_fit):
    """emmeans's plot(emm): one point per mean at its estimate, bars to the HPD bounds, one panel per by level."""
    import matplotlib.pyplot as plt

    emm = effects_fit.emmeans("cat", by="trt", prob=0.9)
    fig = emm.plot()
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2
    for ax, level in zip(axes, ["C", "T"]):
        sub = emm.table[emm.table["trt"].astype(str) == level]
        points, bars = ax.containers[0].lines[0], ax.containers[0].lines[2][0]
        np.testing.assert_allclose(points.get_xdata(), sub["emmean"])
        spans = np.array([seg[:, 0] for seg in bars.get_segments()])
        np.testing.assert_allclose(spans, sub[["lower.HPD", "upper.HPD"]].to_numpy())
        assert [t.get_text() for t in ax.get_yticklabels()] == list(sub["cat"].astype(str))
    plt.close(fig)
