"""Engine draws as brms-named posterior draws: an ArviZ DataTree and a brms-labelled view of it.

The posterior group holds one variable per brms block:

- ``b`` (chain, draw, coef): population-level effects, ``Intercept`` on the
  original scale;
- one variable per distributional parameter (``sigma``, ``shape``...), (chain, draw);
- ``sd_<g>`` (chain, draw, ``<g>__term``) and ``cor_<g>`` (chain, draw,
  ``<g>__pair``) per grouping factor ``g``;
- ``r_<g>`` (chain, draw, ``<g>__level``, ``<g>__term``): the random effects.

`flat_draws` flattens these to brms's parameter names (``b_Intercept``,
``sd_county__Intercept``, ``r_county[kent,Intercept]``...) and
`brms_view` gives the same names as a Dataset, the shape arviz-stats
and arviz-plots take.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from ..design import Design
from ..engines.base import Draws

SAMPLE_DIMS = ("chain", "draw")
#: brms's order of the parameter classes in posterior_summary.
CLASS_ORDER = ("b", "sd", "cor", "dpar", "r")


def pair_label(terms: tuple[str, ...], i: int, j: int) -> str:
    return f"{terms[i]}__{terms[j]}"


def dpar_names(design: Design) -> tuple[str, ...]:
    add = design.spec.additions
    return tuple(d.name for d in design.family.dpars(add.present, add.se_sigma))


def to_datatree(design: Design, draws: Draws, sample_stats: dict[str, np.ndarray],
                attrs: dict[str, Any]) -> xr.DataTree:
    """Assemble a fit's DataTree: posterior (brms blocks), sample_stats and observed_data.

    The ``observed_data`` group holds the response the model was fitted to
    (as the family coded it); it has no rows when the design holds none
    (Dask input).
    """
    n_chain, n_draw = draws.shape
    coords: dict[str, Any] = {"chain": np.arange(n_chain), "draw": np.arange(n_draw), "coef": list(design.b_names)}
    data: dict[str, Any] = {"b": (("chain", "draw", "coef"), draws.b)}
    for name, values in draws.dpars.items():
        data[name] = (SAMPLE_DIMS, values)
    for f in design.factors:
        tdim, ldim, pdim = f"{f.name}__term", f"{f.name}__level", f"{f.name}__pair"
        coords[tdim] = list(f.terms)
        coords[ldim] = list(f.levels)
        data[f"sd_{f.name}"] = (("chain", "draw", tdim), draws.sd[f.name])
        if f.cor_pairs:
            L = draws.lcorr[f.name]
            R = L @ np.swapaxes(L, -1, -2)
            coords[pdim] = [pair_label(f.terms, i, j) for i, j in f.cor_pairs]
            data[f"cor_{f.name}"] = (("chain", "draw", pdim), np.stack([R[..., i, j] for i, j in f.cor_pairs], axis=-1))
        data[f"r_{f.name}"] = (("chain", "draw", ldim, tdim), draws.r[f.name])
    posterior = xr.Dataset(data, coords=coords, attrs=dict(attrs))
    stats = xr.Dataset({k: (SAMPLE_DIMS, v) for k, v in sample_stats.items()},
                       coords={"chain": coords["chain"], "draw": coords["draw"]})
    observed = xr.Dataset({"y": (("obs",), design.y)}, coords={"obs": np.arange(design.y.shape[0])})
    return xr.DataTree.from_dict({"posterior": posterior, "sample_stats": stats, "observed_data": observed})


def flat_draws(posterior: xr.Dataset, design: Design, *, random: bool = True) -> tuple[list[str], np.ndarray]:
    """brms names and a (chain, draw, K) array of every parameter's draws.

    Order as brms's ``posterior_summary``: b, sd, cor, distributional parameters, then r.
    """
    names: list[str] = [f"b_{c}" for c in design.b_names]
    blocks = [posterior["b"].values]
    for f in design.factors:
        names += [f"sd_{f.name}__{t}" for t in f.terms]
        blocks.append(posterior[f"sd_{f.name}"].values)
    for f in design.factors:
        if f.cor_pairs:
            names += [f"cor_{f.name}__{pair_label(f.terms, i, j)}" for i, j in f.cor_pairs]
            blocks.append(posterior[f"cor_{f.name}"].values)
    for name in dpar_names(design):
        names.append(name)
        blocks.append(posterior[name].values[..., None])
    if random:
        for f in design.factors:
            r = posterior[f"r_{f.name}"].values
            names += [f"r_{f.name}[{lev},{t}]" for lev in f.levels for t in f.terms]
            blocks.append(r.reshape(r.shape[:2] + (-1,)))
    return names, np.concatenate(blocks, axis=-1)


def brms_view(posterior: xr.Dataset, design: Design, names: list[str] | None = None, *,
              random: bool = False) -> xr.Dataset:
    """The draws as a Dataset with one (chain, draw) variable per brms parameter name."""
    all_names, arr = flat_draws(posterior, design, random=random or bool(names and any(n.startswith("r_")
                                                                                       for n in names)))
    keep = all_names if names is None else names
    pos = {n: k for k, n in enumerate(all_names)}
    coords = {"chain": posterior["chain"].values, "draw": posterior["draw"].values}
    return xr.Dataset({n: (SAMPLE_DIMS, arr[..., pos[n]]) for n in keep}, coords=coords)


def parameter_class(name: str) -> str:
    """brms's class of a parameter name: ``b``, ``sd``, ``cor``, ``r`` or the distributional parameter."""
    head = name.split("_", 1)[0]
    return head if head in ("b", "sd", "cor", "r") else name
