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
        mu = hyper.fixed_mean(centred_X(design))
        for f in design.factors:
            z = pm.Normal(f"z__{f.name}", 0.0, 1.0, shape=(f.n_levels, len(f.terms)))
            r = pt.dot(z, hyper.scale(f.name).T)
            mu = mu + (r[f.index] * f.Z).sum(axis=1)
        # A data container, so a compiled model can be re-used for a new response.
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
