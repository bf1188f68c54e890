"""The one place that runs the whole pipeline: formula -> spec -> design -> priors -> plan -> engine -> result.

`run` is what `lmmbayes.fit` does (and what simulation-based
calibration, k-fold cross-validation and ``update`` call again); it returns
a `FitResult`. Every argument is checked here, with
one rule per kind of argument (`lmmbayes._validate`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from . import _validate as check
from .design import Design, build_design
from .design.dask import build_dask_design, is_dask_frame
from .engines import ENGINES
from .engines.base import EngineResult
from .engines.plan import Plan
from .engines.plan import plan as make_plan
from .engines.sampling import DEFAULT_TARGET_ACCEPT, SAMPLERS, SamplerConfig
from .errors import DataError, FitError, InaccurateIntegration
from .families import Family
from .families import family as make_family
from .priors import Prior, PriorSet, ResolvedPriors, as_prior_set, resolve_priors
from .results.model import FitResult
from .results.posterior import to_datatree
from .spec import parse_formula

METHODS = ("auto", *ENGINES)
SAMPLE_PRIOR = ("no", "yes", "only")


@dataclass(frozen=True)
class Options:
    """Validated options of `lmmbayes.fit`."""

    family: Family
    method: str
    config: SamplerConfig
    sample_prior: str


def options(family: Any = "gaussian", link: Any = None, chains: Any = 4, draws: Any = 1000, tune: Any = 1000,
            seed: Any = None, target_accept: Any = None, progress: Any = True, method: Any = "auto",
            sampler: Any = "nutpie", sample_prior: Any = "no") -> Options:
    """Check every option of `lmmbayes.fit`; FitError naming the first bad one."""
    fam = make_family(family, link)
    method = check.choice(method, "method", METHODS, error=FitError)
    config = SamplerConfig(
        chains=check.count(chains, "chains", error=FitError), draws=check.count(draws, "draws", error=FitError),
        tune=check.count(tune, "tune", minimum=0, error=FitError), seed=check.seed(seed, error=FitError),
        target_accept=check.probability(target_accept, "target_accept", error=FitError, allow_none=True),
        progress=check.flag(progress, "progress", error=FitError),
        sampler=check.choice(sampler, "sampler", SAMPLERS, error=FitError))
    sample_prior = check.choice(sample_prior, "sample_prior", SAMPLE_PRIOR, error=FitError)
    return Options(fam, method, config, sample_prior)


def design_of(formula: Any, data: Any, fam: Family, method: str = "auto", *, fitting: bool = True) -> Design:
    """The design of ``data``: in memory, or reduced on Dask for a Dask DataFrame."""
    spec = parse_formula(formula)
    if not is_dask_frame(data):
        return build_design(spec, fam, data, fitting=fitting)
    if method == "joint":
        raise FitError('method="joint" needs the rows in memory, and a Dask DataFrame is reduced to cross-products; '
                       'use method="collapsed" (or "auto"), or fit a pandas frame (ddf.compute()) with the joint '
                       "engine.")
    return build_dask_design(spec, fam, data)


def check_identified(design: Design, resolved: ResolvedPriors) -> None:
    """DataError for a population-level column that no data can inform while its prior is flat."""
    st = design.stats
    spread = st.x_sd if design.centred_intercept else st.x_rms
    for j, name in enumerate(design.coef_names):
        if not spread[j] > 0 and resolved.get("b", name).is_flat:
            what = "constant, so the intercept already carries it" if design.centred_intercept else "always zero"
            raise DataError(f"The population-level column '{name}' is {what}: the data cannot inform its "
                            f"coefficient, and its prior is flat (improper). Drop it from the formula, or give it a "
                            f"proper prior, e.g. lb.prior('normal(0, 1)', class_='b', coef={name!r}).")


def choose_engine(design: Design, method: str, plan: Plan | None = None, sampler: str = "nutpie") -> str:
    """The engine ``method`` asks for (``auto``: collapsed where it applies and pays, else joint)."""
    from .engines import collapsed, joint

    if method == "auto":
        if not design.rows_in_memory:
            method = "collapsed"
        else:
            method = "collapsed" if collapsed.preferred(design, plan, sampler) else "joint"
    module = collapsed if method == "collapsed" else joint
    ok, why = module.applies(design)
    if not ok:
        other = ' Use method="joint".' if method == "collapsed" and design.rows_in_memory else ""
        raise FitError(f"The {method} engine does not apply to {design.spec.formula!r}: {why}.{other}")
    return method


def run(formula: Any, data: Any, priors: Prior | PriorSet | Iterable[Prior] | None, opts: Options, *,
        data_name: str = "data") -> FitResult:
    """Fit: the whole pipeline, no warnings issued (the caller reports them)."""
    user_priors = as_prior_set(priors)
    t0 = time.perf_counter()
    design = design_of(formula, data, opts.family, opts.method)
    resolved = resolve_priors(design, user_priors)
    plan = make_plan(design, resolved)
    t1 = time.perf_counter()
    config = opts.config
    if opts.sample_prior == "only":  # forward-simulate the priors: no sampler, no engine choice
        from .engines.prior import draw

        config = replace(config, chains=1, tune=0, target_accept=None)
        draws = draw(design, resolved, plan, config.draws, config.seed)
        attrs = {"engine": "prior", "sample_prior": "only", "seed": config.seed}
        idata = to_datatree(design, draws, {}, attrs)
        timings = {"design": t1 - t0, "prior": time.perf_counter() - t1}
        return FitResult(design, resolved, "prior", config, idata, timings, {}, data_name)
    check_identified(design, resolved)
    method = choose_engine(design, opts.method, plan, config.sampler)
    try:
        result = _engine_run(method, design, plan, config, auto=opts.method == "auto")
    except InaccurateIntegration as refused:  # measured before sampling: one fit, on the joint engine
        method = "joint"
        result = _engine_run(method, design, plan, config)
        result.info["fallback"] = f"fitted on the joint engine because, before sampling, {refused.why}"
    if result.info.get("quadrature_ok") is False and opts.method == "auto":
        # the quadrature's own check failed: pay for a second fit, on the engine that needs no approximation
        why = str(result.info.get("quadrature_check", ""))
        method = "joint"
        result = _engine_run(method, design, plan, config)
        result.info["fallback"] = f"refitted on the joint engine because the collapsed engine's {why}"
    config = replace(config, target_accept=config.target_accept or DEFAULT_TARGET_ACCEPT[method])
    t2 = time.perf_counter()
    attrs = {"engine": method, "sampler": config.sampler, "seed": config.seed}
    idata = to_datatree(design, result.draws, result.sample_stats, attrs)
    if opts.sample_prior == "yes":  # prior draws beside the posterior, as many (brms's prior_draws)
        from .engines.prior import draw

        prior = draw(design, resolved, plan, config.chains * config.draws, config.seed, proper_only=True)
        idata["prior"] = to_datatree(design, prior, {}, {"sample_prior": "yes"})["posterior"]
    timings = {"design": t1 - t0, **result.timings, "postprocess": time.perf_counter() - t2}
    return FitResult(design, resolved, method, config, idata, timings, dict(result.info), data_name)


def _engine_run(method: str, design: Design, plan: Plan, config: SamplerConfig, auto: bool = False) -> EngineResult:
    """Run one engine, with its default target acceptance where the user left it unset. With ``auto`` the
    collapsed engine may refuse, before sampling, an integration it measured to be inaccurate
    (`InaccurateIntegration`)."""
    if config.target_accept is None:
        config = replace(config, target_accept=DEFAULT_TARGET_ACCEPT[method])
    if method == "collapsed":
        from .engines import collapsed

        return collapsed.run(design, plan, config, refuse_inaccurate=auto)
    from .engines import joint

    return joint.run(design, plan, config)


def data_name_of(data: Any) -> str:
    """A name for the data in the summary header (a DataFrame's ``attrs['name']`` where set)."""
    attrs = getattr(data, "attrs", None)
    name = attrs.get("name") if isinstance(attrs, dict) else None
    return name if isinstance(name, str) and name else "data"


__all__ = [
    "METHODS",
    "SAMPLE_PRIOR",
    "Options",
    "check_identified",
    "choose_engine",
    "data_name_of",
    "design_of",
    "options",
    "run",
]
