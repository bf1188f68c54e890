"""K-fold cross-validation (brms's kfold) against exact leave-one-out.

Witnesses: the exact leave-one-out predictive densities of a conjugate normal model (known SDs through
se(), a normal prior on the mean: each held-out row's predictive is N(m_-i, v_-i + s_i²)), and PSIS-LOO of
a random-intercept model. The refits of the conjugate model compile once per process and then hit the
cache (about 35 s for six), so that check runs in `make validate`; the collapsed random-intercept model
refits through the C kernel with no compile.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from conftest import quiet_fit

import lmmbayes as lb
from lmmbayes.workflow.kfold import split_grouped, split_random


def simulated(n_groups: int = 6, per: int = 3, seed: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), per)
    x = rng.normal(size=g.size)
    y = 1.0 + 0.8 * x + rng.normal(0, 0.7, n_groups)[g] + rng.normal(0, 0.5, g.size)
    return pd.DataFrame({"y": y, "x": x, "g": [f"g{k}" for k in g]})


PRIORS = [lb.prior("normal(0, 5)", class_="b"), lb.prior("normal(0, 2)", class_="sd"),
          lb.prior("normal(0, 2)", class_="sigma")]


@pytest.fixture(scope="module")
def small_fit():
    return quiet_fit("y ~ x + (1 | g)", simulated(), PRIORS, chains=2, draws=1000, seed=2)


def test_folds_are_balanced_and_grouped_folds_keep_groups():
    rng = np.random.default_rng(0)
    folds = split_random(4, 42, rng)
    assert sorted(np.bincount(folds)[1:]) == [10, 10, 11, 11]
    groups = np.repeat(np.arange(9), 5)
    gf = split_grouped(3, groups, rng)
    assert all(len(set(gf[groups == k])) == 1 for k in range(9))
    assert sorted(np.bincount(gf)[1:]) == [15, 15, 15]


def test_kfold_with_k_equal_n_is_leave_one_out(small_fit):
    """K = N refits leave one row out each: the same quantity PSIS-LOO estimates (its Pareto k are all good
    here). Tolerance: 0.1 per row and 0.5 in total (Monte Carlo error of 2 x 1000 draws per refit)."""
    data = simulated()
    kf = small_fit.kfold(K=len(data), seed=3)
    loo = small_fit.loo()
    assert (np.asarray(loo.pareto_k) < 0.7).all()
    np.testing.assert_allclose(kf.elpd_i, np.asarray(loo.elpd_i), atol=0.1)
    assert kf.elpd == pytest.approx(float(loo.elpd), abs=0.5)
    assert kf.K == len(data) and (np.sort(kf.folds) == np.arange(1, len(data) + 1)).all()
    assert "Based on 18-fold cross-validation." in str(kf) and "elpd_kfold" in str(kf)


def test_grouped_kfold_and_loo_compare(small_fit):
    data = simulated()
    grouped = small_fit.kfold(K=3, folds="grouped", group="g", seed=5)
    assert all(len(set(grouped.folds[data["g"] == g])) == 1 for g in data["g"].unique())
    # leaving whole groups out predicts new groups: worse than leaving single rows out
    rows = small_fit.kfold(K=3, seed=5)
    assert grouped.elpd < rows.elpd
    table = lb.loo_compare({"grouped": grouped, "rows": rows})
    assert list(table.index) == ["rows", "grouped"] and table["elpd_diff"].iloc[0] == 0.0
    assert {"elpd_kfold", "se_elpd_kfold", "p_kfold", "kfoldic"} <= set(table.columns)


def test_kfold_refuses_bad_arguments(small_fit):
    with pytest.raises(lb.FitError, match="K must be between 2"):
        small_fit.kfold(K=1)
    with pytest.raises(lb.FitError, match="group= the name of a column"):
        small_fit.kfold(K=3, folds="grouped", group="nope")
    with pytest.raises(lb.FitError, match="folds must be None"):
        small_fit.kfold(K=3, folds="stratified-ish")
    with pytest.raises(lb.FitError, match="one fold number 1..K"):
        small_fit.kfold(K=3, folds=np.ones(18, dtype=int))
    with pytest.raises(lb.DataError, match="complete rows"):
        small_fit.kfold(K=3, data=simulated().iloc[:10])


@pytest.mark.slow  # six refits of a compiled model (about 35 s): `make validate`
def test_kfold_equals_the_exact_leave_one_out_of_a_conjugate_model():
    y = np.array([0.9, 0.2, 1.4, 0.6, -0.1, 1.1])
    s = np.array([1.0, 0.8, 1.2, 1.0, 0.9, 1.1])
    tau0 = 1.5
    fit = quiet_fit("y | se(s) ~ 1", pd.DataFrame({"y": y, "s": s}), [lb.prior(f"normal(0, {tau0})", class_="Intercept")],
                    chains=2, draws=4000, seed=3)
    kf = fit.kfold(K=6, seed=1)
    exact = []
    for i in range(6):
        keep = np.arange(6) != i
        prec = 1 / tau0**2 + (1 / s[keep] ** 2).sum()
        m = (y[keep] / s[keep] ** 2).sum() / prec
        exact.append(scipy.stats.norm.logpdf(y[i], m, np.sqrt(1 / prec + s[i] ** 2)))
    np.testing.assert_allclose(kf.elpd_i, exact, atol=0.03)
