"""brms's ``kfold``: K-fold cross-validation by refitting the model without each fold.

The rows are split into K folds (at random and balanced, as the loo
package's ``kfold_split_random``; by whole groups with ``folds="grouped"``,
as ``kfold_split_grouped``; or as the user numbers them). For each fold the
model is refitted to the other rows (same formula, family, user priors,
engine and sampler settings; the data-dependent default priors are
recomputed from the training rows, as any fit of them would have them), and each held-out row gets its log
predictive density, ``log mean_s p(y_i | theta_s)``, with levels absent from
the training rows drawn as brms's ``allow_new_levels = TRUE`` does. Then

    elpd_kfold = sum_i elpd_i,  p_kfold = lpd - elpd_kfold,  kfoldic = -2 elpd_kfold

with ``lpd`` the full fit's log pointwise predictive density and the SEs
``sqrt(N var_i(.))`` of the pointwise terms, as ``loo::kfold``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import logsumexp

from .. import _validate as check
from ..errors import FitError
from ..results.model import FitResult
from .display import pre_html
from .linpred import linear_predictor, params
from .loglik import evaluator
from .refit import fitted_data, user_priors

#: How ``folds`` may be given (besides an array of fold numbers).
FOLD_KINDS = ("random", "grouped")


@dataclass(frozen=True, eq=False)
class KFold:
    """The result of `kfold`: brms's ``kfold`` object.

    Attributes
    ----------
    elpd, se : float
        ``elpd_kfold`` and its SE.
    p, se_p : float
        ``p_kfold`` (the full fit's lpd minus elpd_kfold) and its SE.
    elpd_i : (N,) array
        Each row's held-out log predictive density.
    folds : (N,) int array
        Each row's fold, 1..K.
    K : int
    fingerprint : str
        Of the response, so `loo_compare` can check two results are of the same data.
    formula : str
        The model's formula (`loo_compare`'s default label).
    """

    elpd: float
    se: float
    p: float
    se_p: float
    elpd_i: np.ndarray
    folds: np.ndarray
    K: int
    fingerprint: str
    formula: str = ""

    @property
    def kfoldic(self) -> float:
        return -2.0 * self.elpd

    def estimates(self) -> pd.DataFrame:
        """brms's ``estimates`` table: ``elpd_kfold``, ``p_kfold``, ``kfoldic`` with their SEs."""
        return pd.DataFrame({"Estimate": [self.elpd, self.p, self.kfoldic], "SE": [self.se, self.se_p, 2 * self.se]},
                            index=["elpd_kfold", "p_kfold", "kfoldic"])

    def __str__(self) -> str:
        table = self.estimates().to_string(float_format=lambda v: f"{v:.1f}")
        return f"\nBased on {self.K}-fold cross-validation.\n\n{table}\n"

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        return pre_html(self)


def split_random(K: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Balanced random folds 1..K (loo's ``kfold_split_random``): sizes differ by at most one."""
    return rng.permutation(np.resize(np.arange(1, K + 1), n))


def split_grouped(K: int, groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Folds 1..K that keep each group's rows together (loo's ``kfold_split_grouped``)."""
    labels, codes = np.unique(groups.astype(str), return_inverse=True)
    if labels.size < K:
        raise FitError(f"folds='grouped' needs at least K = {K} groups, but the grouping column has {labels.size}; "
                       "choose a smaller K.")
    return split_random(K, labels.size, rng)[codes]


def lpd(fit: FitResult) -> np.ndarray:
    """Each fitted row's log pointwise predictive density, log mean_s p(y_i | theta_s), in row chunks."""
    rows = fit.design.require_rows("kfold", "Cross-validate a fit of the data in memory.")
    ev = evaluator(fit)
    return ev.reduce(rows, lambda ll: (logsumexp(ll, axis=0) - math.log(ll.shape[0]),))[0]


def _held_out_elpd(fit: FitResult, frame: pd.DataFrame, seed: int) -> np.ndarray:
    """log mean_s p(y_i | theta_s) of held-out rows, new grouping levels drawn as brms's default."""
    design = fit.design
    rows = design.encoder.encode(frame, what="held-out rows")
    p = params(fit.posterior, design)
    eta = linear_predictor(p, rows, design.factors, centred=design.intercept_in_eta,
                           rng=np.random.default_rng([seed, 17]))
    assert rows.y is not None
    ll = fit.family.logpdf(rows.y[None, :], eta, {k: v[:, None] for k, v in p.dpars.items()}, rows.extra)
    if rows.weights is not None:
        ll = ll * rows.weights[None, :]
    return logsumexp(ll, axis=0) - math.log(ll.shape[0])


def kfold(fit: FitResult, K: int = 10, *, folds: Any = None, group: str | None = None, data: Any = None,
          seed: int | None = None, chains: int | None = None, draws: int | None = None,
          tune: int | None = None) -> KFold:
    """K-fold cross-validation (brms's ``kfold``).

    Parameters
    ----------
    fit : Fit
    K : int
        Number of folds (at least 2, at most the number of rows; K = N is exact leave-one-out).
    folds : None, "random", "grouped" or array of int
        None or ``"random"``: balanced random folds; ``"grouped"``: whole
        groups of the column ``group`` left out together (brms's ``folds =
        "grouped"``); an array: each row's fold 1..K, in the order of the
        fitted rows.
    group : str, optional
        The grouping column for ``folds="grouped"``.
    data : pandas.DataFrame, optional
        The data the model was fitted to; needed where the fit cannot rebuild
        it (a transformed response, weights, categorical responses).
    seed : int, optional
        Seeds the folds, the refits and the new levels' effects.
    chains, draws, tune : int, optional
        Sampler settings of the refits; the fit's own by default.

    Returns
    -------
    KFold

    Raises
    ------
    FitError
        Bad K, folds or group, or a fit whose data must be passed.
    """
    from .. import pipeline

    if fit.prior_only:
        raise FitError("kfold needs a fit of the data, not draws from the prior (sample_prior='only').")
    seed = check.seed(seed, error=FitError)
    rng = np.random.default_rng([0 if seed is None else seed, 23])
    frame = fitted_data(fit, data, "kfold")
    n = len(frame)
    K = check.count(K, "K (number of folds)", error=FitError)
    if K < 2 or K > n:
        raise FitError(f"K must be between 2 and the number of rows ({n}), got {K}.")
    if folds is None or (isinstance(folds, str) and folds == "random"):
        fold = split_random(K, n, rng)
    elif isinstance(folds, str) and folds == "grouped":
        if not isinstance(group, str) or group not in frame.columns:
            raise FitError(f"folds='grouped' needs group= the name of a column the formula uses, got {group!r}; "
                           f"columns: {sorted(map(str, frame.columns))}.")
        fold = split_grouped(K, frame[group].to_numpy(), rng)
    elif isinstance(folds, str):
        raise FitError(f"folds must be None, one of {list(FOLD_KINDS)} or an array of fold numbers, got {folds!r}.")
    else:
        fold = np.asarray(folds)
        if fold.shape != (n,) or not np.issubdtype(fold.dtype, np.integer) or set(np.unique(fold)) != set(
                range(1, K + 1)):
            raise FitError(f"folds as an array must hold one fold number 1..K (K = {K}) per fitted row ({n}), each "
                           "number used.")
    c = fit.config
    opts = pipeline.options(family=fit.family, chains=chains or c.chains, draws=draws or c.draws,
                            tune=c.tune if tune is None else tune, seed=seed, target_accept=c.target_accept,
                            progress=False, method=fit.engine, sampler=c.sampler)
    user = user_priors(fit)
    elpd_i = np.empty(n)
    for k in range(1, K + 1):
        test = fold == k
        refit = pipeline.run(fit.formula, frame.loc[~test], user, opts)
        elpd_i[test] = _held_out_elpd(refit, frame.loc[test], 0 if seed is None else seed + k)
    lpd_i = lpd(fit)
    p_i = lpd_i - elpd_i
    root_n = math.sqrt(n)
    return KFold(float(elpd_i.sum()), float(root_n * elpd_i.std(ddof=1)), float(p_i.sum()),
                 float(root_n * p_i.std(ddof=1)), elpd_i, fold.astype(np.int64), K, fit.design.stats.fingerprint,
                 fit.formula)
