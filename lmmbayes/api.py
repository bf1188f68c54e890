"""The public entry points: the only place that runs the whole pipeline.

formula -> spec -> design -> resolved priors -> engine model -> sample -> Fit.
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import numpy as np

from .design import Design, build_design
from .distributed import build_dask_design, is_dask_frame
from .engines import collapsed, joint
from .errors import FitError
from .fit import Fit
from .formula import parse_formula
from .posterior import to_datatree
from .priors import Prior, PriorSet, PriorTable, as_prior_set, prior_table, resolve_priors
from .sampling import DEFAULT_TARGET_ACCEPT, SAMPLERS, SamplerConfig
from .scaling import standardise, unscale

FAMILIES = ("gaussian",)
ENGINES = {"joint": joint.run, "collapsed": collapsed.run}
METHODS = ("auto", *ENGINES)
SAMPLE_PRIOR = ("no", "only")


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise FitError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def _check_family(family: Any) -> str:
    if not isinstance(family, str) or family.lower() not in FAMILIES:
        raise FitError(f"Unknown family {family!r}; supported families: {list(FAMILIES)}.")
    return family.lower()


def sampler_config(chains: Any, draws: Any, tune: Any, seed: Any, target_accept: Any,
                   progress: Any, sampler: Any) -> SamplerConfig:
    """Validate the sampling options; FitError naming the bad one otherwise."""
    chains = _positive_int(chains, "chains")
    draws = _positive_int(draws, "draws")
    if isinstance(tune, bool) or not isinstance(tune, numbers.Integral) or tune < 0:
        raise FitError(f"tune must be a non-negative integer, got {tune!r}.")
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2**32))
    elif isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**63:
        raise FitError(f"seed must be None or a non-negative integer below 2**63, got {seed!r}.")
    if target_accept is not None and (isinstance(target_accept, bool) or not isinstance(target_accept, numbers.Real)
                                      or not 0 < float(target_accept) < 1):
        raise FitError("target_accept must be None (the engine's default) or a number strictly between 0 and 1, "
                       f"got {target_accept!r}.")
    if sampler not in SAMPLERS:
        raise FitError(f"Unknown sampler {sampler!r}; choose one of {list(SAMPLERS)}.")
    accept = None if target_accept is None else float(target_accept)
    return SamplerConfig(chains, draws, int(tune), int(seed), accept, bool(progress), sampler)


def fit(
    formula: str,
    data: Any,
    priors: Prior | PriorSet | Iterable[Prior] | None = None,
    *,
    family: str = "gaussian",
    chains: int = 4,
    draws: int = 1000,
    tune: int = 1000,
    seed: int | None = None,
    target_accept: float | None = None,
    progress: bool = True,
    method: str = "auto",
    sampler: str = "nutpie",
    sample_prior: str = "no",
) -> Fit:
    """Fit a Bayesian linear mixed model, brms style.

    Parameters
    ----------
    formula : str
        lme4/brms syntax, e.g. ``"y ~ x + (1 + x | g)"``.
    data : pandas.DataFrame, polars.DataFrame or dask.dataframe.DataFrame
        Never modified. Rows with missing values in the formula's columns
        are dropped with a warning (their labels: ``Fit.dropped_rows``).
        A Dask frame is reduced to cross-products partition by partition
        (:mod:`lmmbayes.distributed`) and fitted by the collapsed engine; the
        Fit's design then holds no rows (``fit.design.rows_in_memory`` is
        False).
    priors : Prior, sum of priors or list of priors, optional
        See :func:`lmmbayes.prior`; everything else gets brms's defaults.
    family : {"gaussian"}
    chains, draws, tune : int
        Number of chains, post-warmup draws per chain and warmup draws.
    seed : int, optional
        Makes the fit reproducible draw for draw.
    target_accept : float, optional
        NUTS's target acceptance (brms's ``adapt_delta``). None takes the
        engine's default (``DEFAULT_TARGET_ACCEPT``): 0.8 for the joint
        engine, as brms; 0.95 for the collapsed engine, whose few parameters
        include the log-sd of a variance that can sit near zero: at 0.8 its
        exponential tail sends about one trajectory in 4000 into a divergence,
        at 0.95 none in 60 x 4000 draws (and the collapsed posterior samples
        as fast per second).
    progress : bool
        Show the sampler's progress bar.
    method : {"auto", "collapsed", "joint"}
        The engine. ``"collapsed"`` integrates the random effects out and
        samples only β, σ, the sd's and correlations, then draws the random
        effects exactly (Gaussian models with one grouping factor or two nested
        ones); ``"joint"`` samples every random effect (non-centred). ``"auto"``
        picks collapsed where it applies (always for Dask data), joint otherwise.
    sampler : {"nutpie", "pymc"}
        nutpie (Rust NUTS, default) or PyMC's own NUTS.
    sample_prior : {"no", "only"}
        ``"only"`` skips NUTS and returns a Fit whose draws come from the
        priors alone (one chain of ``draws``), as brms's ``sample_prior =
        "only"``; every parameter then needs a proper prior (PriorError
        otherwise, naming those with flat priors).

    Returns
    -------
    Fit
    """
    family = _check_family(family)
    if method not in METHODS:
        raise FitError(f"Unknown method {method!r}; choose one of {list(METHODS)}.")
    config = sampler_config(chains, draws, tune, seed, target_accept, progress, sampler)
    if sample_prior not in SAMPLE_PRIOR:
        raise FitError(f"Unknown sample_prior {sample_prior!r}; choose one of {list(SAMPLE_PRIOR)}.")
    user_priors = as_prior_set(priors)
    t0 = time.perf_counter()
    design = _design(formula, data, method)
    resolved = resolve_priors(design, user_priors)
    t1 = time.perf_counter()
    if sample_prior == "only":  # forward-simulate the priors: no sampler, no engine choice
        from .priorsim import prior_idata

        config = replace(config, chains=1, tune=0, target_accept=None)
        idata = prior_idata(design, resolved, config.draws, config.seed)
        timings = {"design": t1 - t0, "prior": time.perf_counter() - t1}
        return Fit(design, resolved, family, "joint", config, idata, timings)
    if method == "auto":
        method = "collapsed" if not design.rows_in_memory or collapsed.applies(design) else "joint"
    if config.target_accept is None:
        config = replace(config, target_accept=DEFAULT_TARGET_ACCEPT[method])
    # Engines sample on a standardised response; draws come back on the user's scale.
    scaled_design, scaled_priors, scale = standardise(design, resolved)
    result = ENGINES[method](scaled_design, scaled_priors, config)
    t2 = time.perf_counter()
    raw, effects = unscale(result.raw, result.effects, design, scale)
    attrs = {"engine": method, "sampler": config.sampler, "seed": config.seed,
             "response_shift": scale.shift, "response_scale": scale.scale}
    idata = to_datatree(design, raw, effects, result.sample_stats, attrs)
    timings = {"design": t1 - t0, **result.timings, "postprocess": time.perf_counter() - t2}
    fitted = Fit(design, resolved, family, method, config, idata, timings)
    _warn_after_sampling(fitted)
    return fitted


def _design(formula: str, data: Any, method: str) -> Design:
    """The design of ``data``: in memory, or reduced on Dask for a Dask DataFrame."""
    spec = parse_formula(formula)
    if not is_dask_frame(data):
        return build_design(spec, data)
    if method == "joint":
        raise FitError('method="joint" needs the rows in memory, and a Dask DataFrame is reduced to '
                       'cross-products; use method="collapsed" (or "auto"), or fit a pandas frame '
                       "(ddf.compute()) with the joint engine.")
    return build_dask_design(spec, data)


def _warn_after_sampling(result: Fit) -> None:
    import warnings

    from .errors import ConvergenceWarning

    for text in result.warnings:
        warnings.warn(text, ConvergenceWarning, stacklevel=3)


def get_prior(formula: str, data: Any, family: str = "gaussian") -> PriorTable:
    """Every parameter a prior can be set on, with brms's data-scaled default.

    Returns
    -------
    pandas.DataFrame
        Columns ``prior, class, coef, group, source``. Printing it adds a
        note on brms's centred-intercept convention.
    """
    _check_family(family)
    return prior_table(_design(formula, data, "auto"))


default_prior = get_prior
