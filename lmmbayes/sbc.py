"""Simulation-based calibration (Talts, Betancourt, Simpson, Vehtari and Gelman 2018).

Draw parameters from the prior, simulate a response from them on the user's
design (same predictors and groups), fit, and record the rank of each true
value among the posterior draws. If the sampler computes the posterior
correctly, every rank is uniform on 0..L. The model is compiled once; each
simulation only swaps the response (nutpie's ``with_data``), so hundreds of
fits take minutes, not hours.

The same runs give the coverage of central posterior intervals: with truths
drawn from the prior, a calibrated 90% interval covers its truth 90% of the
time.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pymc as pm
from scipy import stats

from .design import build_design
from .engines.common import hyper_names
from .engines.joint import build_model
from .errors import FitError, PriorError
from .formula import parse_formula
from .posterior import flat_draws, to_datatree
from .priors import Prior, PriorSet, as_prior_set, resolve_priors
from .sampling import SamplerConfig, compile_nutpie, sample_compiled


@dataclass(frozen=True)
class SBCResult:
    """Ranks of the true values among posterior draws, one row per simulation.

    Attributes
    ----------
    parameters : tuple of str
        brms names of the ranked parameters.
    ranks : numpy.ndarray
        (n_sims, K) integers in 0..n_draws.
    n_draws : int
        Posterior draws each rank is computed against (after thinning).
    covered : numpy.ndarray
        (n_sims, K) booleans: did the central ``level`` interval cover the truth.
    level : float
    divergences : numpy.ndarray
        (n_sims,) divergent transitions per simulation.
    """

    parameters: tuple[str, ...]
    ranks: np.ndarray
    n_draws: int
    covered: np.ndarray
    level: float
    divergences: np.ndarray

    def uniformity(self, bins: int = 10) -> pd.DataFrame:
        """Chi-square test of uniform ranks per parameter (rank histogram with ``bins`` bins)."""
        edges = np.linspace(0, self.n_draws + 1, bins + 1)
        rows = []
        for k, name in enumerate(self.parameters):
            counts, _ = np.histogram(self.ranks[:, k], bins=edges)
            chi2, p = stats.chisquare(counts)
            rows.append({"parameter": name, "chi2": chi2, "p_value": p,
                         "coverage": self.covered[:, k].mean()})
        return pd.DataFrame(rows).set_index("parameter")

    def __str__(self) -> str:
        table = self.uniformity()
        return (f"SBC: {self.ranks.shape[0]} simulations, ranks out of {self.n_draws} draws, "
                f"{int(self.divergences.sum())} divergences in all\n"
                f"{table.to_string(float_format=lambda v: f'{v:.3f}')}")


def _flat_hyper(design: Any, raw: dict[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    # to_datatree wants random effects; SBC ranks hyperparameters only.
    shape = raw["sigma"].shape
    effects = {f.name: np.zeros(shape + (f.n_levels, len(f.terms))) for f in design.factors}
    tree = to_datatree(design, raw, effects, {}, {})
    return flat_draws(tree["posterior"].to_dataset(), design, random=False)


def simulation_based_calibration(
    formula: str,
    data: Any,
    priors: Prior | PriorSet | Iterable[Prior] | None = None,
    *,
    n_sims: int = 100,
    chains: int = 1,
    draws: int = 400,
    tune: int = 400,
    thin: int = 4,
    level: float = 0.9,
    target_accept: float = 0.9,
    seed: int = 0,
    method: str = "joint",
) -> SBCResult:
    """Run SBC for a model on the predictors and groups of ``data``.

    Parameters
    ----------
    formula, data, priors
        As for :func:`lmmbayes.fit`; every prior must be proper (the default
        flat prior on ``b`` is not: set one).
    n_sims : int
        Number of simulated data sets.
    chains, draws, tune, target_accept
        Sampler settings per simulation.
    thin : int
        Keep every ``thin``-th draw so that ranks are computed against
        nearly independent draws (autocorrelation makes rank histograms U-shaped).
    level : float
        Central interval whose coverage is recorded.
    seed : int
    method : {"joint", "collapsed"}
        The engine under test. ``"joint"`` compiles the model once and
        re-samples it per data set. ``"collapsed"`` runs the whole of
        :func:`lmmbayes.fit` (reduction, standardisation, sampling, exact
        random-effect draws, the map back to the data's scale) per data set.

    Returns
    -------
    SBCResult
    """
    design = build_design(parse_formula(formula), data)
    resolved = resolve_priors(design, as_prior_set(priors))
    flat = [f"class={s.class_!r}" + (f", coef={s.coef!r}" if s.coef else "")
            for s, p in resolved.table if p.is_flat]
    if flat:
        raise PriorError(f"Simulation needs proper priors; these are flat: {flat}. Set them with lb.prior().")
    model = build_model(design, resolved)
    names = hyper_names(design, model)
    pymc_log = logging.getLogger("pymc")
    level_before = pymc_log.level
    pymc_log.setLevel(logging.WARNING)  # PyMC logs which variables it samples
    try:
        prior_draws = pm.sample_prior_predictive(draws=n_sims, model=model, random_seed=seed,
                                                 var_names=names + ["y"])
    finally:
        pymc_log.setLevel(level_before)
    raw_prior = {n: np.asarray(prior_draws["prior"][n].values) for n in names}
    params, truths = _flat_hyper(design, raw_prior)  # truths: (1, n_sims, K)
    y_sims = np.asarray(prior_draws["prior_predictive"]["y"].values)[0]
    if method not in ("joint", "collapsed"):
        raise FitError(f"Unknown SBC method {method!r}; choose 'joint' or 'collapsed'.")
    compiled = compile_nutpie(model, names) if method == "joint" else None
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    ranks, covered, divergences = [], [], []
    for i in range(n_sims):
        if compiled is not None:
            config = SamplerConfig(chains, draws, tune, seed + 1 + i, target_accept, False, "nutpie")
            trace = sample_compiled(compiled.with_data(y_obs=y_sims[i]), config, names)
            _, post = _flat_hyper(design, trace.posterior)
            n_div = int(trace.sample_stats.get("diverging", np.zeros(1)).sum())
        else:
            post, n_div = _collapsed_fit(formula, data, design, priors, y_sims[i], params,
                                         dict(chains=chains, draws=draws, tune=tune, seed=seed + 1 + i,
                                              target_accept=target_accept))
        post = post.reshape(-1, post.shape[-1])[::thin]
        truth = truths[0, i]
        ranks.append((post < truth).sum(axis=0))
        lo, hi = np.quantile(post, [lo_q, hi_q], axis=0)
        covered.append((lo <= truth) & (truth <= hi))
        divergences.append(n_div)
    n_kept = len(range(0, chains * draws, thin))
    return SBCResult(tuple(params), np.array(ranks), n_kept, np.array(covered), level, np.array(divergences))


def _collapsed_fit(formula: str, data: Any, design: Any, priors: Any, y: np.ndarray, params: list[str],
                   options: dict[str, Any]) -> tuple[np.ndarray, int]:
    """Fit one simulated response with the collapsed engine through :func:`lmmbayes.fit`."""
    from .api import fit
    from .design import as_pandas

    frame = as_pandas(data)
    frame = frame.drop(index=list(design.dropped_index)).assign(**{design.spec.response: y})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SBC counts divergences itself
        result = fit(formula, frame, priors, method="collapsed", progress=False, **options)
    names, draws = flat_draws(result.posterior, result.design, random=False)
    keep = [names.index(p) for p in params]
    return draws[..., keep], int(result.idata["sample_stats"]["diverging"].values.sum())
