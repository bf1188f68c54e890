"""The joint engine: every random effect is a parameter (non-centred).

For grouping factor f with q terms, ``z__f`` is a (levels, q) array of
standard normals and the effects are ``r = z @ (diag(sd) Lcorr)'``; the
linear predictor gathers ``r[index]`` per row, so no dense N x (levels x q)
matrix is ever built. Works for any family PyMC has; lmmbayes uses Gaussian.
"""

from __future__ import annotations

import time

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from ..design import Design
from ..posterior import scale_draws
from ..priors import ResolvedPriors
from ..sampling import SamplerConfig, sample
from .common import EngineResult, build_hyper, centred_X, hyper_names


def build_model(design: Design, resolved: ResolvedPriors) -> pm.Model:
    """The joint PyMC model of ``design`` under ``resolved`` priors."""
    return build_model_and_start(design, resolved)[0]


def build_model_and_start(design: Design, resolved: ResolvedPriors) -> tuple[pm.Model, dict[str, np.ndarray]]:
    """The joint model and starting values for its σ and sd variables."""
    with pm.Model() as model:
        hyper = build_hyper(design, resolved)
        # Every data array is a data container, not a constant: the compiled
        # code then depends on the model's structure only, so PyTensor's numba
        # cache serves any data set of the same shape of model, and a new
        # response can be swapped in without compiling (simulation studies).
        X = pm.Data("X_c", centred_X(design))
        mu = hyper.fixed_mean(X)
        for f in design.factors:
            index = pm.Data(f"index__{f.name}", f.index)
            Z = pm.Data(f"Z__{f.name}", f.Z)
            n_levels = pm.Data(f"n_levels__{f.name}", np.int64(f.n_levels))
            z = pm.Normal(f"z__{f.name}", 0.0, 1.0, shape=(n_levels, len(f.terms)))
            r = pt.dot(z, hyper.scale(f.name).T)
            mu = mu + (r[index] * Z).sum(axis=1)
        y_obs = pm.Data("y_obs", design.y)
        pm.Normal("y", mu=mu, sigma=hyper.sigma, observed=y_obs)
    return model, hyper.start


def run(design: Design, resolved: ResolvedPriors, config: SamplerConfig) -> EngineResult:
    """Build, sample and turn the non-centred draws into random effects."""
    t0 = time.perf_counter()
    model, start = build_model_and_start(design, resolved)
    names = hyper_names(design, model) + [f"z__{f.name}" for f in design.factors]
    t1 = time.perf_counter()
    trace = sample(model, config, names, start)
    raw = trace.posterior
    effects = {
        f.name: np.einsum("cdlk,cdjk->cdlj", raw[f"z__{f.name}"], scale_draws(raw, f.name))
        for f in design.factors
    }
    return EngineResult(raw, effects, trace.sample_stats, {"build": t1 - t0, **trace.timings})
