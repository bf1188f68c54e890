"""Prior predictive simulation: draw parameters from the priors and simulate a data set from each draw.

Parameters come from `lmmbayes.engines.prior` (independent draws, no
sampler, nothing compiled); each simulated data set is the family's random
draw around the one linear predictor (`.linpred`) of the user's rows.
Flat (improper) priors cannot be simulated and are an error, as in brms.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import xarray as xr

from .. import _validate as check
from ..design import Design, build_design
from ..design.frame import as_frame
from ..engines.plan import plan as make_plan
from ..engines.prior import draw
from ..errors import FitError
from ..families import Family
from ..families import family as make_family
from ..priors import Prior, PriorSet, ResolvedPriors, as_prior_set, resolve_priors
from ..results.posterior import to_datatree
from ..spec import FormulaSpec, parse_formula
from .linpred import linear_predictor, params


def simulation_design(spec: FormulaSpec, family: Family, data: Any) -> Design:
    """The design of ``data`` for simulation: the response may be a placeholder that does not vary."""
    return build_design(spec, family, data, check_response=False)


def simulate(design: Design, resolved: ResolvedPriors, draws: int, seed: int) -> tuple[xr.DataTree, np.ndarray]:
    """Prior draws as a fit-shaped DataTree (one chain) and (draws, N) responses simulated from them."""
    pl = make_plan(design, resolved)
    prior_draws = draw(design, resolved, pl, draws, seed)
    tree = to_datatree(design, prior_draws, {}, {"engine": "prior", "sample_prior": "only", "seed": seed})
    rows = design.require_rows("Prior predictive simulation", "Simulate from a pandas frame.")
    p = params(tree["posterior"].to_dataset(), design)
    rng = np.random.default_rng([seed, 11])
    eta = linear_predictor(p, rows, design.factors, centred=design.intercept_in_eta, rng=rng)
    y = design.family.random(rng, eta, {k: v[:, None] for k, v in p.dpars.items()}, rows.extra)
    return tree, np.asarray(y, dtype=float)


def kept_rows(data: Any, design: Design) -> np.ndarray:
    """Positions in the user's frame of the rows the design kept (no missing values)."""
    frame = as_frame(data)
    needed = list(design.spec.variables())
    return np.flatnonzero(frame.loc[:, needed].notna().all(axis=1).to_numpy())


def prior_predictive(
    formula: str,
    data: Any,
    priors: Prior | PriorSet | Iterable[Prior] | None = None,
    *,
    draws: int = 100,
    seed: int | None = None,
    family: str | Family = "gaussian",
) -> xr.DataTree:
    """Draw parameters from the priors and simulate a data set from each draw.

    Parameters
    ----------
    formula : str
        lme4/brms syntax, as for `lmmbayes.fit`.
    data : pandas.DataFrame or polars.DataFrame
        Supplies the predictors and grouping factors; never modified. Its
        response is kept as ``observed_data`` for comparison.
    priors : Prior, sum of priors or list of priors, optional
        Every parameter needs a proper prior: ``b``'s default is flat, so set
        one on class ``b`` whenever the model has population-level slopes.
    draws : int
        Number of prior draws (simulated data sets).
    seed : int, optional
        Makes the simulation reproducible.
    family : str or Family
        The response family, as for `lmmbayes.fit`.

    Returns
    -------
    xarray.DataTree
        Groups ``prior`` (the brms blocks of a fit's posterior: ``b``,
        distributional parameters, ``sd_<g>``, ``cor_<g>``, ``r_<g>``; one
        chain), ``prior_predictive`` (``y`` with dims ``(chain, draw, obs)``) and
        ``observed_data`` (``y`` with dims ``(obs,)``; coordinate ``row`` gives
        each observation's position in ``data``).

    Raises
    ------
    PriorError
        If some parameter has a flat (improper) prior; the message names them.
    FitError
        If ``draws`` or ``seed`` is invalid.
    """
    draws = check.count(draws, "draws", error=FitError)
    seed = check.seed(seed, error=FitError)
    design = simulation_design(parse_formula(formula), make_family(family), data)
    resolved = resolve_priors(design, as_prior_set(priors))
    tree, y = simulate(design, resolved, draws, seed)
    rows = kept_rows(data, design)
    obs = {"obs": np.arange(design.n_obs)}
    response = design.spec.response_name
    predictive = xr.Dataset({"y": (("chain", "draw", "obs"), y[None])},
                            coords={"chain": [0], "draw": np.arange(draws), **obs}, attrs={"response": response})
    observed = tree["observed_data"].to_dataset().assign_coords(row=("obs", rows))
    observed.attrs["response"] = response
    prior = tree["posterior"].to_dataset()
    prior.attrs.update({"formula": formula, "seed": seed, "draws": draws})
    return xr.DataTree.from_dict({"prior": prior, "prior_predictive": predictive, "observed_data": observed})
