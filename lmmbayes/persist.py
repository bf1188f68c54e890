"""Save a Fit to one file and load it back: ``fit.save(path)``, ``lmmbayes.load(path)``.

File format (version 1)
-----------------------
A zip archive (conventionally ``*.lmmb``) holding only JSON and ``.npy`` files,
so loading never unpickles, i.e. never runs code from the file:

- ``lmmbayes.json`` (first entry): ``{"format": "lmmbayes.Fit", "version": 1, ...}``
  with the formula spec, family, engine, sampler settings, timings, the
  resolved prior table (every slot with its prior's text, bounds, source and
  numeric arguments; custom distributions keep their name and text only), the
  user's priors as text, the design's names, levels, term blocks and dropped
  rows, and a description of every array below;
- ``arrays/<k>.npy``: the DataTree's variables and coordinates (every group:
  posterior, sample_stats, observed_data, ...), the design's arrays (y, X,
  per factor its level index and term values) and the columns of the data
  formulae evaluated (after dropping rows with missing values), so the
  formulae objects that evaluate new data are rebuilt on load without the
  original data frame. Rebuilt matrices are checked against the stored ones.
  A fit of a Dask DataFrame holds no rows: its file stores the cross-products
  instead (``design.reduced``) and the small frame that fixed the coding.

The file therefore contains the response and predictor columns the model used
(not the grouping columns, whose levels are stored instead): share fit files
as you would share the data. Arrays are written bit for bit, so draws and
summaries are identical after a round trip. Files are written to a temporary name first and then renamed, so
an interrupted save never leaves a half-written file under the target name.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from .crossprod import FactorSums, Layout, ReducedRows, RowSums
from .design import Design, Factor, _evaluate
from .distributions import Distribution, lookup
from .errors import FitError, LmmbayesError
from .fit import Fit
from .formula import FormulaSpec, GroupTerm
from .priors import Prior, ResolvedPriors, Slot, parse_dist
from .sampling import SamplerConfig

FORMAT = "lmmbayes.Fit"
FORMAT_VERSION = 1
MANIFEST = "lmmbayes.json"


class FitFileError(FitError):
    """A fit file cannot be written or read (missing, foreign, truncated, corrupted or too new)."""


# -- arrays and JSON values ------------------------------------------------------------

class _Writer:
    """Collects arrays as ``arrays/<k>.npy`` entries; JSON refers to them by key."""

    def __init__(self) -> None:
        self.arrays: dict[str, bytes] = {}

    def array(self, values: Any) -> dict[str, Any]:
        arr = np.asarray(values)
        kind = "plain"
        if arr.dtype == object:
            # Labels stored as object arrays (e.g. pandas strings): only strings are safe to keep.
            if not all(isinstance(v, str) for v in arr.ravel()):
                raise TypeError(f"cannot store an object array of {type(arr.ravel()[0]).__name__}")
            arr, kind = arr.astype(str), "object-str"
        buffer = io.BytesIO()
        np.save(buffer, arr, allow_pickle=False)
        key = f"arrays/{len(self.arrays)}.npy"
        self.arrays[key] = buffer.getvalue()
        return {"array": key, "kind": kind}


def _read_array(zf: zipfile.ZipFile, ref: dict[str, Any]) -> np.ndarray:
    with zf.open(ref["array"]) as handle:
        arr = np.load(io.BytesIO(handle.read()), allow_pickle=False)
    if ref.get("kind") == "object-str":
        arr = arr.astype(object)
    return arr


def _attr(value: Any, w: _Writer) -> Any:
    """Attribute values as JSON, with numpy scalars and arrays tagged to come back as such."""
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, np.generic):
        return {"__numpy__": value.dtype.str, "value": value.item()}
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, np.ndarray):
        return {"__ndarray__": w.array(value)}
    if isinstance(value, (list, tuple)):
        return [_attr(v, w) for v in value]
    if isinstance(value, dict):
        return {"__dict__": [[str(k), _attr(v, w)] for k, v in value.items()]}
    return str(value)  # anything exotic keeps its text


def _attr_back(value: Any, zf: zipfile.ZipFile) -> Any:
    if isinstance(value, list):
        return [_attr_back(v, zf) for v in value]
    if isinstance(value, dict):
        if "__numpy__" in value:
            return np.dtype(value["__numpy__"]).type(value["value"])
        if "__ndarray__" in value:
            return _read_array(zf, value["__ndarray__"])
        if "__dict__" in value:
            return {k: _attr_back(v, zf) for k, v in value["__dict__"]}
    return value


def _attrs(attrs: dict[str, Any], w: _Writer) -> list[list[Any]]:
    return [[str(k), _attr(v, w)] for k, v in attrs.items()]


def _attrs_back(items: list[list[Any]], zf: zipfile.ZipFile) -> dict[str, Any]:
    return {k: _attr_back(v, zf) for k, v in items}


# -- the DataTree -------------------------------------------------------------------------

def _dataset(ds: xr.Dataset, w: _Writer) -> dict[str, Any]:
    def var(name: Any, da: xr.DataArray) -> dict[str, Any]:
        return {"name": str(name), "dims": [str(d) for d in da.dims], **w.array(da.values),
                "attrs": _attrs(dict(da.attrs), w)}

    return {"coords": [var(n, ds.coords[n].variable.to_base_variable()) for n in ds.coords],
            "data_vars": [var(n, ds[n].variable) for n in ds.data_vars],
            "attrs": _attrs(dict(ds.attrs), w)}


def _dataset_back(spec: dict[str, Any], zf: zipfile.ZipFile) -> xr.Dataset:
    def var(v: dict[str, Any]) -> tuple[Any, ...]:
        return (tuple(v["dims"]), _read_array(zf, v), _attrs_back(v["attrs"], zf))

    return xr.Dataset({v["name"]: var(v) for v in spec["data_vars"]},
                      coords={v["name"]: var(v) for v in spec["coords"]},
                      attrs=_attrs_back(spec["attrs"], zf))


def _tree(dt: xr.DataTree, w: _Writer) -> list[dict[str, Any]]:
    return [{"path": node.path, **_dataset(node.to_dataset(inherit=False), w)} for node in dt.subtree]


def _tree_back(nodes: list[dict[str, Any]], zf: zipfile.ZipFile) -> xr.DataTree:
    return xr.DataTree.from_dict({n["path"]: _dataset_back(n, zf) for n in nodes})


# -- data frames formulae evaluated --------------------------------------------------------

def _column(values: pd.Series, w: _Writer) -> dict[str, Any]:
    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return {"type": "categorical", "ordered": bool(dtype.ordered), "codes": w.array(values.cat.codes),
                "categories": _column(pd.Series(dtype.categories), w)}
    if isinstance(dtype, np.dtype) and dtype != object:
        return {"type": "numpy", **w.array(values.to_numpy())}
    raw = values.to_numpy(dtype=object)
    if all(isinstance(v, str) for v in raw):
        return {"type": "strings", "dtype": str(dtype), **w.array(raw)}
    if isinstance(dtype, pd.api.extensions.ExtensionDtype):  # nullable ints, floats, booleans
        return {"type": "extension", "dtype": str(dtype), **w.array(values.to_numpy(dtype=dtype.numpy_dtype))}
    arr = np.asarray(raw.tolist())
    if arr.dtype == object or len(arr) != len(raw):
        raise FitFileError(f"Column '{values.name}' holds mixed Python objects that cannot be saved; "
                           "convert it to strings or a categorical before fitting.")
    return {"type": "object", **w.array(arr)}


def _column_back(spec: dict[str, Any], zf: zipfile.ZipFile) -> pd.Series:
    kind = spec["type"]
    if kind == "categorical":
        categories = _column_back(spec["categories"], zf)
        codes = _read_array(zf, spec["codes"])
        dtype = pd.CategoricalDtype(pd.Index(categories), ordered=spec["ordered"])
        return pd.Series(pd.Categorical.from_codes(codes, dtype=dtype))
    values = _read_array(zf, spec)
    if kind == "numpy":
        return pd.Series(values)
    if kind == "strings":
        series = pd.Series(values.astype(object), dtype=object)
        return series if spec["dtype"] == "object" else series.astype(spec["dtype"])
    if kind == "extension":
        return pd.Series(values).astype(spec["dtype"])
    return pd.Series(list(values), dtype=object)


def _frame(df: pd.DataFrame, w: _Writer) -> dict[str, Any]:
    return {"n": len(df), "columns": [[str(c), _column(df[c], w)] for c in df.columns]}


def _frame_back(spec: dict[str, Any], zf: zipfile.ZipFile) -> pd.DataFrame:
    columns = {name: _column_back(col, zf) for name, col in spec["columns"]}
    return pd.DataFrame(columns, index=pd.RangeIndex(spec["n"]))


# -- design, priors ----------------------------------------------------------------------

def _label(value: Any) -> Any:
    """An index label as JSON (numbers and strings as they are, anything else as text)."""
    if isinstance(value, np.generic):
        value = value.item()
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def _design(d: Design, w: _Writer) -> dict[str, Any]:
    factors = []
    for f in d.factors:
        factors.append({
            "name": f.name, "variables": list(f.variables), "levels": list(f.levels),
            "terms": list(f.terms), "blocks": [list(b) for b in f.blocks],
            "index": w.array(f.index), "Z": w.array(f.Z),
            "term_data": [_frame(m.data, w) for m in f.term_matrices],
        })
    return {
        "spec": asdict(d.spec), "y": w.array(d.y), "X": w.array(d.X), "coef_names": list(d.coef_names),
        "n_dropped": d.n_dropped, "dropped_index": [_label(v) for v in d.dropped_index],
        "fixed_data": _frame(d.fixed_matrix.data, w), "factors": factors,
        "reduced": None if d.reduced is None else _reduced(d.reduced, w),
    }


def _reduced(r: ReducedRows, w: _Writer) -> dict[str, Any]:
    """The cross-products of a design fitted from a Dask frame (it holds no rows)."""
    sums, layout = r.sums, r.sums.layout
    return {
        "layout": {"kind": layout.kind, "levels": list(layout.levels), "pairs": [list(p) for p in layout.pairs],
                   "parent": None if layout.parent is None else w.array(layout.parent)},
        "n": sums.n, "shift": w.array(sums.shift), "VtV": w.array(sums.VtV),
        "factors": [{"ZtZ": w.array(f.ZtZ), "ZtV": w.array(f.ZtV)} for f in sums.factors],
        "pairs": [w.array(p) for p in sums.pairs],
        "y_median": r.y_median, "y_mad": r.y_mad, "x_absmax": w.array(r.x_absmax),
    }


def _reduced_back(spec: dict[str, Any], zf: zipfile.ZipFile) -> ReducedRows:
    lay = spec["layout"]
    layout = Layout(lay["kind"], tuple(int(g) for g in lay["levels"]), tuple(tuple(p) for p in lay["pairs"]),
                    None if lay["parent"] is None else _read_array(zf, lay["parent"]))
    sums = RowSums(layout, int(spec["n"]), _read_array(zf, spec["shift"]), _read_array(zf, spec["VtV"]),
                   tuple(FactorSums(_read_array(zf, f["ZtZ"]), _read_array(zf, f["ZtV"])) for f in spec["factors"]),
                   tuple(_read_array(zf, p) for p in spec["pairs"]))
    return ReducedRows(sums, float(spec["y_median"]), float(spec["y_mad"]), _read_array(zf, spec["x_absmax"]))


def _spec_back(spec: dict[str, Any]) -> FormulaSpec:
    groups = tuple(GroupTerm(g["lhs"], g["factor"], tuple(g["factor_vars"]), g["correlated"], g["source"])
                   for g in spec["groups"])
    return FormulaSpec(spec["formula"], spec["response"], spec["fixed"], spec["intercept"], groups)


def _same(a: np.ndarray, b: np.ndarray, rows: bool = True) -> bool:
    """True if ``a`` rebuilds ``b``; for a design without rows only the columns can be compared."""
    if not rows:
        return a.shape[1:] == b.shape[1:]
    return a.shape == b.shape and np.allclose(a, b, rtol=1e-12, atol=0.0, equal_nan=True)


def _design_back(spec: dict[str, Any], zf: zipfile.ZipFile) -> Design:
    fspec = _spec_back(spec["spec"])
    reduced = None if spec.get("reduced") is None else _reduced_back(spec["reduced"], zf)
    rows = reduced is None  # a Dask fit stores the coding template instead of its rows
    X = _read_array(zf, spec["X"])
    fixed_frame = _frame_back(spec["fixed_data"], zf)
    # Re-evaluate formulae on the stored columns: this rebuilds the objects that encode
    # new data (categorical codings, stateful transforms) exactly as in training.
    fixed = _evaluate(f"{fspec.response} ~ {fspec.fixed}", fixed_frame, "the population-level formula").common
    rebuilt = np.asarray(np.asarray(fixed), dtype=float)
    if fspec.intercept == "centred":
        rebuilt = rebuilt[:, 1:]
    if not _same(rebuilt, X, rows):
        raise FitFileError("the stored population-level data does not reproduce the stored design matrix")
    factors = []
    for f, g_specs in zip(spec["factors"], _groups_by_factor(fspec)):
        Z = _read_array(zf, f["Z"])
        matrices = tuple(_evaluate(g.lhs, _frame_back(frame, zf), f"the group-level term {g.source}").common
                         for g, frame in zip(g_specs, f["term_data"]))
        rebuilt = np.concatenate([np.asarray(np.asarray(m), dtype=float) for m in matrices], axis=1)
        if not _same(rebuilt, Z, rows):
            raise FitFileError(f"the stored data of factor '{f['name']}' does not reproduce its terms")
        factors.append(Factor(f["name"], tuple(f["variables"]), tuple(f["levels"]), _read_array(zf, f["index"]),
                              tuple(f["terms"]), tuple(tuple(b) for b in f["blocks"]), Z, matrices))
    return Design(fspec, _read_array(zf, spec["y"]), X, tuple(spec["coef_names"]), tuple(factors),
                  int(spec["n_dropped"]), tuple(spec["dropped_index"]), fixed, reduced)


def _groups_by_factor(spec: FormulaSpec) -> list[list[GroupTerm]]:
    return [[g for g in spec.groups if g.factor == name] for name in spec.factors]


def _prior(p: Prior) -> dict[str, Any]:
    fam = p.family
    return {"dist": p.dist, "class": p.class_, "coef": p.coef, "group": p.group, "lb": p.lb, "ub": p.ub,
            "source": p.source, "args": list(p.args), "family": fam.name, "support": fam.support,
            "builtin": bool(fam.builtin)}


def _unavailable(name: str) -> Any:
    def factory(*_: Any, **__: Any) -> Any:
        raise LmmbayesError(
            f"The custom prior distribution {name!r} of a loaded fit cannot be rebuilt: functions are "
            "not saved. Register it again (lmmbayes.register_distribution) before loading."
        )

    factory.__name__ = name.strip("<>")
    return factory


def _prior_back(rec: dict[str, Any]) -> Prior:
    family: Distribution
    args = tuple(float(a) for a in rec["args"])
    if rec["builtin"]:
        family = parse_dist(rec["dist"])[0] if rec["family"] != "flat" else lookup("flat")
    else:
        try:  # a custom distribution registered again in this session
            family = lookup(rec["family"])
        except LmmbayesError:
            family = Distribution(rec["family"], None, (), rec["support"], factory=_unavailable(rec["family"]))
    return Prior(rec["dist"], rec["class"], rec["coef"], rec["group"], rec["lb"], rec["ub"], rec["source"],
                 family, args)


def _user_prior_text(p: Prior) -> str:
    parts = [repr(p.dist), f"class_={p.class_!r}"]
    parts += [f"{k}={v!r}" for k, v in (("coef", p.coef), ("group", p.group)) if v]
    parts += [f"{k}={v!r}" for k, v in (("lb", p.lb), ("ub", p.ub))
              if v is not None and not (k == "lb" and v == 0 and p.class_ in ("sd", "sigma"))]
    return f"prior({', '.join(parts)})"


# -- public ---------------------------------------------------------------------------------

def save(fit: Fit, path: str | os.PathLike[str]) -> Path:
    """Write ``fit`` to one self-contained file (see the module docstring for the format).

    Parameters
    ----------
    fit : Fit
    path : str or path-like
        Target file, replaced if it exists (``.lmmb`` by convention).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    FitFileError
        If the file cannot be written, or the data holds values that cannot be stored.
    """
    if not isinstance(fit, Fit):
        raise FitFileError(f"save() needs an lmmbayes Fit, got {type(fit).__name__}.")
    target = Path(path)
    w = _Writer()
    try:
        user = list(dict.fromkeys(_user_prior_text(p) for _, p in fit.priors.table if p.source == "user"))
        manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "lmmbayes_version": _version(),
            "family": fit.family,
            "engine": fit.engine,
            "config": asdict(fit.config),
            "timings": {str(k): float(v) for k, v in fit.timings.items()},
            "priors": [{"slot": asdict(s), "prior": _prior(p)} for s, p in fit.priors.table],
            "user_priors": user,
            "design": _design(fit.design, w),
            "idata": _tree(fit.idata, w),
        }
        text = json.dumps(manifest, indent=1, allow_nan=True)
    except FitFileError:
        raise
    except (TypeError, ValueError, AttributeError) as exc:
        raise FitFileError(f"Could not serialise the fit: {exc}") from None
    try:
        handle, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(handle, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED,
                                                                  compresslevel=1) as zf:
                zf.writestr(MANIFEST, text)
                for key, data in w.arrays.items():
                    zf.writestr(key, data)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as exc:
        raise FitFileError(f"Could not write the fit to {str(target)!r}: {exc.strerror or exc}") from None
    return target


def load(path: str | os.PathLike[str]) -> Fit:
    """Read a fit written by :meth:`Fit.save`; the original data frame is not needed.

    The loaded fit prints the same summary, holds the same draws bit for bit,
    and predicts (also for new data) as the saved one.

    Raises
    ------
    FitFileError
        If the file is missing or unreadable, not an lmmbayes fit file,
        written by a newer file format, or truncated or corrupted.
    """
    source = Path(path)
    name = str(source)
    if not source.is_file():
        what = "is a directory, not a fit file" if source.is_dir() else "does not exist"
        raise FitFileError(f"Could not read a fit from {name!r}: the path {what}.")
    try:
        if source.stat().st_size == 0:
            raise FitFileError(f"{name!r} is empty, not an lmmbayes fit file (written by fit.save()).")
        with zipfile.ZipFile(source) as zf:
            try:
                manifest = json.loads(zf.read(MANIFEST).decode("utf-8"))
            except KeyError:
                raise FitFileError(f"{name!r} is a zip archive but not an lmmbayes fit file "
                                   "(written by fit.save()).") from None
            if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
                raise FitFileError(f"{name!r} is not an lmmbayes fit file (written by fit.save()).")
            version = manifest.get("version")
            if not isinstance(version, int) or version > FORMAT_VERSION:
                raise FitFileError(
                    f"{name!r} uses fit-file format {version!r} (lmmbayes "
                    f"{manifest.get('lmmbayes_version', '?')}); this lmmbayes ({_version()}) reads format "
                    f"{FORMAT_VERSION} and older. Upgrade lmmbayes to load it."
                )
            return _fit_back(manifest, zf)
    except FitFileError:
        raise
    except zipfile.BadZipFile as exc:
        if _starts_like_fit_file(source):
            raise FitFileError(f"{name!r} is truncated or corrupted and cannot be loaded ({exc}).") from None
        raise FitFileError(f"{name!r} is not an lmmbayes fit file (written by fit.save()).") from None
    except OSError as exc:
        raise FitFileError(f"Could not read a fit from {name!r}: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 - any damage inside the archive is the same user error
        raise FitFileError(
            f"{name!r} is truncated or corrupted and cannot be loaded ({type(exc).__name__}: {exc})."
        ) from None


def _starts_like_fit_file(source: Path) -> bool:
    """True if the file begins as save() writes it: a zip whose first entry is the manifest."""
    with open(source, "rb") as handle:
        head = handle.read(30 + len(MANIFEST))
    return head[:4] == b"PK\x03\x04" and head[30:] == MANIFEST.encode()


def _fit_back(manifest: dict[str, Any], zf: zipfile.ZipFile) -> Fit:
    priors = ResolvedPriors(tuple((Slot(**row["slot"]), _prior_back(row["prior"])) for row in manifest["priors"]))
    design = _design_back(manifest["design"], zf)
    idata = _tree_back(manifest["idata"], zf)
    config = SamplerConfig(**manifest["config"])
    return Fit(design, priors, manifest["family"], manifest["engine"], config, idata, dict(manifest["timings"]))


def _version() -> str:
    from . import __version__

    return __version__


__all__ = ["FORMAT_VERSION", "FitFileError", "load", "save"]
