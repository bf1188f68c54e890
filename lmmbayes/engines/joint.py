"""The joint engine: every random effect is a parameter (non-centred).

For grouping factor f with q terms, ``z__f`` is a (levels, q) array of
standard normals and the effects are ``r = z @ (diag(sd) Lcorr)'``; the
linear predictor gathers ``r[index]`` per row, so no dense N x (levels x q)
matrix is ever built. Works for any family PyMC has; lmmbayes uses Gaussian.
"""

from __future__ import annotations

import pymc as pm
import pytensor.tensor as pt

from ..design import Design
from ..priors import ResolvedPriors
from .common import build_hyper, centred_X


def build_model(design: Design, resolved: ResolvedPriors) -> pm.Model:
    """The joint PyMC model of ``design`` under ``resolved`` priors."""
    with pm.Model() as model:
        hyper = build_hyper(design, resolved)
        mu = hyper.fixed_mean(centred_X(design))
        for f in design.factors:
            z = pm.Normal(f"z__{f.name}", 0.0, 1.0, shape=(f.n_levels, len(f.terms)))
            r = pt.dot(z, hyper.scale(f.name).T)
            mu = mu + (r[f.index] * f.Z).sum(axis=1)
        pm.Normal("y", mu=mu, sigma=hyper.sigma, observed=design.y)
    return model
