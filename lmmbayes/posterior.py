"""Turn an engine's trace into brms-named posterior draws (an ArviZ DataTree).

The posterior group holds one variable per brms block:

- ``b`` (chain, draw, coef): population-level effects, ``Intercept`` on the
  original scale;
- ``sigma`` (chain, draw);
- ``sd_<g>`` (chain, draw, ``<g>__term``) and ``cor_<g>`` (chain, draw,
  ``<g>__pair``) per grouping factor ``g``;
- ``r_<g>`` (chain, draw, ``<g>__level``, ``<g>__term``): the random effects.

:func:`flat_draws` flattens these to brms's parameter names
(``b_Intercept``, ``sd_county__Intercept``, ``r_county[kent,Intercept]``...).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from .design import Design

SAMPLE_DIMS = ("chain", "draw")


def scale_draws(raw: dict[str, np.ndarray], factor: str) -> np.ndarray:
    """(C, D, q, q) draws of diag(sd) @ Lcorr for one factor."""
    sd = raw[f"sd__{factor}"]
    L = raw.get(f"Lcorr__{factor}")
    if L is None:
        L = np.broadcast_to(np.eye(sd.shape[-1]), sd.shape + (sd.shape[-1],))
    return sd[..., :, None] * L


def fixed_draws(raw: dict[str, np.ndarray], design: Design) -> np.ndarray:
    """(C, D, p) population-level draws on the original scale, brms order."""
    b_c = raw["b_c"]
    if not design.centred_intercept:
        return b_c
    intercept = raw["Intercept_c"] - b_c @ design.x_means
    return np.concatenate([intercept[..., None], b_c], axis=-1)


def pair_label(terms: tuple[str, ...], i: int, j: int) -> str:
    return f"{terms[i]}__{terms[j]}"


def to_datatree(design: Design, raw: dict[str, np.ndarray], effects: dict[str, np.ndarray],
                sample_stats: dict[str, np.ndarray], attrs: dict[str, object]) -> xr.DataTree:
    """Assemble the Fit's DataTree from hyperparameter draws and random-effect draws.

    Parameters
    ----------
    raw : dict
        Engine Deterministics (see :mod:`lmmbayes.engines.common`).
    effects : dict
        Per factor, (C, D, levels, q) draws of the random effects.

    The ``observed_data`` group holds the response the model was fitted to;
    it has no rows when the design holds none (``design.rows_in_memory`` is
    False, Dask input).
    """
    b = fixed_draws(raw, design)
    n_chain, n_draw = b.shape[:2]
    coords: dict[str, object] = {"chain": np.arange(n_chain), "draw": np.arange(n_draw),
                                 "coef": list(design.b_names)}
    data = {"b": (("chain", "draw", "coef"), b), "sigma": (SAMPLE_DIMS, raw["sigma"])}
    for f in design.factors:
        tdim, ldim, pdim = f"{f.name}__term", f"{f.name}__level", f"{f.name}__pair"
        coords[tdim] = list(f.terms)
        coords[ldim] = list(f.levels)
        data[f"sd_{f.name}"] = (("chain", "draw", tdim), raw[f"sd__{f.name}"])
        if f.cor_pairs:
            L = raw[f"Lcorr__{f.name}"]
            R = L @ np.swapaxes(L, -1, -2)
            coords[pdim] = [pair_label(f.terms, i, j) for i, j in f.cor_pairs]
            data[f"cor_{f.name}"] = (("chain", "draw", pdim),
                                     np.stack([R[..., i, j] for i, j in f.cor_pairs], axis=-1))
        data[f"r_{f.name}"] = (("chain", "draw", ldim, tdim), effects[f.name])
    posterior = xr.Dataset(data, coords=coords, attrs=dict(attrs))
    stats = xr.Dataset({k: (SAMPLE_DIMS, v) for k, v in sample_stats.items()},
                       coords={"chain": coords["chain"], "draw": coords["draw"]})
    # A design without rows (Dask input) has an empty y: observed_data then holds no rows.
    observed = xr.Dataset({"y": (("obs",), design.y)}, coords={"obs": np.arange(design.y.shape[0])})
    return xr.DataTree.from_dict({"posterior": posterior, "sample_stats": stats,
                                  "observed_data": observed})


def flat_draws(posterior: xr.Dataset, design: Design, *, random: bool = True) -> tuple[list[str], np.ndarray]:
    """brms names and a (chain, draw, K) array of every parameter's draws.

    Order as brms's ``posterior_summary``: b, sd, cor, sigma, then r.
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
    names.append("sigma")
    blocks.append(posterior["sigma"].values[..., None])
    if random:
        for f in design.factors:
            r = posterior[f"r_{f.name}"].values
            names += [f"r_{f.name}[{lev},{t}]" for lev in f.levels for t in f.terms]
            blocks.append(r.reshape(r.shape[:2] + (-1,)))
    return names, np.concatenate(blocks, axis=-1)
