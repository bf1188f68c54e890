"""The one place that runs a sampler: nutpie by default, PyMC's NUTS as an alternative.

Returns plain numpy arrays of the requested variables and of the sampler
statistics under ArviZ's standard names, with compile and sampling time
measured separately. Third-party chatter (PyMC's log lines, ArviZ's shape
warnings) is silenced here; interruptions never yield a partial fit; every
temporary file a compiler writes goes into a private directory removed
afterwards.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import FitError

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

#: nutpie's warm-up needs at least this many draws (with 0 its Rust core panics).
NUTPIE_MIN_TUNE = 1


@dataclass(frozen=True)
class SamplerConfig:
    """What the user asked of the sampler (validated by `lmmbayes.fit`)."""

    chains: int = 4
    draws: int = 1000
    tune: int = 1000
    seed: int = 0
    target_accept: float | None = None  # None until the engine's default is resolved
    progress: bool = True
    sampler: str = "nutpie"


@dataclass(frozen=True)
class RawTrace:
    """Posterior arrays (chain, draw, ...) by name, sampler statistics and timings."""

    posterior: dict[str, np.ndarray]
    sample_stats: dict[str, np.ndarray]
    timings: dict[str, float] = field(default_factory=dict)


@contextmanager
def private_tempdir() -> Iterator[None]:
    """Route temporary files into a directory removed afterwards.

    PyTensor's numba backend writes every generated function's source to a
    temporary file and never deletes it; compiling inside a private directory
    leaves nothing behind, also when the user interrupts.
    """
    previous = tempfile.tempdir
    with tempfile.TemporaryDirectory(prefix="lmmbayes-") as private:
        tempfile.tempdir = private
        try:
            yield
        finally:
            tempfile.tempdir = previous


@contextmanager
def quiet() -> Iterator[None]:
    """Silence PyMC's and nutpie's log lines and ArviZ's and PyTensor's advisory warnings."""
    loggers = [logging.getLogger(n) for n in ("pymc", "pytensor", "nutpie", "arviz", "arviz_base")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.filterwarnings("ignore", category=UserWarning, module=r"(arviz|arviz_base|pymc|nutpie|pytensor).*")
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=RuntimeWarning)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def check_tune(config: SamplerConfig) -> None:
    """nutpie cannot run without warm-up: a FitError saying what works instead."""
    if config.sampler == "nutpie" and config.tune < NUTPIE_MIN_TUNE:
        raise FitError(f"tune={config.tune}: nutpie needs at least {NUTPIE_MIN_TUNE} warm-up draw (its step-size "
                       f"adaptation cannot be switched off); use tune={NUTPIE_MIN_TUNE} or more, or "
                       "sampler='pymc', which samples without warm-up.")


def sample(model: Any, config: SamplerConfig, var_names: list[str],
           start: dict[str, np.ndarray] | None = None) -> RawTrace:
    """Sample a PyMC ``model`` and return the variables in ``var_names``.

    Raises
    ------
    FitError
        If the sampler fails (the message keeps the sampler's own reason).
    KeyboardInterrupt
        When interrupted: never a partial trace.
    """
    check_tune(config)
    if config.sampler == "nutpie":
        t0 = time.perf_counter()
        compiled = compile_nutpie(model, var_names, start)
        compile_s = time.perf_counter() - t0
        trace = sample_compiled(compiled, config, var_names)
        return RawTrace(trace.posterior, trace.sample_stats, {"compile": compile_s, **trace.timings})
    return _sample_pymc(model, config, var_names, start)


def compile_nutpie(model: Any, var_names: list[str], start: dict[str, np.ndarray] | None = None) -> Any:
    """Compile ``model`` for nutpie once; `sample_compiled` can reuse it.

    Models whose data are ``pm.Data`` containers can be re-sampled for new
    data with ``compiled.with_data(...)`` without compiling again.
    """
    import nutpie
    import pytensor

    try:
        # fastmath lets LLVM reassociate differently in a fresh compile than in
        # code loaded from PyTensor's numba cache, so the same seed would give
        # different draws in a cold and a warm process; exact arithmetic keeps
        # fits reproducible bit for bit across processes.
        with pytensor.config.change_flags(numba__fastmath=False), private_tempdir(), quiet():
            return nutpie.compile_pymc_model(model, backend="numba", var_names=var_names,
                                             initial_points=start or None)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        raise FitError(f"nutpie could not compile the model: {exc}") from None


def _interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a Ctrl-C that compiled code wrapped in another error."""
    seen: BaseException | None = exc
    for _ in range(20):
        if seen is None:
            return False
        if isinstance(seen, KeyboardInterrupt):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _check_draws(posterior: Any, config: SamplerConfig) -> None:
    """Never a partial trace: the samplers catch Ctrl-C and return what they have (fewer draws, or only the
    chains that finished); a Fit that claims more than it holds would be silently wrong, so abort instead."""
    chains, draws = posterior.sizes.get("chain", 0), posterior.sizes.get("draw", 0)
    if chains < config.chains or draws < config.draws:
        raise KeyboardInterrupt(f"sampling interrupted: {chains} of {config.chains} chains with {draws} of "
                                f"{config.draws} draws")


def sample_compiled(compiled: Any, config: SamplerConfig, var_names: list[str]) -> RawTrace:
    """Run nutpie on a compiled model (or on the C kernel's model)."""
    import nutpie

    check_tune(config)
    t0 = time.perf_counter()
    try:
        with quiet():
            trace = nutpie.sample(compiled, chains=config.chains, draws=config.draws, tune=config.tune,
                                  seed=config.seed, cores=min(config.chains, os.cpu_count() or 1),
                                  target_accept=config.target_accept, progress_bar=config.progress,
                                  save_warmup=False)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # nutpie's Rust panics derive from BaseException
        if isinstance(exc, (SystemExit, GeneratorExit)):
            raise
        if _interrupted(exc):
            raise KeyboardInterrupt("sampling interrupted") from None
        raise FitError(f"nutpie failed while sampling: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                       ) from None
    post, stats = trace["posterior"], trace["sample_stats"]
    _check_draws(post, config)
    return RawTrace(
        posterior={n: np.asarray(post[n].values) for n in var_names if n in post},
        sample_stats={new: np.asarray(stats[old].values) for old, new in _NUTPIE_STATS.items() if old in stats},
        timings={"sample": time.perf_counter() - t0},
    )


@contextmanager
def _stop_on_interrupt() -> Iterator[list[int]]:
    """Record Ctrl-C during PyMC's sampling; PyMC swallows it per chain and would go on with the next chain."""
    import signal
    import threading

    hits: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield hits
        return

    def handler(signum: int, frame: Any) -> None:
        hits.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield hits
    finally:
        signal.signal(signal.SIGINT, previous)


def _sample_pymc(model: Any, config: SamplerConfig, var_names: list[str],
                 start: dict[str, np.ndarray] | None) -> RawTrace:
    import pymc as pm

    t0 = time.perf_counter()
    try:
        with private_tempdir(), quiet(), _stop_on_interrupt() as hits:
            def stop(*_: Any, **__: Any) -> None:  # PyMC's per-draw callback: end every later chain at once
                if hits:
                    raise KeyboardInterrupt

            idata = pm.sample(draws=config.draws, tune=config.tune, chains=config.chains, cores=1,
                              random_seed=config.seed, target_accept=config.target_accept,
                              progressbar=config.progress, nuts_sampler="pymc", compute_convergence_checks=False,
                              var_names=var_names, initvals=start or None, model=model, callback=stop)
        if hits:
            raise KeyboardInterrupt("sampling interrupted")
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        if _interrupted(exc):
            raise KeyboardInterrupt("sampling interrupted") from None
        raise FitError(f"PyMC's NUTS failed while sampling: {exc}") from None
    post, stats = idata["posterior"], idata["sample_stats"]
    _check_draws(post, config)
    return RawTrace(
        posterior={n: np.asarray(post[n].values) for n in var_names if n in post},
        sample_stats={n: np.asarray(stats[n].values) for n in _PYMC_STATS if n in stats},
        timings={"compile": 0.0, "sample": time.perf_counter() - t0},
    )
