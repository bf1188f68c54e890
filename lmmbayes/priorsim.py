"""Priors by simulation: draws from the prior and data sets simulated from them.

brms's ``sample_prior = "only"`` and prior predictive checks. The joint
engine's PyMC model is forward-sampled on the user's scale (no NUTS), and the
draws are post-processed exactly as a fit's: ``b`` with ``Intercept`` on the
original scale, ``sigma``, ``sd_<g>``, ``cor_<g>`` and ``r_<g>`` (see
:mod:`lmmbayes.posterior`). Flat (improper) priors cannot be simulated and
are an error, as in brms.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
import pymc as pm
import xarray as xr

from .design import Design, as_pandas, build_design, formula_variables
from .engines.joint import build_model
from .errors import FitError, PriorError
from .formula import parse_formula
from .posterior import scale_draws, to_datatree
from .priors import Prior, PriorSet, ResolvedPriors, Slot, as_prior_set, resolve_priors


def _parameter_names(slot: Slot) -> list[str]:
    """brms names of the parameters a prior slot covers (for messages)."""
    if slot.class_ == "Intercept":
        return ["b_Intercept"]
    if slot.class_ == "b":
        return [f"b_{slot.coef}"]
    if slot.class_ == "sd":
        return [f"sd_{slot.group}__{slot.coef}"]
    if slot.class_ == "cor":
        return [f"cor_{slot.group}"]
    return [slot.class_]


def _prior_call(slot: Slot) -> str:
    args = [f"class_={slot.class_!r}"]
    if slot.coef:
        args.append(f"coef={slot.coef!r}")
    if slot.group:
        args.append(f"group={slot.group!r}")
    example = "normal(0, 10)" if slot.class_ in ("b", "Intercept") else "student_t(3, 0, 10)"
    return f"lb.prior({example!r}, {', '.join(args)})"


def check_proper(design: Design, resolved: ResolvedPriors) -> None:
    """Raise PriorError naming every parameter whose prior is flat (improper).

    Raises
    ------
    PriorError
        If any parameter has a flat prior; nothing can be simulated from it.
    """
    flat = [(s, p) for s, p in resolved.table if p.family is not None and p.is_flat]
    if not flat:
        return
    names = [n for s, _ in flat for n in _parameter_names(s)]
    fixes = "\n".join(f"  {_prior_call(s)}" for s, _ in flat)
    raise PriorError(
        f"Cannot sample from the prior: parameter(s) {names} have flat (improper) priors, "
        "from which nothing can be simulated (brms refuses too). Set a proper prior on each, "
        f"for example:\n{fixes}"
    )


def check_draws_and_seed(draws: Any, seed: Any) -> tuple[int, int]:
    """Validate ``draws`` (positive integer) and ``seed``; pick a seed if None."""
    if isinstance(draws, bool) or not isinstance(draws, numbers.Integral) or draws < 1:
        raise FitError(f"draws must be a positive integer, got {draws!r}.")
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2**32))
    elif isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**63:
        raise FitError(f"seed must be None or a non-negative integer below 2**63, got {seed!r}.")
    return int(draws), int(seed)


@contextmanager
def _quiet_pymc() -> Iterator[None]:
    """Silence PyMC's "Sampling: [...]" log line, restoring the level afterwards."""
    logger = logging.getLogger("pymc")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def simulate_prior(design: Design, resolved: ResolvedPriors, draws: int,
                   seed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    """Forward-sample the joint model's prior.

    Returns
    -------
    raw : dict
        (1, draws, ...) draws of the engines' shared Deterministics.
    effects : dict
        Per factor, (1, draws, levels, q) random effects ``z @ (diag(sd) Lcorr)'``.
    y : numpy.ndarray
        (1, draws, N) simulated responses.
    """
    check_proper(design, resolved)
    model = build_model(design, resolved)
    with _quiet_pymc():
        out = pm.sample_prior_predictive(draws=draws, model=model, random_seed=seed)
    prior = out["prior"]
    names = [n for n in ("Intercept_c", "b_c", "sigma") if n in prior]
    for f in design.factors:
        names += [f"sd__{f.name}", f"Lcorr__{f.name}", f"z__{f.name}"]
    raw = {n: np.asarray(prior[n].values, dtype=float) for n in names}
    n_chain, n_draw = raw["sigma"].shape[:2]
    if raw["b_c"].ndim == 2:  # no population-level columns: (C, D) -> (C, D, 0)
        raw["b_c"] = raw["b_c"].reshape(n_chain, n_draw, -1)
    effects = {
        f.name: np.einsum("cdlk,cdjk->cdlj", raw.pop(f"z__{f.name}"), scale_draws(raw, f.name))
        for f in design.factors
    }
    y = np.asarray(out["prior_predictive"]["y"].values, dtype=float)
    return raw, effects, y


def prior_idata(design: Design, resolved: ResolvedPriors, draws: int, seed: int) -> xr.DataTree:
    """A Fit-shaped DataTree whose posterior group holds prior draws (``sample_prior="only"``).

    The ``sample_stats`` group is empty: no sampler ran.
    """
    raw, effects, _ = simulate_prior(design, resolved, draws, seed)
    attrs = {"engine": "joint", "sample_prior": "only", "seed": seed}
    return to_datatree(design, raw, effects, {}, attrs)


def kept_rows(data: pd.DataFrame, design: Design) -> np.ndarray:
    """Positions in the user's frame of the rows the design kept (no missing values)."""
    needed = formula_variables(design.spec)
    return np.flatnonzero(data.loc[:, needed].notna().all(axis=1).to_numpy())


def prior_predictive(
    formula: str,
    data: Any,
    priors: Prior | PriorSet | Iterable[Prior] | None = None,
    *,
    draws: int = 100,
    seed: int | None = None,
) -> xr.DataTree:
    """Draw parameters from the priors and simulate a data set from each draw.

    Parameters
    ----------
    formula : str
        lme4/brms syntax, as for :func:`lmmbayes.fit`.
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

    Returns
    -------
    xarray.DataTree
        Groups ``prior`` (the brms blocks of a fit's posterior: ``b``,
        ``sigma``, ``sd_<g>``, ``cor_<g>``, ``r_<g>``; one chain),
        ``prior_predictive`` (``y`` with dims ``(chain, draw, obs)``) and
        ``observed_data`` (``y`` with dims ``(obs,)``; coordinate ``row``
        gives each observation's position in ``data``).

    Raises
    ------
    PriorError
        If some parameter has a flat (improper) prior; the message names them.
    FitError
        If ``draws`` or ``seed`` is invalid.
    """
    draws, seed = check_draws_and_seed(draws, seed)
    frame = as_pandas(data)
    design = build_design(parse_formula(formula), frame)
    resolved = resolve_priors(design, as_prior_set(priors))
    raw, effects, y = simulate_prior(design, resolved, draws, seed)
    attrs = {"formula": formula, "seed": seed, "draws": draws}
    tree = to_datatree(design, raw, effects, {}, attrs)
    rows = kept_rows(frame, design)
    obs = {"obs": np.arange(design.n_obs)}
    predictive = xr.Dataset({"y": (("chain", "draw", "obs"), y)},
                            coords={"chain": np.arange(y.shape[0]), "draw": np.arange(y.shape[1]), **obs},
                            attrs={"response": design.spec.response})
    observed = tree["observed_data"].to_dataset().assign_coords(row=("obs", rows))
    observed.attrs["response"] = design.spec.response
    return xr.DataTree.from_dict({
        "prior": tree["posterior"].to_dataset(),
        "prior_predictive": predictive,
        "observed_data": observed,
    })
