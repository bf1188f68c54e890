"""The one place that runs a sampler: nutpie by default, PyMC's NUTS as fallback.

Returns plain numpy arrays of the requested variables and of the sampler
statistics under ArviZ's standard names, with compile and sampling time
measured separately.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pymc as pm
import pytensor

from .errors import FitError

SAMPLERS = ("nutpie", "pymc")

# nutpie's sample-stat names -> ArviZ's (PyMC's) names.
_NUTPIE_STATS = {
    "diverging": "diverging",
    "depth": "tree_depth",
    "maxdepth_reached": "reached_max_treedepth",
    "step_size": "step_size",
    "energy": "energy",
    "logp": "lp",
    "mean_tree_accept": "acceptance_rate",
    "n_steps": "n_steps",
}
_PYMC_STATS = ("diverging", "tree_depth", "reached_max_treedepth", "step_size", "energy", "lp",
               "acceptance_rate", "n_steps")


#: NUTS's target acceptance when the user leaves it unset, by engine: brms's
#: adapt_delta for the joint model; higher for the collapsed one, where it
#: removes the rare divergences from the exponential tail of a near-zero sd's
#: log at no cost per step (the README gives the measurements).
DEFAULT_TARGET_ACCEPT = {"joint": 0.8, "collapsed": 0.95}


@dataclass(frozen=True)
class SamplerConfig:
    """What the user asked of the sampler (validated by :mod:`lmmbayes.api`)."""

    chains: int = 4
    draws: int = 1000
    tune: int = 1000
    seed: int = 0
    target_accept: float | None = None  # None until lmmbayes.fit resolves the engine's default
    progress: bool = True
    sampler: str = "nutpie"


@dataclass(frozen=True)
class RawTrace:
    """Posterior arrays (chain, draw, ...) by PyMC name, sampler statistics and timings."""

    posterior: dict[str, np.ndarray]
    sample_stats: dict[str, np.ndarray]
    timings: dict[str, float] = field(default_factory=dict)


def sample(model: pm.Model, config: SamplerConfig, var_names: list[str],
           start: dict[str, np.ndarray] | None = None) -> RawTrace:
    """Sample ``model`` and return the variables in ``var_names``.

    Raises
    ------
    FitError
        If the sampler fails (the message keeps the sampler's own reason).
    """
    if config.sampler == "nutpie":
        return _sample_nutpie(model, config, var_names, start)
    return _sample_pymc(model, config, var_names, start)


@contextmanager
def _private_tempdir() -> Iterator[None]:
    """Route temporary files into a directory removed afterwards.

    PyTensor's numba backend writes every generated function's source to a
    temporary file and never deletes it; compiling inside a private
    directory leaves nothing behind, also when the user interrupts.
    """
    previous = tempfile.tempdir
    with tempfile.TemporaryDirectory(prefix="lmmbayes-") as private:
        tempfile.tempdir = private
        try:
            yield
        finally:
            tempfile.tempdir = previous


def compile_nutpie(model: pm.Model, var_names: list[str],
                   start: dict[str, np.ndarray] | None = None) -> Any:
    """Compile ``model`` for nutpie once; :func:`sample_compiled` can reuse it.

    Models whose response is a ``pm.Data`` container called ``y_obs`` can be
    re-sampled for a new response with ``compiled.with_data(y_obs=...)``
    without compiling again (what simulation-based calibration needs).
    """
    import nutpie

    try:
        # fastmath lets LLVM reassociate differently in a fresh compile than in
        # code loaded from PyTensor's numba cache, so the same seed would give
        # different draws in a cold and a warm process; exact arithmetic keeps
        # fits reproducible bit for bit across processes.
        with pytensor.config.change_flags(numba__fastmath=False), _private_tempdir():
            return nutpie.compile_pymc_model(model, backend="numba", var_names=var_names,
                                             initial_points=start or None)
    except Exception as exc:
        raise FitError(f"nutpie could not compile the model: {exc}") from exc


def sample_compiled(compiled: Any, config: SamplerConfig, var_names: list[str]) -> RawTrace:
    """Run nutpie on a compiled model."""
    import nutpie

    t0 = time.perf_counter()
    try:
        trace = nutpie.sample(
            compiled,
            chains=config.chains,
            draws=config.draws,
            tune=config.tune,
            seed=config.seed,
            cores=min(config.chains, os.cpu_count() or 1),
            target_accept=config.target_accept,
            progress_bar=config.progress,
            save_warmup=False,
        )
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        raise FitError(f"nutpie failed while sampling: {exc}") from exc
    post = trace["posterior"]
    stats = trace["sample_stats"]
    got = post.sizes.get("draw", 0)
    if got < config.draws:
        # nutpie catches Ctrl-C and returns the draws so far; a Fit that claims
        # more draws than it holds would be silently wrong, so abort instead.
        raise KeyboardInterrupt(f"sampling interrupted after {got} of {config.draws} draws per chain")
    return RawTrace(
        posterior={n: np.asarray(post[n].values) for n in var_names if n in post},
        sample_stats={new: np.asarray(stats[old].values) for old, new in _NUTPIE_STATS.items() if old in stats},
        timings={"sample": time.perf_counter() - t0},
    )


def _sample_nutpie(model: pm.Model, config: SamplerConfig, var_names: list[str],
                   start: dict[str, np.ndarray] | None) -> RawTrace:
    t0 = time.perf_counter()
    compiled = compile_nutpie(model, var_names, start)
    compile_s = time.perf_counter() - t0
    trace = sample_compiled(compiled, config, var_names)
    return RawTrace(trace.posterior, trace.sample_stats, {"compile": compile_s, **trace.timings})


def _sample_pymc(model: pm.Model, config: SamplerConfig, var_names: list[str],
                 start: dict[str, np.ndarray] | None) -> RawTrace:
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # PyMC's own convergence prints; we report ours
            idata = pm.sample(
                draws=config.draws,
                tune=config.tune,
                chains=config.chains,
                cores=1,
                random_seed=config.seed,
                target_accept=config.target_accept,
                progressbar=config.progress,
                nuts_sampler="pymc",
                compute_convergence_checks=False,
                var_names=var_names,
                initvals=start or None,
                model=model,
            )
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        raise FitError(f"PyMC's NUTS failed while sampling: {exc}") from exc
    t1 = time.perf_counter()
    post = idata["posterior"]
    stats = idata["sample_stats"]
    return RawTrace(
        posterior={n: np.asarray(post[n].values) for n in var_names if n in post},
        sample_stats={n: np.asarray(stats[n].values) for n in _PYMC_STATS if n in stats},
        timings={"compile": 0.0, "sample": t1 - t0},
    )
