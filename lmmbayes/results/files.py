"""Save a fit to one file and load it back: ``fit.save(path)``, ``lmmbayes.load(path)``.

File format (version 2)
-----------------------
One zip archive (conventionally ``*.lmmb``) holding

- ``lmmbayes.json`` (the first entry): a manifest of plain JSON: format and
  version, the formula string, family and link, engine, sampler settings,
  timings, the resolved prior table (prior texts, bounds, sources), the row
  encoder's learnt state as data (components as expression trees, categorical
  levels, transform states such as ``poly``'s coefficients or ``scale``'s
  centre and spread, column names, grouping levels), and the design's
  statistics;
- a Zarr v3 store (written by xarray's own DataTree writer, then zipped): the
  groups ``posterior``, ``sample_stats`` and ``observed_data``, plus
  ``design`` (the encoded rows: X, y, offsets, per factor its level index and
  term values, and the raw columns a prediction reads, as numbers, booleans or
  strings, for the averages over the fitted rows) or, for a fit of a Dask DataFrame, ``sums`` (its cross-products).

Loading never evaluates or unpickles anything from the file. The manifest is
checked against a schema (types, enumerations, sizes consistent with each
other) and refused with `FitFileError` otherwise; the
formula is re-parsed only by the closed parser fitting uses (which evaluates
nothing) and must agree with the stored encoder; the Zarr metadata is checked
before xarray reads it (array data types and codecs are allow-listed: numbers,
booleans and fixed-width strings; no object dtype, no pickle codec).

Files written by lmmbayes 0.1 (format 1, whose loader re-evaluated the formula
on stored columns) are refused with a message asking to refit: re-reading them
safely would need that loader's evaluation. The file holds the encoded rows the
model used (response, predictors, levels): share fit files as you would share
the data. Files are written to a temporary name and then renamed, so an
interrupted save never leaves a half-written file under the target name.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from ..design import Design, FactorRows, Rows, Stats
from ..design.crossprod import FactorSums, Layout, ReducedRows, RowSums, SparsePairSums
from ..design.encoder import INTERCEPT, Component, EncodedTerm, FactorCoding, RowEncoder
from ..design.levels import KINDS, LevelCoder, Levels
from ..design.predictors import CATEGORICAL, NUMERIC, Predictor, Predictors, prediction_columns, predictor_roles
from ..design.transforms import State
from ..engines.sampling import SAMPLERS, SamplerConfig
from ..errors import FitFileError, LmmbayesError
from ..families import Extra, ResponseCoding
from ..families import family as make_family
from ..priors import Prior, ResolvedPriors, Slot, parse_dist
from ..priors.distributions import Distribution
from ..spec import FUNCTIONS, Call, Column, Expr, Literal, Operation, parse_formula
from ..spec.expr import BINARY, UNARY
from .model import ENGINE_LABELS, FitResult
from .posterior import dpar_names

FORMAT = "lmmbayes.Fit"
FORMAT_VERSION = 3
#: Formats this version reads: 2 lacks the raw predictors (conditional_effects then asks for a refit).
READABLE_VERSIONS = (2, 3)
MANIFEST = "lmmbayes.json"
#: Largest manifest read (bytes): far above any real one, a guard against hostile files.
MAX_MANIFEST = 256 * 2**20
#: Zarr data types and codecs a fit file may use.
DATA_TYPES = frozenset({"float64", "float32", "int64", "int32", "int16", "int8", "uint64", "uint32", "uint16",
                        "uint8", "bool", "fixed_length_utf32", "string"})
CODECS = frozenset({"bytes", "zstd", "gzip", "blosc", "crc32c", "transpose", "vlen-utf8"})
_GROUPS = ("posterior", "sample_stats", "observed_data", "design", "sums", "prior")
#: What the arrays of a file may declare in all: this many bytes plus this many times the file's size.
DECLARED_BYTES = 2**31
DECLARED_RATIO = 2**16


# -- writing -------------------------------------------------------------------------------


def _expr(e: Expr) -> dict[str, Any]:
    if isinstance(e, Column):
        return {"col": e.name}
    if isinstance(e, Literal):
        return {"lit": e.value}
    if isinstance(e, Operation):
        return {"op": e.op, "args": [_expr(a) for a in e.args]}
    return {"call": e.fn, "args": [_expr(a) for a in e.args], "kwargs": [[k, _expr(v)] for k, v in e.kwargs]}


def _levels(lev: Levels) -> dict[str, Any]:
    return {"values": list(lev.values), "kind": lev.kind}


def _term(t: EncodedTerm) -> dict[str, Any]:
    return {"parts": [[k, c] for k, c in t.parts], "names": list(t.names)}


def _encoder(enc: RowEncoder) -> dict[str, Any]:
    return {
        "coding": {"levels": list(enc.coding.levels)},
        "components": [{"expr": _expr(c.expr), "levels": None if c.levels is None else _levels(c.levels),
                        "width": c.width} for c in enc.components],
        "states": [[key, {"fn": s.fn, "params": [[k, list(v) if isinstance(v, tuple) else v] for k, v in s.params]}]
                   for key, s in enc.states],
        "fixed": [_term(t) for t in enc.fixed],
        "factors": [{"name": f.name, "variables": list(f.variables), "levels": [_levels(lv) for lv in f.coder.levels],
                     "keys": list(f.coder.keys), "columns": [_term(t) for t in f.columns],
                     "blocks": [list(b) for b in f.blocks]} for f in enc.factors],
    }


def _stats(st: Stats) -> dict[str, Any]:
    return {"n_obs": st.n_obs, "y_mean": st.y_mean, "y_sd": st.y_sd, "prior_median": st.prior_median,
            "prior_mad": st.prior_mad, "offset_mean": st.offset_mean, "x_mean": st.x_mean.tolist(),
            "x_sd": st.x_sd.tolist(), "x_rms": st.x_rms.tolist(), "z_rms": [z.tolist() for z in st.z_rms],
            "fingerprint": st.fingerprint, "log_jacobian": st.log_jacobian}


def _predictors(pr: Predictors | None) -> list[dict[str, Any]] | None:
    if pr is None:
        return None
    return [{"name": p.name, "kind": p.kind, "role": p.role,
             "summary": None if not p.numeric else [p.mean, p.sd, p.min, p.max],
             "levels": None if p.levels is None else _levels(p.levels)} for p in pr.items]


def _label(value: Any) -> Any:
    """An index label as JSON (numbers and strings as they are, anything else as its text)."""
    if isinstance(value, np.generic):
        value = value.item()
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def _design_group(design: Design) -> xr.Dataset:
    rows = design.rows
    assert rows is not None
    data: dict[str, Any] = {"X": (("row", "col"), rows.X), "y": (("row",), design.y)}
    for name, values in (("offset", rows.offset), ("weights", rows.weights), ("trials", rows.extra.trials),
                         ("se", rows.extra.se)):
        if values is not None:
            data[name] = (("row",), values)
    for k, f in enumerate(rows.factors):
        data[f"index_{k}"] = (("row",), f.index)
        data[f"Z_{k}"] = (("row", f"term_{k}"), f.Z)
    if design.predictor_rows is not None:
        for k, name in enumerate(prediction_columns(design.encoder)):
            data[f"raw_{k}"] = (("row",), _raw_values(design.predictor_rows[name]))
    return xr.Dataset(data)


def _raw_values(col: pd.Series) -> np.ndarray:
    """A raw column as a plain numpy array: numbers and booleans as they are, anything else as strings."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        col = pd.Series(np.asarray(col.cat.categories)[col.cat.codes.to_numpy()])
    values = col.to_numpy()
    return values if values.dtype.kind in "biuf" else values.astype(str)


def _sums_group(reduced: ReducedRows) -> tuple[xr.Dataset, dict[str, Any]]:
    s = reduced.sums
    data: dict[str, Any] = {"shift": (("v",), s.shift), "VtV": (("v1", "v2"), s.VtV)}
    for k, f in enumerate(s.factors):
        data[f"ZtZ_{k}"] = ((f"level_{k}", f"q_{k}", f"q2_{k}"), f.ZtZ)
        data[f"ZtV_{k}"] = ((f"level_{k}", f"q_{k}", "v1"), f.ZtV)
    for k, p in enumerate(s.pairs):
        if isinstance(p, SparsePairSums):  # the partial layout: one entry per pair of levels that share rows
            data |= {f"pair_{k}_{part}": ((f"entry_{k}",), getattr(p, part)) for part in ("rows", "cols", "values")}
        else:
            data[f"pair_{k}"] = ((f"bucket_{k}", f"pl_{k}", f"pr_{k}"), p)
    if s.layout.parent is not None:
        data["parent"] = (("inner",), s.layout.parent)
    layout = {"kind": s.layout.kind, "levels": list(s.layout.levels), "pairs": [list(p) for p in s.layout.pairs],
              "n": s.n}
    return xr.Dataset(data), layout


def save(fit: FitResult, path: Any) -> Path:
    """Write ``fit`` to one self-contained file (see the module docstring for the format).

    Raises
    ------
    FitFileError
        If the path is not a path, or the file cannot be written.
    """
    if not isinstance(fit, FitResult):
        raise FitFileError(f"save() needs an lmmbayes Fit, got {type(fit).__name__}.")
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise FitFileError(f"save() needs a file path (a string or pathlib.Path), got {path!r}.")
    target = Path(path)
    design = fit.design
    manifest: dict[str, Any] = {
        "format": FORMAT, "version": FORMAT_VERSION, "lmmbayes_version": _version(),
        "formula": design.spec.formula, "family": {"name": design.family.name, "link": design.family.link},
        "engine": fit.engine, "config": {k: getattr(fit.config, k) for k in _CONFIG},
        "timings": {str(k): float(v) for k, v in fit.timings.items()},
        "info": {str(k): v for k, v in fit.info.items() if isinstance(v, (str, int, float, bool))},
        "data_name": fit.data_name,
        "priors": [{"slot": {"class": s.class_, "coef": s.coef, "group": s.group}, "dist": p.dist, "lb": p.lb,
                    "ub": p.ub, "source": p.source, "custom": not p.family.builtin} for s, p in fit.priors.table],
        "encoder": _encoder(design.encoder),
        "design": {"n_dropped": design.n_dropped, "dropped_index": [_label(v) for v in design.dropped_index],
                   "stats": _stats(design.stats), "rows": design.rows is not None, "layout": None,
                   "predictors": _predictors(design.predictors)},
    }
    groups = {g: fit.idata[g].to_dataset() for g in fit.idata.children}
    if design.rows is not None:
        groups["design"] = _design_group(design)
    elif design.reduced is not None:
        groups["sums"], manifest["design"]["layout"] = _sums_group(design.reduced)
    try:
        text = json.dumps(manifest, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise FitFileError(f"Could not serialise the fit: {exc}") from None
    try:
        with tempfile.TemporaryDirectory(prefix="lmmbayes-save-") as work:
            store = os.path.join(work, "store")
            xr.DataTree.from_dict(groups).to_zarr(store, consolidated=False)
            handle, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            try:
                with os.fdopen(handle, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_STORED) as zf:
                    zf.writestr(MANIFEST, text)
                    for root, _, files in sorted(os.walk(store)):
                        for name in sorted(files):
                            full = os.path.join(root, name)
                            zf.write(full, os.path.relpath(full, store).replace(os.sep, "/"))
                os.replace(tmp, target)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
    except OSError as exc:
        raise FitFileError(f"Could not write the fit to {str(target)!r}: {exc.strerror or exc}") from None
    return target


_CONFIG = ("chains", "draws", "tune", "seed", "target_accept", "progress", "sampler")


def _version() -> str:
    from .. import __version__

    return __version__


# -- reading: the schema ---------------------------------------------------------------------


class _Bad(Exception):
    """A schema violation (turned into a FitFileError naming the file)."""


def _need(cond: bool, what: str) -> None:
    if not cond:
        raise _Bad(what)


def _is_int(v: Any, minimum: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= minimum


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _num_list(v: Any, n: int | None, what: str) -> np.ndarray:
    _need(isinstance(v, list) and all(_is_num(x) for x in v) and (n is None or len(v) == n), what)
    return np.asarray(v, dtype=float)


def _obj(v: Any, keys: set[str], what: str) -> dict[str, Any]:
    _need(isinstance(v, dict), f"{what} is not an object")
    _need(set(v) == keys, f"{what} has keys {sorted(v)}, expected {sorted(keys)}")
    return v


def _expr_back(v: Any, depth: int = 0) -> Expr:
    _need(depth < 64 and isinstance(v, dict) and len(v) >= 1, "an expression is malformed")
    if set(v) == {"col"}:
        _need(isinstance(v["col"], str) and bool(v["col"]), "a column name is not a string")
        return Column(v["col"])
    if set(v) == {"lit"}:
        _need(isinstance(v["lit"], (int, float, bool, str)), "a literal is not a number or string")
        return Literal(v["lit"])
    if set(v) == {"op", "args"}:
        _need(v["op"] in set(BINARY.values()) | set(UNARY.values()), f"unknown operator {v['op']!r}")
        _need(isinstance(v["args"], list) and len(v["args"]) in (1, 2), "an operator has the wrong arguments")
        return Operation(v["op"], tuple(_expr_back(a, depth + 1) for a in v["args"]))
    _need(set(v) == {"call", "args", "kwargs"}, "an expression has unknown keys")
    _need(v["call"] in FUNCTIONS, f"function {v['call']!r} is not in the allow-list")
    _need(isinstance(v["args"], list) and isinstance(v["kwargs"], list), "a call is malformed")
    kwargs = []
    for item in v["kwargs"]:
        _need(isinstance(item, list) and len(item) == 2 and isinstance(item[0], str), "a call option is malformed")
        _need(item[0] in FUNCTIONS[v["call"]].option_kinds, f"{v['call']}() has no option {item[0]!r}")
        kwargs.append((item[0], _expr_back(item[1], depth + 1)))
    return Call(v["call"], tuple(_expr_back(a, depth + 1) for a in v["args"]), tuple(kwargs))


def _levels_back(v: Any) -> Levels:
    v = _obj(v, {"values", "kind"}, "levels")
    _need(v["kind"] in KINDS, f"unknown level kind {v['kind']!r}")
    types = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,)}[v["kind"]]
    _need(isinstance(v["values"], list) and all(isinstance(x, types) for x in v["values"]), "level values malformed")
    return Levels(tuple(float(x) if v["kind"] == "float" else x for x in v["values"]), v["kind"])


def _term_back(v: Any, n_components: int, comps: list[Component]) -> EncodedTerm:
    v = _obj(v, {"parts", "names"}, "a term")
    parts = []
    for item in v["parts"]:
        _need(isinstance(item, list) and len(item) == 2 and _is_int(item[0]) and item[0] < n_components
              and item[1] in ("numeric", "full", "reduced"), "a term's part is malformed")
        _need((item[1] == "numeric") == (comps[item[0]].levels is None), "a term codes a component wrongly")
        parts.append((item[0], item[1]))
    _need(_is_str_list(v["names"]), "a term's names are not strings")
    width = 1
    for k, coding in parts:
        c = comps[k]
        width *= c.width if coding == "numeric" else len(c.levels or ()) - (coding == "reduced")  # type: ignore[operator]
    _need(len(v["names"]) == width, "a term's names do not match its columns")
    return EncodedTerm(tuple(parts), tuple(v["names"]))


def _factor_term_back(v: Any, n_components: int, comps: list[Component]) -> EncodedTerm:
    """A grouping factor's term: the intercept (no parts) or a term of components."""
    v = _obj(v, {"parts", "names"}, "a group-level term")
    if v["parts"] == []:
        _need(v["names"] == [INTERCEPT], "a group-level intercept is malformed")
        return EncodedTerm((), (INTERCEPT,))
    return _term_back(v, n_components, comps)


def _state_back(item: Any) -> tuple[str, State]:
    _need(isinstance(item, list) and len(item) == 2 and isinstance(item[0], str), "a transform state is malformed")
    body = _obj(item[1], {"fn", "params"}, "a transform state")
    _need(body["fn"] in ("center", "scale", "standardize", "poly", "bs"), f"unknown transform {body['fn']!r}")
    params = []
    for p in body["params"]:
        _need(isinstance(p, list) and len(p) == 2 and isinstance(p[0], str), "a transform parameter is malformed")
        value = p[1]
        if isinstance(value, list):
            _need(all(_is_num(x) for x in value), "a transform parameter is not numeric")
            value = tuple(float(x) for x in value)
        else:
            _need(_is_num(value) or isinstance(value, bool), "a transform parameter is not numeric")
        params.append((p[0], value))
    return item[0], State(body["fn"], tuple(params))


def _encoder_back(v: Any, spec: Any, fam: Any) -> RowEncoder:
    v = _obj(v, {"coding", "components", "states", "fixed", "factors"}, "the encoder")
    coding = _obj(v["coding"], {"levels"}, "the response coding")
    _need(_is_str_list(coding["levels"]), "the response levels are not strings")
    comps = []
    for c in v["components"]:
        c = _obj(c, {"expr", "levels", "width"}, "a component")
        _need(_is_int(c["width"], 1), "a component's width is not a positive integer")
        comps.append(Component(_expr_back(c["expr"]), None if c["levels"] is None else _levels_back(c["levels"]),
                               c["width"]))
    # the stored components must be exactly those of the formula, in the order the encoder learnt them
    expected = []
    for t in [t for t in spec.fixed if t.components] + [t for g in spec.groups for t in g.terms]:
        for e in t.components:
            if e not in expected:
                expected.append(e)
    _need([c.expr for c in comps] == expected, "the stored encoder does not match the stored formula")
    states = [_state_back(s) for s in v["states"]]
    fixed = [_term_back(t, len(comps), comps) for t in v["fixed"]]
    factors = []
    _need(isinstance(v["factors"], list) and [f.get("name") if isinstance(f, dict) else None for f in v["factors"]]
          == list(spec.factors), "the stored grouping factors do not match the formula")
    for f in v["factors"]:
        f = _obj(f, {"name", "variables", "levels", "keys", "columns", "blocks"}, "a grouping factor")
        _need(tuple(f["variables"]) == spec.factor_vars(f["name"]), "a grouping factor's columns do not match")
        levels = tuple(_levels_back(lv) for lv in f["levels"])
        _need(len(levels) == len(f["variables"]), "a grouping factor's levels do not match its columns")
        _need(isinstance(f["keys"], list) and all(_is_int(k) for k in f["keys"]), "a factor's keys are malformed")
        _need((len(f["keys"]) > 0) == (len(levels) > 1), "a factor's keys do not match its columns")
        coder = LevelCoder(f["name"], tuple(f["variables"]), levels, tuple(f["keys"]))
        _need(isinstance(f["columns"], list), "a grouping factor's terms are malformed")
        columns = tuple(_factor_term_back(t, len(comps), comps) for t in f["columns"])
        q = sum(len(t.names) for t in columns)
        _need(isinstance(f["blocks"], list) and sorted(i for b in f["blocks"] for i in b) == list(range(q)),
              "a factor's correlation blocks do not cover its terms")
        factors.append(FactorCoding(coder, columns, tuple(tuple(b) for b in f["blocks"])))
    return RowEncoder(spec, fam, ResponseCoding(tuple(coding["levels"])), tuple(comps), tuple(states), tuple(fixed),
                      tuple(factors))


def _stats_back(v: Any, p: int, qs: list[int]) -> Stats:
    keys = {"n_obs", "y_mean", "y_sd", "prior_median", "prior_mad", "offset_mean", "x_mean", "x_sd", "x_rms",
            "z_rms", "fingerprint"}
    # log_jacobian is new: files written before it lack it (0 for every family they could hold on the collapsed engine)
    v = _obj(v, keys | {"log_jacobian"} if isinstance(v, dict) and "log_jacobian" in v else keys,
             "the design statistics")
    _need(_is_num(v.get("log_jacobian", 0.0)), "log_jacobian is not a number")
    _need(_is_int(v["n_obs"], 1), "n_obs is not a positive integer")
    for key in ("y_mean", "y_sd", "offset_mean"):
        _need(_is_num(v[key]), f"{key} is not a number")
    for key in ("prior_median", "prior_mad"):
        _need(v[key] is None or _is_num(v[key]), f"{key} is not a number")
    _need(isinstance(v["z_rms"], list) and len(v["z_rms"]) == len(qs), "z_rms does not match the factors")
    _need(isinstance(v["fingerprint"], str), "the fingerprint is not a string")
    return Stats(v["n_obs"], float(v["y_mean"]), float(v["y_sd"]), v["prior_median"], v["prior_mad"],
                 float(v["offset_mean"]), _num_list(v["x_mean"], p, "x_mean"), _num_list(v["x_sd"], p, "x_sd"),
                 _num_list(v["x_rms"], p, "x_rms"),
                 tuple(_num_list(z, q, "z_rms") for z, q in zip(v["z_rms"], qs)), v["fingerprint"],
                 float(v.get("log_jacobian", 0.0)))


def _predictors_back(v: Any, spec: Any) -> Predictors | None:
    """The predictor summaries: exactly the formula's columns and roles, numbers or levels by kind."""
    if v is None:
        return None
    _need(isinstance(v, list), "the predictor summaries are not a list")
    expected = list(predictor_roles(spec))
    _need(len(v) == len(expected), "the predictor summaries do not match the formula")
    items = []
    for item, (name, role) in zip(v, expected):
        item = _obj(item, {"name", "kind", "role", "summary", "levels"}, "a predictor summary")
        _need(item["name"] == name and item["role"] == role, "the predictor summaries do not match the formula")
        _need(item["kind"] in (NUMERIC, CATEGORICAL), f"unknown predictor kind {item['kind']!r}")
        if item["kind"] == NUMERIC:
            _need(item["levels"] is None, "a numeric predictor has levels")
            mean, sd, lo, hi = _num_list(item["summary"], 4, f"the summary of predictor '{name}' is malformed")
            _need(bool(np.isfinite([mean, lo, hi]).all()) and lo <= mean <= hi and not sd < 0,
                  f"the summary of predictor '{name}' is inconsistent")
            items.append(Predictor(name, NUMERIC, role, float(mean), float(sd), float(lo), float(hi)))
        else:
            _need(item["summary"] is None, "a categorical predictor has a numeric summary")
            levels = _levels_back(item["levels"])
            _need(len(levels) >= 1, f"predictor '{name}' has no levels")
            items.append(Predictor(name, CATEGORICAL, role, levels=levels))
    return Predictors(tuple(items))


def _unavailable(name: str) -> Any:
    def factory(*_: Any, **__: Any) -> Any:
        raise LmmbayesError(f"The custom prior distribution {name!r} of a loaded fit cannot be rebuilt: functions are "
                            "not saved. Register it again (lmmbayes.register_distribution) before loading.")
    factory.__name__ = name.strip("<>")
    return factory


def _priors_back(v: Any) -> ResolvedPriors:
    _need(isinstance(v, list), "the prior table is not a list")
    table = []
    for row in v:
        row = _obj(row, {"slot", "dist", "lb", "ub", "source", "custom"}, "a prior")
        slot = _obj(row["slot"], {"class", "coef", "group"}, "a prior's slot")
        _need(all(isinstance(slot[k], str) for k in slot), "a prior's slot is not strings")
        _need(isinstance(row["dist"], str) and row["source"] in ("user", "default")
              and isinstance(row["custom"], bool), "a prior is malformed")
        for key in ("lb", "ub"):
            _need(row[key] is None or _is_num(row[key]), f"a prior's {key} is not a number")
        try:
            dist, args = parse_dist(row["dist"])
        except LmmbayesError:
            _need(row["custom"], f"the prior {row['dist']!r} cannot be read")
            dist, args = Distribution(row["dist"], None, (), "real", factory=_unavailable(row["dist"])), ()
        table.append((Slot(slot["class"], slot["coef"], slot["group"]),
                      Prior(row["dist"], slot["class"], slot["coef"], slot["group"], row["lb"], row["ub"],
                            row["source"], dist, args)))
    return ResolvedPriors(tuple(table))


def _config_back(v: Any) -> SamplerConfig:
    v = _obj(v, set(_CONFIG), "the sampler settings")
    _need(_is_int(v["chains"], 1) and _is_int(v["draws"], 1) and _is_int(v["tune"]) and _is_int(v["seed"]),
          "the sampler counts are not integers")
    _need(v["target_accept"] is None or (_is_num(v["target_accept"]) and 0 < v["target_accept"] < 1),
          "target_accept is not a probability")
    _need(isinstance(v["progress"], bool) and v["sampler"] in SAMPLERS, "the sampler settings are malformed")
    return SamplerConfig(**v)


# -- reading: the Zarr store ------------------------------------------------------------------


def _check_zarr(zf: zipfile.ZipFile, file_size: int) -> None:
    """Refuse a store whose metadata names a data type or codec outside the allow-lists (before xarray reads it).

    Also refused: consolidated metadata (it could disagree with the checked
    metadata), malformed shapes, and arrays declaring far more bytes than a
    file of this size can hold (a tiny file must not make the reader allocate
    gigabytes of fill values).
    """
    declared = 0
    for info in zf.infolist():
        name = info.filename
        base = name.rsplit("/", 1)[-1]
        if base in (".zarray", ".zattrs", ".zgroup", ".zmetadata"):
            raise _Bad("the data store is not Zarr v3")
        top = name.split("/", 1)[0]
        if name != MANIFEST and top not in ("zarr.json", *_GROUPS):
            raise _Bad(f"unexpected entry {name!r}")
        if base != "zarr.json":
            continue
        _need(info.file_size <= MAX_MANIFEST, f"{name}: implausibly large metadata")
        meta = json.loads(zf.read(name).decode("utf-8"), parse_constant=_constant)
        _need(isinstance(meta, dict) and meta.get("zarr_format") == 3, f"{name} is not Zarr v3 metadata")
        if meta.get("node_type") == "group":
            _need(not meta.get("consolidated_metadata"), f"{name}: consolidated metadata is not allowed")
            continue
        _need(meta.get("node_type") == "array", f"{name}: unknown node type")
        dtype = meta.get("data_type")
        dname = dtype.get("name") if isinstance(dtype, dict) else dtype
        _need(dname in DATA_TYPES, f"{name}: data type {dname!r} is not allowed")
        codecs = meta.get("codecs", [])
        _need(isinstance(codecs, list), f"{name}: codecs malformed")
        for codec in codecs:
            cname = codec.get("name") if isinstance(codec, dict) else None
            _need(cname in CODECS, f"{name}: codec {cname!r} is not allowed")
        _need(not meta.get("storage_transformers"), f"{name}: storage transformers are not allowed")
        shape = meta.get("shape")
        _need(isinstance(shape, list) and all(_is_int(n) for n in shape), f"{name}: the shape is malformed")
        declared += math.prod(shape) * _itemsize(dtype)
    limit = DECLARED_BYTES + DECLARED_RATIO * file_size
    _need(declared <= limit, f"its arrays declare {declared} bytes, implausibly many for a file of {file_size} bytes")


def _itemsize(dtype: Any) -> int:
    """Bytes per element of an allow-listed Zarr data type (8 for variable-length strings)."""
    if isinstance(dtype, dict):
        config = dtype.get("configuration")
        size = config.get("length_bytes") if isinstance(config, dict) else None
        return int(size) if isinstance(size, int) and _is_int(size, 1) else 8
    digits = "".join(ch for ch in str(dtype) if ch.isdigit())
    return int(digits) // 8 if digits else (1 if dtype == "bool" else 8)


def _open_tree(source: Path) -> xr.DataTree:
    import warnings

    import zarr

    store = zarr.storage.ZipStore(source, mode="r")
    try:
        with warnings.catch_warnings():
            # zarr notes that the manifest beside the store is no Zarr node: expected, not the user's concern
            warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy")
            tree = xr.open_datatree(store, engine="zarr", consolidated=False)  # type: ignore[arg-type]
            return tree.load()
    finally:
        store.close()


def _rows_back(ds: xr.Dataset, encoder: RowEncoder, n: int) -> Rows:
    p = len(encoder.coef_names)
    X = np.asarray(ds["X"].values, dtype=float).reshape(-1, p) if p else np.zeros((n, 0))
    _need(X.shape == (n, p), "the stored X does not match the encoder")
    y = np.asarray(ds["y"].values, dtype=float)
    _need(y.shape == (n,), "the stored response does not match the number of rows")

    def opt(name: str) -> np.ndarray | None:
        if name not in ds:
            return None
        values = np.asarray(ds[name].values, dtype=float)
        _need(values.shape == (n,), f"the stored {name} does not match the number of rows")
        return values

    factors = []
    for k, f in enumerate(encoder.factors):
        index = np.asarray(ds[f"index_{k}"].values, dtype=np.int64)
        Z = np.asarray(ds[f"Z_{k}"].values, dtype=float).reshape(n, -1) if n else np.zeros((0, f.q))
        _need(index.shape == (n,) and Z.shape == (n, f.q), f"the stored rows of factor '{f.name}' are malformed")
        _need(bool(((index >= 0) & (index < f.n_levels)).all()), f"factor '{f.name}' has levels out of range")
        factors.append(FactorRows(index, Z))
    return Rows(X, opt("offset"), tuple(factors), y, Extra(opt("trials"), opt("se")), opt("weights"),
                pd.RangeIndex(n))


def _raw_back(ds: xr.Dataset, encoder: RowEncoder, n: int) -> pd.DataFrame | None:
    """The fitted rows' raw prediction columns (None for files without them): numbers, booleans or strings."""
    names = prediction_columns(encoder)
    stored = sorted(str(v) for v in ds.data_vars if str(v).startswith("raw_"))
    if not stored:
        return None
    _need(stored == sorted(f"raw_{k}" for k in range(len(names))), "the stored raw columns do not match the formula")
    columns = {}
    for k, name in enumerate(names):
        values = np.asarray(ds[f"raw_{k}"].values)
        _need(values.shape == (n,) and values.dtype.kind in "biufUO", f"the stored column '{name}' is malformed")
        if values.dtype.kind in "UO":
            _need(all(isinstance(v, str) for v in values), f"the stored column '{name}' is malformed")
            values = values.astype(object)
        columns[name] = values
    return pd.DataFrame(columns)


def _sums_back(ds: xr.Dataset, layout: Any, encoder: RowEncoder) -> ReducedRows:
    lay = _obj(layout, {"kind", "levels", "pairs", "n"}, "the Dask layout")
    _need(lay["kind"] in ("one", "nested", "dense", "partial") and _is_int(lay["n"], 1), "the Dask layout is malformed")
    levels = tuple(int(g) for g in lay["levels"])
    _need(list(levels) == [f.n_levels for f in encoder.factors], "the Dask layout does not match the factors")
    parent = np.asarray(ds["parent"].values, dtype=np.int64) if "parent" in ds else None
    layout_pairs: list[tuple[int, int]] = []
    for pair in lay["pairs"]:
        _need(isinstance(pair, list) and len(pair) == 2 and all(_is_int(i) for i in pair), "a layout pair is malformed")
        layout_pairs.append((int(pair[0]), int(pair[1])))
    L = Layout(lay["kind"], levels, tuple(layout_pairs), parent)
    p = len(encoder.coef_names)
    shift, VtV = np.asarray(ds["shift"].values, dtype=float), np.asarray(ds["VtV"].values, dtype=float)
    _need(shift.shape == (p + 1,) and VtV.shape == (p + 2, p + 2), "the stored sums do not match the encoder")
    factors = tuple(FactorSums(np.asarray(ds[f"ZtZ_{k}"].values, dtype=float),
                               np.asarray(ds[f"ZtV_{k}"].values, dtype=float)) for k in range(len(levels)))
    for f, fs in zip(encoder.factors, factors):
        _need(fs.ZtZ.shape == (f.n_levels, f.q, f.q) and fs.ZtV.shape == (f.n_levels, f.q, p + 2),
              f"the stored sums of factor '{f.name}' are malformed")
    pairs = tuple(_sparse_pair_back(ds, k, encoder.factors[left], encoder.factors[right]) if L.kind == "partial"
                  else np.asarray(ds[f"pair_{k}"].values, dtype=float) for k, (left, right) in enumerate(L.pairs))
    return ReducedRows(RowSums(L, lay["n"], shift, VtV, factors, pairs))


def _sparse_pair_back(ds: xr.Dataset, k: int, left: Any, right: Any) -> SparsePairSums:
    """A crossed pair's sparse sums, checked: integer coordinates inside the pair's (levels x terms) shape."""
    shape = (left.n_levels * left.q, right.n_levels * right.q)
    parts = {}
    for part in ("rows", "cols", "values"):
        _need(f"pair_{k}_{part}" in ds, "the stored crossed sums are missing")
        parts[part] = np.asarray(ds[f"pair_{k}_{part}"].values)
    rows, cols, values = parts["rows"], parts["cols"], parts["values"]
    _need(rows.dtype.kind in "iu" and cols.dtype.kind in "iu" and values.dtype.kind == "f"
          and rows.shape == cols.shape == values.shape and rows.ndim == 1, "the stored crossed sums are malformed")
    _need(bool(((rows >= 0) & (rows < shape[0]) & (cols >= 0) & (cols < shape[1])).all()),
          "the stored crossed sums point outside their factors' levels")
    return SparsePairSums(rows.astype(np.int64), cols.astype(np.int64), values.astype(float), shape)


def _fit_back(manifest: dict[str, Any], tree: xr.DataTree) -> FitResult:
    m = _obj(manifest, {"format", "version", "lmmbayes_version", "formula", "family", "engine", "config", "timings",
                        "info", "data_name", "priors", "encoder", "design"}, "the manifest")
    _need(isinstance(m["formula"], str), "the formula is not a string")
    spec = parse_formula(m["formula"])  # the closed parser: it evaluates nothing
    fam_v = _obj(m["family"], {"name", "link"}, "the family")
    _need(isinstance(fam_v["name"], str) and isinstance(fam_v["link"], str), "the family is malformed")
    fam = make_family(fam_v["name"], fam_v["link"])
    _need(m["engine"] in ENGINE_LABELS, f"unknown engine {m['engine']!r}")
    config = _config_back(m["config"])
    _need(isinstance(m["timings"], dict) and all(_is_num(x) for x in m["timings"].values()), "timings malformed")
    _need(isinstance(m["info"], dict) and isinstance(m["data_name"], str), "the fit's notes are malformed")
    encoder = _encoder_back(m["encoder"], spec, fam)
    keys = {"n_dropped", "dropped_index", "stats", "rows", "layout"}
    d = m["design"]
    # files written before the predictor summaries were stored lack the key (their fits cannot draw effect grids)
    d = _obj(d, keys | {"predictors"} if isinstance(d, dict) and "predictors" in d else keys, "the design")
    _need(_is_int(d["n_dropped"]) and isinstance(d["dropped_index"], list) and isinstance(d["rows"], bool),
          "the design is malformed")
    stats = _stats_back(d["stats"], len(encoder.coef_names), [f.q for f in encoder.factors])
    if d["rows"]:
        _need("design" in tree.children, "the stored rows are missing")
        stored = tree["design"].to_dataset()
        rows, reduced = _rows_back(stored, encoder, stats.n_obs), None
        raw = _raw_back(stored, encoder, stats.n_obs)
    else:
        _need("sums" in tree.children, "the stored cross-products are missing")
        rows, reduced = None, _sums_back(tree["sums"].to_dataset(), d["layout"], encoder)
        raw = None
    predictors = _predictors_back(d.get("predictors"), spec)
    design = Design(spec, fam, encoder, rows, stats, d["n_dropped"], tuple(d["dropped_index"]), reduced,
                    predictors=predictors, predictor_rows=raw)
    priors = _priors_back(m["priors"])
    groups = {g: tree[g].to_dataset() for g in ("posterior", "sample_stats", "observed_data", "prior")
              if g in tree.children}
    _need("posterior" in groups, "the posterior is missing")
    post = groups["posterior"]
    _need("b" in post and post["b"].ndim == 3 and "coef" in post["b"].coords
          and list(post["b"].coords["coef"].values) == list(design.b_names), "the stored draws do not match the design")
    C, D = post["b"].shape[:2]
    shapes = {"b": (C, D, len(design.b_names)), **{name: (C, D) for name in dpar_names(design)}}
    for f in design.factors:
        shapes[f"sd_{f.name}"] = (C, D, f.q)
        shapes[f"r_{f.name}"] = (C, D, f.n_levels, f.q)
        if f.cor_pairs:
            shapes[f"cor_{f.name}"] = (C, D, len(f.cor_pairs))
    for name, shape in shapes.items():
        _need(name in post and post[name].shape == shape and post[name].dtype.kind == "f",
              f"the stored draws of '{name}' do not match the design")
    return FitResult(design, priors, m["engine"], config, xr.DataTree.from_dict(groups), dict(m["timings"]),
                     dict(m["info"]), m["data_name"])


def load(path: Any) -> FitResult:
    """Read a fit written by `save`; the original data frame is not needed.

    The loaded fit prints the same summary, holds the same draws bit for bit,
    and predicts (also for new data) as the saved one. Nothing from the file
    is evaluated or unpickled.

    Raises
    ------
    FitFileError
        If ``path`` is not a path, the file is missing or unreadable, not an
        lmmbayes fit file, malformed, truncated or corrupted, or written by a
        newer or older file format.
    """
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise FitFileError(f"load() needs the path of a fit file (a string or pathlib.Path), got {path!r}.")
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
                info = zf.getinfo(MANIFEST)
            except KeyError:
                raise FitFileError(f"{name!r} is a zip archive but not an lmmbayes fit file (written by fit.save()).") \
                    from None
            if info.file_size > MAX_MANIFEST:
                raise FitFileError(f"{name!r}: its manifest is implausibly large ({info.file_size} bytes).")
            manifest = json.loads(zf.read(MANIFEST).decode("utf-8"), parse_constant=_constant)
            if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
                raise FitFileError(f"{name!r} is not an lmmbayes fit file (written by fit.save()).")
            version = manifest.get("version")
            if version == 1:
                raise FitFileError(f"{name!r} was written by lmmbayes {manifest.get('lmmbayes_version', '0.1')} "
                                   "(fit-file format 1), whose loader re-evaluated the formula on stored data; this "
                                   f"lmmbayes ({_version()}) reads formats 2 and 3 only. Refit the model and "
                                   "save it again.")
            if not _is_int(version) or version not in READABLE_VERSIONS:
                raise FitFileError(f"{name!r} uses fit-file format {version!r} (lmmbayes "
                                   f"{manifest.get('lmmbayes_version', '?')}); this lmmbayes ({_version()}) reads "
                                   f"formats {', '.join(map(str, READABLE_VERSIONS))}. Upgrade lmmbayes to load it.")
            _check_zarr(zf, source.stat().st_size)
        tree = _open_tree(source)
        return _fit_back(manifest, tree)
    except FitFileError:
        raise
    except _Bad as exc:
        raise FitFileError(f"{name!r} is not a valid lmmbayes fit file: {exc}.") from None
    except zipfile.BadZipFile as exc:
        if _starts_like_fit_file(source):
            raise FitFileError(f"{name!r} is truncated or corrupted and cannot be loaded ({exc}).") from None
        raise FitFileError(f"{name!r} is not an lmmbayes fit file (written by fit.save()).") from None
    except LmmbayesError as exc:
        raise FitFileError(f"{name!r} cannot be loaded: {exc}") from None
    except OSError as exc:
        raise FitFileError(f"Could not read a fit from {name!r}: {exc.strerror or exc}") from None
    except Exception as exc:
        raise FitFileError(f"{name!r} is truncated or corrupted and cannot be loaded "
                           f"({type(exc).__name__}: {exc}).") from None


def _constant(text: str) -> float:
    """JSON's NaN and ±Infinity (written by json.dumps for undefined statistics)."""
    return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[text]


def _starts_like_fit_file(source: Path) -> bool:
    """True if the file begins as save() writes it: a zip whose first entry is the manifest."""
    with open(source, "rb") as handle:
        head = handle.read(30 + len(MANIFEST))
    return head[:4] == b"PK\x03\x04" and head[30:] == MANIFEST.encode()


__all__ = ["FORMAT_VERSION", "load", "save"]
