"""Save a Fit to one file and load it back: ``fit.save(path)``, ``lmmbayes.load(path)``.

The file starts with a fixed magic line and a format version, followed by a
pickle of plain parts: the draws (xarray datasets of every DataTree group),
the design (response, columns, levels and the formulae objects that evaluate
new data), the priors as text, family, engine, sampler settings and timings.
Priors are stored as their strings and re-parsed on load, so a custom
distribution is restored if it is registered again before loading (otherwise
it is shown by name only). Like any pickle, load only files you trust.
"""

from __future__ import annotations

import importlib
import io
import pickle
import types
from dataclasses import asdict
from pathlib import Path
from typing import Any

import xarray as xr

from .distributions import Distribution, lookup
from .errors import FitError, PriorError
from .fit import Fit
from .priors import Prior, ResolvedPriors, Slot
from .sampling import SamplerConfig

MAGIC = b"LMMBAYES-FIT\n"
FORMAT_VERSION = 1


class _Pickler(pickle.Pickler):
    # formulae keeps the formula's evaluation environment, which holds
    # modules; store those by name and import them again on load.
    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, types.ModuleType):
            return importlib.import_module, (obj.__name__,)
        return NotImplemented


def _prior_record(p: Prior) -> dict[str, Any]:
    return {"dist": p.dist, "class_": p.class_, "coef": p.coef, "group": p.group, "lb": p.lb, "ub": p.ub,
            "source": p.source, "name": p.family.name, "args": p.args}


def _prior_from(record: dict[str, Any]) -> Prior:
    try:
        family = lookup(record["name"])
    except PriorError:  # a custom distribution not registered in this session
        family = Distribution(record["name"], None, (), "real")
    return Prior(record["dist"], record["class_"], record["coef"], record["group"], record["lb"], record["ub"],
                 record["source"], family, tuple(record["args"]))


def save(fit: Fit, path: str | Path) -> Path:
    """Write ``fit`` to ``path`` (one file); returns the path."""
    payload = {
        "design": fit.design,
        "priors": [(asdict(slot), _prior_record(p)) for slot, p in fit.priors.table],
        "family": fit.family,
        "engine": fit.engine,
        "config": asdict(fit.config),
        "timings": dict(fit.timings),
        "groups": {name: fit.idata[name].to_dataset() for name in fit.idata.children},
    }
    buffer = io.BytesIO()
    buffer.write(MAGIC)
    buffer.write(FORMAT_VERSION.to_bytes(2, "big"))
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(payload)
    target = Path(path)
    try:
        target.write_bytes(buffer.getvalue())
    except OSError as exc:
        raise FitError(f"Could not write the fit to {str(target)!r}: {exc}") from None
    return target


def load(path: str | Path) -> Fit:
    """Read a fit written by :meth:`Fit.save`; no data frame is needed.

    Raises
    ------
    FitError
        If the file is missing, not an lmmbayes fit, from a newer format, or
        truncated or corrupted.
    """
    source = Path(path)
    try:
        blob = source.read_bytes()
    except OSError as exc:
        raise FitError(f"Could not read a fit from {str(source)!r}: {exc.strerror or exc}") from None
    if not blob.startswith(MAGIC):
        raise FitError(f"{str(source)!r} is not an lmmbayes fit file (written by fit.save()).")
    version = int.from_bytes(blob[len(MAGIC):len(MAGIC) + 2], "big")
    if version != FORMAT_VERSION:
        raise FitError(f"{str(source)!r} uses fit-file format {version}; this lmmbayes reads format "
                       f"{FORMAT_VERSION}.")
    try:
        payload = pickle.loads(blob[len(MAGIC) + 2:])
        priors = ResolvedPriors(tuple((Slot(**slot), _prior_from(rec)) for slot, rec in payload["priors"]))
        idata = xr.DataTree.from_dict(payload["groups"])
        fit = Fit(payload["design"], priors, payload["family"], payload["engine"],
                  SamplerConfig(**payload["config"]), idata, payload["timings"])
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise FitError(f"{str(source)!r} is truncated or corrupted and cannot be loaded ({type(exc).__name__}).") \
            from None
    return fit
