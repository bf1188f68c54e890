"""The one place that runs a sampler: nutpie by default, PyMC's NUTS as fallback.

Returns plain numpy arrays of the requested variables and of the sampler
statistics under ArviZ's standard names, with compile and sampling time
measured separately.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class SamplerConfig:
    """What the user asked of the sampler (validated by :mod:`lmmbayes.api`)."""

    chains: int = 4
    draws: int = 1000
    tune: int = 1000
    seed: int = 0
    target_accept: float = 0.8
    progress: bool = True
    sampler: str = "nutpie"


@dataclass(frozen=True)
class RawTrace:
    """Posterior arrays (chain, draw, ...) by PyMC name, sampler statistics and timings."""

    posterior: dict[str, np.ndarray]
    sample_stats: dict[str, np.ndarray]
    timings: dict[str, float] = field(default_factory=dict)


def sample(model: pm.Model, config: SamplerConfig, var_names: list[str]) -> RawTrace:
    """Sample ``model`` and return the variables in ``var_names``.

    Raises
    ------
    FitError
        If the sampler fails (the message keeps the sampler's own reason).
    """
    if config.sampler == "nutpie":
        return _sample_nutpie(model, config, var_names)
    return _sample_pymc(model, config, var_names)


def _sample_nutpie(model: pm.Model, config: SamplerConfig, var_names: list[str]) -> RawTrace:
    import nutpie

    t0 = time.perf_counter()
    try:
        # fastmath lets LLVM reassociate differently in a fresh compile than in
        # code loaded from PyTensor's numba cache, so the same seed would give
        # different draws in a cold and a warm process; exact arithmetic keeps
        # fits reproducible bit for bit across processes.
        with pytensor.config.change_flags(numba__fastmath=False):
            compiled = nutpie.compile_pymc_model(model, backend="numba", var_names=var_names)
    except Exception as exc:
        raise FitError(f"nutpie could not compile the model: {exc}") from exc
    t1 = time.perf_counter()
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
    t2 = time.perf_counter()
    post = trace["posterior"]
    stats = trace["sample_stats"]
    return RawTrace(
        posterior={n: np.asarray(post[n].values) for n in var_names if n in post},
        sample_stats={new: np.asarray(stats[old].values) for old, new in _NUTPIE_STATS.items() if old in stats},
        timings={"compile": t1 - t0, "sample": t2 - t1},
    )


def _sample_pymc(model: pm.Model, config: SamplerConfig, var_names: list[str]) -> RawTrace:
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
