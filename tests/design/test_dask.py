"""Dask DataFrames: reduced partition by partition, fitted like the same data in memory.

The reduction is checked against the in-memory design (cross-products to
1e-8 relative, likelihood to 1e-12, default priors exactly) and a fit on a
Dask cluster against the in-memory collapsed fit with the same seed and
priors (within Monte Carlo error: see the test for why not draw for draw).
Unit tests of the exact median, of the row sums and of the response's
fingerprint need no cluster.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from functools import reduce

import numpy as np
import pandas as pd
import pytest
from arviz_stats.base import array_stats
from conftest import quiet_fit

import lmmbayes as lb
from lmmbayes.design import build_design
from lmmbayes.design import dask as dist
from lmmbayes.design.crossprod import SparsePairSums, layout_of, reduce_rows
from lmmbayes.engines import collapsed as cl
from lmmbayes.engines.collapsed import algebra
from lmmbayes.engines.plan import plan as make_plan
from lmmbayes.families import family, r_mad
from lmmbayes.priors import as_prior_set, resolve_priors
from lmmbayes.results.posterior import flat_draws
from lmmbayes.spec import parse_formula
from lmmbayes.workflow import compare

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

FORMULA = "y ~ x + (1 + x | g)"
PRIORS = [lb.prior("normal(0, 5)", class_="Intercept"), lb.prior("normal(0, 5)", class_="b"),
          lb.prior("normal(0, 2)", class_="sd"), lb.prior("normal(0, 2)", class_="sigma")]
FIT = dict(chains=2, draws=500, tune=500, seed=8)
GAUSSIAN = family("gaussian")


def simulate(n: int = 20_000, groups: int = 50, seed: int = 6) -> pd.DataFrame:
    """y ~ x + (1 + x | g) plus a categorical predictor, a nesting factor, a crossed factor of 80 levels
    (``item``, with effects of sd 0.5) and a few missing values."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, groups, n)
    x = rng.normal(size=n)
    r = rng.multivariate_normal([0, 0], [[1.0, 0.15], [0.15, 0.25]], size=groups)
    y = 40.0 + 2.0 * x + r[g, 0] + r[g, 1] * x + rng.normal(size=n)  # far from zero on purpose
    df = pd.DataFrame({"y": y, "x": x, "g": [f"g{k:02d}" for k in g],
                       "cat": rng.choice(["lo", "mid", "hi"], n), "region": [f"R{k % 5}" for k in g]})
    item = rng.integers(0, 80, n)
    df["item"] = [f"i{k:02d}" for k in item]
    df["y"] += rng.normal(0, 0.5, 80)[item]
    df.loc[[3, 250, n - 1000], "x"] = np.nan
    df.loc[777, "g"] = None
    return df


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                       dashboard_address=None)
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


@pytest.fixture(scope="module")
def frames():
    df = simulate()
    return df, dd.from_pandas(df, npartitions=8)


def designs(formula: str, df: pd.DataFrame, ddf) -> tuple:
    spec = parse_formula(formula)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lb.DataWarning)
        return build_design(spec, GAUSSIAN, df), dist.build_dask_design(spec, GAUSSIAN, ddf)


def collapsed_of(design):
    """The collapsed engine's cross-products of ``design``, in its plan's standardised units."""
    priors = [p for p in PRIORS if p.class_ != "Intercept" or design.centred_intercept]
    return cl.collapse(design, make_plan(design, resolve_priors(design, as_prior_set(priors))))


def reduced_arrays(collapsed) -> dict[str, np.ndarray]:
    """Every array the collapsed likelihood is computed from, by name (sparse sums as dense matrices)."""
    out = {}
    for name, part in vars(collapsed).items():
        items = part if isinstance(part, tuple) else (part,)
        for k, item in enumerate(items):
            key = f"{name}[{k}]" if isinstance(part, tuple) else name
            if isinstance(item, tuple) and isinstance(item[-1], SparsePairSums):  # other_pairs: (k, l, sums)
                key, item = f"{name}{item[:2]}", item[2]
            if isinstance(item, algebra.FixedCrossProducts):
                out |= {"WtW": item.WtW, "Wty": item.Wty, "yty": np.array(item.yty), "shift": item.shift,
                        "n": np.array(item.n)}
            elif isinstance(item, algebra.FactorCrossProducts):
                out |= {f"{key}.ZtZ": item.ZtZ, f"{key}.ZtW": item.ZtW, f"{key}.Zty": item.Zty}
            elif isinstance(item, SparsePairSums):
                out[key] = item.matrix().toarray()
            elif isinstance(item, np.ndarray):
                out[key] = item
    return out


def sums_arrays(sums) -> dict[str, np.ndarray]:
    out = {"VtV": sums.VtV, "shift": sums.shift}
    for k, f in enumerate(sums.factors):
        out |= {f"ZtZ_{k}": f.ZtZ, f"ZtV_{k}": f.ZtV}
    out |= {f"pair_{k}": p.matrix().toarray() if isinstance(p, SparsePairSums) else p for k, p in enumerate(sums.pairs)}
    return out


def assert_close(a: dict, b: dict, rtol: float) -> None:
    """Equal to ``rtol`` of each array's largest value (at least 1: the units are standardised or counts)."""
    assert a.keys() == b.keys()
    for key in a:
        scale = max(np.abs(a[key]).max(), 1.0) if np.size(a[key]) else 1.0
        assert np.shape(a[key]) == np.shape(b[key]), key
        assert np.abs(a[key] - b[key]).max(initial=0.0) <= rtol * scale, key


# -- the reduction: no sampling --------------------------------------------------------------


@pytest.mark.parametrize("formula", [FORMULA, "y ~ x + cat + (1 + x | g)", "y ~ 0 + x + (1 | g)",
                                     "y ~ x + (1 | region/g)", "y ~ x + (1 | cat) + (1 | region)",
                                     "y ~ x + (1 + x | g) + (1 | item) + (1 | cat)"])
def test_cross_products_equal_the_in_memory_ones(client, frames, formula):
    memory, reduced = designs(formula, *frames)
    assert not reduced.rows_in_memory and memory.rows_in_memory
    assert reduced.n_obs == memory.n_obs == 20_000 - memory.n_dropped
    assert reduced.dropped_index == memory.dropped_index
    assert reduced.coef_names == memory.coef_names
    assert [(f.name, f.levels, f.terms, f.blocks) for f in reduced.factors] == \
        [(f.name, f.levels, f.terms, f.blocks) for f in memory.factors]
    # the raw sums, moved to the same shift
    a, b = cl.sums(memory), cl.sums(reduced)
    assert a.layout.kind == b.layout.kind and a.layout.levels == b.layout.levels and a.n == b.n
    assert_close(sums_arrays(a), sums_arrays(b.recentred(a.shift)), rtol=1e-8)
    # what the likelihood is computed from, each design in its own plan's units
    a, b = collapsed_of(memory), collapsed_of(reduced)
    assert type(a) is type(b)
    assert_close(reduced_arrays(a), reduced_arrays(b), rtol=1e-8)
    st_r, st_m = reduced.stats, memory.stats
    np.testing.assert_allclose(st_r.x_mean, st_m.x_mean, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(st_r.x_sd, st_m.x_sd, rtol=1e-12)
    assert st_r.y_mean == pytest.approx(st_m.y_mean, rel=1e-12)
    assert st_r.y_sd == pytest.approx(st_m.y_sd, rel=1e-12)
    for z_r, z_m in zip(st_r.z_rms, st_m.z_rms):
        np.testing.assert_allclose(z_r, z_m, rtol=1e-12)


def test_lognormal_is_reduced_on_the_log_scale_as_in_memory(client, frames):
    """lognormal's sums are those of log y (`Family.normal_response`), with its Jacobian −Σ log y, on Dask too."""
    df, ddf = frames
    spec, fam = parse_formula(FORMULA), family("lognormal")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lb.DataWarning)
        memory, reduced = build_design(spec, fam, df), dist.build_dask_design(spec, fam, ddf)
        gaussian = build_design(spec, GAUSSIAN, df.assign(y=np.log(df["y"])))
    a, b, c = cl.sums(memory), cl.sums(reduced), cl.sums(gaussian)
    assert_close(sums_arrays(a), sums_arrays(b.recentred(a.shift)), rtol=1e-8)
    assert_close(sums_arrays(a), sums_arrays(c.recentred(a.shift)), rtol=1e-12)
    assert memory.stats.y_mean == pytest.approx(gaussian.stats.y_mean, rel=1e-12)
    assert reduced.stats.y_sd == pytest.approx(gaussian.stats.y_sd, rel=1e-10)
    assert reduced.stats.log_jacobian == pytest.approx(memory.stats.log_jacobian, rel=1e-12)
    assert memory.stats.log_jacobian == pytest.approx(-np.log(memory.y).sum(), rel=1e-12)
    assert gaussian.stats.log_jacobian == 0.0


def test_default_priors_equal_the_in_memory_ones_exactly(client, frames):
    memory, reduced = designs(FORMULA, *frames)
    assert (reduced.stats.prior_median, reduced.stats.prior_mad) == (memory.stats.prior_median,
                                                                     memory.stats.prior_mad)
    df, ddf = frames
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lb.DataWarning)
        pd.testing.assert_frame_equal(lb.get_prior(FORMULA, ddf), lb.get_prior(FORMULA, df))


def test_missing_values_are_dropped_with_the_same_warning_and_frame_unchanged(client, frames):
    df, ddf = frames
    before, before_dask = df.copy(), ddf.compute()
    with pytest.warns(lb.DataWarning, match=r"Dropped 4 of 20000 rows") as got:
        design = dist.build_dask_design(parse_formula(FORMULA), GAUSSIAN, ddf)
    assert len(got) == 1
    assert design.n_dropped == 4
    assert sorted(design.dropped_index) == [3, 250, 777, 19_000]
    pd.testing.assert_frame_equal(df, before)
    pd.testing.assert_frame_equal(ddf.compute(), before_dask)


def test_errors_for_joint_missing_columns_and_stateful_functions(client, frames):
    _, ddf = frames
    with pytest.raises(lb.FitError, match=r'method="joint" needs the rows in memory'):
        lb.fit(FORMULA, ddf, method="joint", progress=False)
    with pytest.raises(lb.FormulaError, match=r"column\(s\) \['nope'\] that are not in the data"):
        lb.fit("y ~ nope + (1 | g)", ddf, progress=False)
    with pytest.raises(lb.FormulaError, match=r"scale\(\) .* compute the transformed column with Dask"):
        lb.fit("y ~ scale(x) + (1 | g)", ddf, progress=False)
    with pytest.raises(lb.FitError, match="no group-level terms"):
        lb.fit("y ~ x", ddf, progress=False)
    bad = ddf.assign(x=ddf["x"].where(ddf["x"].isna() | (ddf.index != 5), np.inf))
    with pytest.raises(lb.DataError, match="Column 'x' of data contains infinite values"):
        lb.fit(FORMULA, bad, progress=False)


def test_median_and_mad_are_exact_through_the_radix_selection(monkeypatch):
    # Chunks of a heavy-tailed sample with ties and both signs; a tiny
    # COLLECT_MAX forces several histogram passes before collecting.
    rng = np.random.default_rng(2)
    for n in (1001, 1000):
        values = np.round(rng.standard_t(2, size=n) * 3, 2)
        chunks = np.array_split(values, 7)

        def run(fn, combine):
            return reduce(combine, [fn(c) for c in chunks])

        monkeypatch.setattr(dist, "COLLECT_MAX", 5)
        med, mad = dist.median_and_mad(run, dist._identity, n)
        assert (med, mad) == (float(np.median(values)), r_mad(values))


def test_row_sums_merge_exactly_across_chunks():
    # Summing chunks around their own means and merging equals one pass over all rows.
    df = simulate(n=3000)
    design = build_design(parse_formula("y ~ x + cat + (1 + x | g)"), GAUSSIAN, df.dropna())
    rows = design.rows
    indexes, Zs = [f.index for f in rows.factors], [f.Z for f in rows.factors]
    layout = layout_of([f.name for f in design.factors], indexes, [f.n_levels for f in design.factors],
                       [f.q for f in design.factors])[0]
    whole = reduce_rows(layout, rows.X, rows.y, indexes, Zs)
    parts = [reduce_rows(layout, rows.X[s], rows.y[s], [i[s] for i in indexes], [Z[s] for Z in Zs])
             for s in (slice(0, 100), slice(100, 2500), slice(2500, None))]
    merged = (parts[0] + parts[1] + parts[2]).recentred(whole.shift)
    np.testing.assert_allclose(merged.VtV, whole.VtV, rtol=1e-10, atol=1e-8)
    np.testing.assert_allclose(merged.factors[0].ZtV, whole.factors[0].ZtV, rtol=1e-10, atol=1e-8)
    np.testing.assert_allclose(merged.factors[0].ZtZ, whole.factors[0].ZtZ, rtol=1e-12)


def test_import_does_not_import_dask():
    code = ("import sys, lmmbayes, lmmbayes.design.dask, lmmbayes.workflow.compare, lmmbayes.results.files; "
            "lmmbayes.design.response_fingerprint(__import__('numpy').array([1.0, 2.0])); print('dask' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- fits -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fit_pair(client, frames):
    df, ddf = frames
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lb.DataWarning)
        memory = quiet_fit(FORMULA, df, PRIORS, method="collapsed", **FIT)
        reduced = quiet_fit(FORMULA, ddf, PRIORS, **FIT)
    return memory, reduced


def test_dask_fit_agrees_with_the_in_memory_fit(fit_pair):
    """Posterior means within 4 combined MCSE for every parameter, random effects included.

    Not draw for draw: the two reductions differ by rounding (1e-15 relative,
    see the likelihood test), and NUTS amplifies that during warmup until the
    chains decorrelate, as it would for any change in summation order.
    """
    memory, reduced = fit_pair
    assert reduced.engine == "collapsed" and not reduced.design.rows_in_memory
    (names, a), (names_r, b) = flat_draws(memory.posterior, memory.design), \
        flat_draws(reduced.posterior, reduced.design)
    assert names == names_r
    kw = {"chain_axis": 0, "draw_axis": 1}
    tol = 4 * np.hypot(array_stats.mcse(a, method="mean", **kw), array_stats.mcse(b, method="mean", **kw))
    gap = np.abs(a.mean(axis=(0, 1)) - b.mean(axis=(0, 1)))
    assert not [n for n, g, t in zip(names, gap, tol) if g > t]


def test_crossed_factors_on_dask_are_partly_collapsed_as_in_memory(client, frames, tmp_path):
    """183 crossed effects: g's integrated out, item's and cat's sampled, from sparse pair sums reduced
    partition by partition. The same posterior as in memory (means within 4 combined MCSE, at most 1% of
    the 200-odd parameters beyond), and item's sd covers its simulated 0.5."""
    formula = "y ~ x + (1 + x | g) + (1 | item) + (1 | cat)"
    df, ddf = frames
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lb.DataWarning)
        memory = quiet_fit(formula, df, PRIORS, **FIT)
        reduced = quiet_fit(formula, ddf, PRIORS, **FIT)
    for fit in (memory, reduced):
        assert fit.engine == "collapsed" and fit.info["route"] == "C kernel; item, cat sampled, g integrated out"
    assert not reduced.design.rows_in_memory
    (names, a), (names_r, b) = flat_draws(memory.posterior, memory.design), \
        flat_draws(reduced.posterior, reduced.design)
    assert names == names_r
    kw = {"chain_axis": 0, "draw_axis": 1}
    tol = 4 * np.hypot(array_stats.mcse(a, method="mean", **kw), array_stats.mcse(b, method="mean", **kw))
    far = [n for n, g, t in zip(names, np.abs(a.mean(axis=(0, 1)) - b.mean(axis=(0, 1))), tol) if g > t]
    assert len(far) <= 0.01 * len(names), far
    lo, hi = reduced.posterior_summary().loc["sd_item__Intercept", ["Q2.5", "Q97.5"]]
    assert lo < 0.5 < hi
    # the sparse sums survive a file
    back = lb.load(reduced.save(tmp_path / "crossed.lmmb"))
    assert str(back.summary()) == str(reduced.summary())
    for a, b in zip(back.design.reduced.sums.pairs, reduced.design.reduced.sums.pairs):
        assert (a.matrix() != b.matrix()).nnz == 0 and a.shape == b.shape


def test_reduced_likelihoods_agree_to_rounding(client, frames):
    # What the sampler sees: the standardised marginal likelihood, at random parameter values.
    memory, reduced = designs(FORMULA, *frames)
    got = [collapsed_of(d) for d in (memory, reduced)]
    rng = np.random.default_rng(3)
    for _ in range(3):
        beta, L = rng.normal(size=2) * 0.2, np.array([[0.8, 0.0], [0.1, 0.4]]) * rng.uniform(0.5, 1.5)
        a, b = (algebra.marginal_loglik(c, beta, 0.4, {"g": L}).eval() for c in got)
        assert a == pytest.approx(b, rel=1e-12)


@pytest.mark.parametrize("lhs", ["y | weights(w)", "y | se(s)", "y | se(s) + weights(w)"])
def test_weighted_reduction_equals_the_in_memory_one(client, frames, lhs):
    """weights() and se() on Dask: the same weighted cross-products and the same marginal likelihood (on
    the data's own units, the intercept centred where the in-memory design centres it)."""
    df, _ = frames
    rng = np.random.default_rng(4)
    df = df.assign(w=rng.uniform(0.0, 2.0, len(df)), s=rng.uniform(0.5, 2.0, len(df)))
    formula = lhs + " ~ x + (1 + x | g)"
    memory, reduced = designs(formula, df, dd.from_pandas(df, npartitions=8))
    a, b = cl.sums(memory), cl.sums(reduced)
    w = (memory.rows.weights if memory.rows.weights is not None else 1.0) / (
        memory.rows.extra.se ** 2 if memory.rows.extra.se is not None else 1.0)
    assert a.n == b.n == memory.n_obs and a.weight == pytest.approx(np.sum(w * np.ones(a.n)), rel=1e-12)
    assert_close(sums_arrays(a), sums_arrays(b.recentred(a.shift)), rtol=1e-8)
    names, centre = ("g",), memory.stats.x_mean
    got = [algebra.from_sums(s, names, True, centre) for s in (a, b)]
    L = np.array([[0.8, 0.0], [0.1, 0.4]])
    x, y = algebra.marginal_loglik(got[0], np.array([40.0, 2.0]), 1.1, {"g": L}).eval(), \
        algebra.marginal_loglik(got[1], np.array([40.0, 2.0]), 1.1, {"g": L}).eval()
    assert x == pytest.approx(y, rel=1e-10)


def test_the_reduction_is_deterministic(client, frames):
    spec = parse_formula(FORMULA)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lb.DataWarning)
        designs_ = [dist.build_dask_design(spec, GAUSSIAN, frames[1]) for _ in range(2)]
    a, b = (sums_arrays(d.reduced.sums) for d in designs_)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert designs_[0].stats.fingerprint == designs_[1].stats.fingerprint
    a, b = (reduced_arrays(collapsed_of(d)) for d in designs_)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_dask_fit_looks_like_any_fit(fit_pair):
    memory, reduced = fit_pair
    assert reduced.nobs == memory.nobs == 19_996
    assert str(reduced.summary()).splitlines()[3] == "   Data: data (Number of observations: 19996)"
    assert list(reduced.fixef().index) == ["Intercept", "x"]
    assert reduced.ranef()["g"].shape == memory.ranef()["g"].shape
    assert reduced.coef()["g"].index.equals(memory.coef()["g"].index)
    pd.testing.assert_frame_equal(reduced.prior_summary(), memory.prior_summary())
    assert reduced.idata["observed_data"].sizes["obs"] == 0  # the rows stayed on Dask


def _needs_checks_module():
    import importlib.util

    return pytest.mark.skipif(importlib.util.find_spec("lmmbayes.workflow.checks") is None,
                              reason="pp_check (lmmbayes.workflow.checks) is not in this tree yet")


@pytest.mark.parametrize("call", [
    lambda f: f.log_lik(), lambda f: f.bayes_r2(),
    pytest.param(lambda f: f.pp_check(), marks=_needs_checks_module()),
    lambda f: f.predict(), lambda f: f.posterior_epred(), lambda f: f.fitted(),
], ids=["log_lik", "bayes_r2", "pp_check", "predict", "posterior_epred", "fitted"])
def test_what_needs_the_rows_says_so(fit_pair, call):
    with pytest.raises(lb.FitError, match="Dask DataFrame and keeps only their cross-products"):
        call(fit_pair[1])


def test_dask_fit_predicts_new_data_and_survives_save_and_load(fit_pair, frames, tmp_path):
    memory, reduced = fit_pair
    new = frames[0].dropna().head(20)
    before = reduced.predict(new, seed=3)
    back = lb.load(reduced.save(tmp_path / "dask.lmmb"))
    assert not back.design.rows_in_memory and back.nobs == reduced.nobs
    assert str(back.summary()) == str(reduced.summary())
    pd.testing.assert_frame_equal(back.predict(new, seed=3), before)
    np.testing.assert_array_equal(back.design.reduced.sums.VtV, reduced.design.reduced.sums.VtV)
    # the loaded fit still knows which data it was fitted to
    assert back.design.stats.fingerprint == reduced.design.stats.fingerprint
    assert compare.same_data(back, memory) and compare.same_data(back, reduced)


def test_dask_loo_and_waic_equal_those_of_the_whole_log_likelihood_matrix(fit_pair, frames):
    """LOO and WAIC of a Dask fit go over the partitions in row chunks; the witness builds the
    whole (draws x rows) log-likelihood from the pandas rows through the prediction path, and
    runs arviz-stats's loo on every 7th row (its per-row PSIS takes 3 ms a row; the reff is
    the whole posterior's either way) and the loo package's WAIC formulas on all rows: the
    same numbers for every row, in the same order, and the loo package's totals."""
    import scipy.special
    import scipy.stats
    import xarray as xr
    from arviz_stats import loo as az_loo

    reduced = fit_pair[1]
    got = reduced.loo()
    rows = frames[0].dropna(subset=["y", "x", "g"])
    mu = reduced.posterior_epred(rows)  # (draws, rows), chains one after the other
    post = reduced.idata["posterior"]
    n_chain, n_draw = post["sigma"].shape
    sigma = post["sigma"].values.reshape(-1, 1)
    ll = scipy.stats.norm.logpdf(rows["y"].to_numpy()[None, :], mu, sigma).reshape(n_chain, n_draw, -1)
    some = np.arange(0, len(rows), 7)
    tree = xr.DataTree.from_dict({
        "posterior": post.to_dataset(),
        "log_likelihood": xr.Dataset({"y": (("chain", "draw", "obs"), ll[:, :, some])}),
    })
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = az_loo(tree, pointwise=True, var_name="y")
    assert got.n_data_points == len(rows) and got.n_samples == want.n_samples == n_chain * n_draw
    np.testing.assert_allclose(got.elpd_i.values[some], want.elpd_i.values, rtol=1e-9)
    np.testing.assert_allclose(got.pareto_k.values[some], want.pareto_k.values, rtol=1e-7, atol=1e-9)
    elpd_i = got.elpd_i.values
    assert got.elpd == pytest.approx(elpd_i.sum(), rel=1e-12)
    assert got.se == pytest.approx(np.sqrt(len(rows) * elpd_i.var(ddof=1)), rel=1e-9)
    assert got.p == pytest.approx(got.p_loo_i.values.sum(), rel=1e-12)
    assert np.isfinite(elpd_i).all() and (got.pareto_k.values < 0.7).all()
    table = lb.loo_compare(reduced, reduced, names=["a", "b"])
    assert list(table["elpd_diff"]) == [0.0, 0.0]
    # moment matching evaluates the joint density over the rows, which a Dask fit does not hold
    with pytest.raises(lb.FitError, match="moment_match=True.*Dask DataFrame"):
        reduced.loo(moment_match=True)

    flat = ll.reshape(n_chain * n_draw, -1)
    lppd = scipy.special.logsumexp(flat, axis=0) - np.log(flat.shape[0])
    p_waic = flat.var(axis=0, ddof=1)
    waic = reduced.waic()
    assert waic.n_data_points == len(rows) and waic.n_samples == n_chain * n_draw
    assert waic.elpd_waic == pytest.approx(float((lppd - p_waic).sum()), rel=1e-9)
    assert waic.p_waic == pytest.approx(float(p_waic.sum()), rel=1e-9)
    np.testing.assert_allclose(waic.pointwise["elpd_waic"], lppd - p_waic, rtol=1e-9)


def test_dask_loo_and_waic_after_load_say_what_to_do(fit_pair, tmp_path):
    back = lb.load(fit_pair[1].save(tmp_path / "dask.lmmb"))
    for call, what in ((back.loo, "PSIS-LOO"), (back.waic, "WAIC")):
        with pytest.raises(lb.FitError, match=f"{what} of a fit made from a Dask DataFrame.*read from a file"):
            call()


def test_loo_compare_refuses_dask_fits_of_other_data_with_the_same_n(client, fit_pair, frames):
    """Dask fits keep no response, only its fingerprint: other data with as many rows is still other data."""
    df, ddf = frames
    memory, reduced = fit_pair
    other = simulate(seed=7)  # new values, the same missing cells: 19996 complete rows too
    shuffled = df.assign(y=df["y"].to_numpy()[np.random.default_rng(1).permutation(len(df))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lb.DataWarning)
        fits = {name: quiet_fit(FORMULA, dd.from_pandas(frame, npartitions=4), PRIORS, sample_prior="only",
                                draws=100, seed=2)
                for name, frame in (("other", other), ("shuffled", shuffled), ("same", df))}
    for name in ("other", "shuffled"):  # the shuffled response has the same mean and variance
        assert fits[name].nobs == reduced.nobs
        with pytest.raises(lb.DataError, match="same number of observations but different responses"):
            lb.loo_compare(reduced, fits[name])
        assert not compare.same_data(memory, fits[name])
    # the same data, partitioned otherwise, in memory or on Dask: the same observations
    assert compare.same_data(reduced, fits["same"]) and compare.same_data(fits["same"], memory)
    assert compare.same_data(memory, reduced)


def test_loo_compare_of_a_dask_fit_and_an_in_memory_fit(fit_pair, monkeypatch):
    """Same data: the pointwise elpd of both fits line up row for row (the Dask partitions keep the row order)."""
    memory, reduced = fit_pair
    monkeypatch.setattr(compare, "WHOLE_MATRIX", 0)  # the vectorised chunked PSIS for the 20 000 rows in memory too
    table = lb.loo_compare({"memory": memory, "dask": reduced})
    assert set(table.index) == {"memory", "dask"}
    a, b = memory.loo(), reduced.loo()
    # the two posteriors differ by Monte Carlo error only: so do their pointwise elpd
    assert abs(a.elpd - b.elpd) < 2.0
    assert np.corrcoef(a.elpd_i.values, b.elpd_i.values)[0, 1] > 0.999
    assert table["se_diff"].max() < 1.0
