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
