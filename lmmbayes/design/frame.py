"""Data frames in: accepted types and dtypes, missing values, the private copy of the needed columns.

Accepted: pandas and polars DataFrames (Dask frames go through
`.dask`). Columns may be numeric, boolean, string or categorical,
including pandas' nullable dtypes (``Int64``, ``Float64``, ``boolean``,
``string``) and pyarrow-backed ones (what ``read_csv(dtype_backend=...)``
gives); they are converted to numpy dtypes on a private copy, so the user's
frame is never modified.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError, DataWarning, FormulaError, warn

ACCEPTED = "numeric, boolean, string or categorical"


def as_frame(data: Any, what: str = "data") -> pd.DataFrame:
    """A pandas DataFrame from a pandas or polars DataFrame; a DataError naming the type otherwise."""
    if isinstance(data, pd.DataFrame):
        return data
    module = type(data).__module__.split(".")[0]
    name = type(data).__name__
    if isinstance(data, pd.Series) or (module == "polars" and name == "Series"):
        raise DataError(f"{what} must be a pandas or polars DataFrame, got a {module} Series; turn it into a "
                        "frame first (series.to_frame() in pandas, pl.DataFrame(series) in polars).")
    if module == "polars" and hasattr(data, "to_pandas"):
        try:
            return data.to_pandas()
        except Exception as exc:  # pyarrow missing or an exotic dtype
            raise DataError(f"Could not convert the polars DataFrame to pandas: {exc}") from None
    raise DataError(f"{what} must be a pandas or polars DataFrame, got {name}.")


def check_columns(columns: pd.Index, needed: tuple[str, ...], formula: str) -> None:
    """Duplicate names, and columns the formula uses that the data lacks."""
    if columns.duplicated().any():
        dup = sorted(set(map(str, columns[columns.duplicated()])))
        raise DataError(f"data has duplicate column names {dup}; rename them so each is unique.")
    missing = [n for n in needed if n not in columns]
    if missing:
        raise FormulaError(f"The formula {formula!r} uses column(s) {missing} that are not in the data; "
                           f"available columns: {list(map(str, columns))}.")


def _kind_error(name: str, dtype: Any, what: str = "") -> DataError:
    return DataError(f"Column '{name}' has dtype {dtype}{what}, which a model cannot use; lmmbayes accepts "
                     f"{ACCEPTED} columns (convert dates and durations to numbers, e.g. days since a reference "
                     "date).")


def check_dtype(values: pd.Series, name: str) -> None:
    """DataError for dtypes no model can use: dates, durations, periods, intervals, mixed objects."""
    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_bool_dtype(dtype) \
            or pd.api.types.is_string_dtype(dtype) and dtype != object:
        return
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype):
        return
    if pd.api.types.is_datetime64_any_dtype(dtype) or pd.api.types.is_timedelta64_dtype(dtype) \
            or isinstance(dtype, (pd.PeriodDtype, pd.IntervalDtype)) or pd.api.types.is_complex_dtype(dtype):
        raise _kind_error(name, dtype)
    if dtype == object:
        kinds = {_value_kind(v) for v in values.dropna().to_numpy()}
        if len(kinds) > 1 or "other" in kinds:
            seen = sorted({type(v).__name__ for v in values.dropna().to_numpy()[:1000]})
            raise _kind_error(name, dtype, f" holding mixed Python objects ({', '.join(seen)})")
        return
    raise _kind_error(name, dtype)


def _value_kind(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "bool"
    if isinstance(v, str):
        return "str"
    if isinstance(v, (int, float, np.integer, np.floating)):
        return "number"
    return "other"


def to_numpy_dtypes(frame: pd.DataFrame) -> pd.DataFrame:
    """The same complete rows with numpy dtypes: nullable and pyarrow dtypes converted, objects unified.

    Must be called after rows with missing values were removed.
    """
    out = {}
    for name in frame.columns:
        col = frame[name]
        dtype = col.dtype
        if isinstance(dtype, pd.CategoricalDtype):
            out[name] = col
        elif pd.api.types.is_bool_dtype(dtype):
            out[name] = col.astype(bool)
        elif pd.api.types.is_numeric_dtype(dtype):
            kind = "int64" if pd.api.types.is_integer_dtype(dtype) else "float64"
            out[name] = col.astype(kind) if not isinstance(dtype, np.dtype) or dtype.kind not in "iuf" \
                else col
        elif dtype == object:
            values = col.to_numpy()
            kinds = {_value_kind(v) for v in values}
            if kinds == {"bool"}:
                out[name] = col.astype(bool)
            elif kinds == {"number"}:
                out[name] = col.astype(float)
            else:
                out[name] = col.astype(object)
        else:  # string dtypes (python or pyarrow)
            out[name] = col.astype(object)
    return pd.DataFrame(out, index=frame.index)


def complete_rows(df: pd.DataFrame, needed: tuple[str, ...], *, what: str = "data",
                  drop: bool = True) -> tuple[pd.DataFrame, tuple[Any, ...]]:
    """The needed columns of the rows without missing values, with numpy dtypes, and the dropped labels.

    With ``drop`` (fitting) rows with missing values are dropped with one
    DataWarning giving their count; without it (new data) they are a DataError.
    """
    frame = df.loc[:, list(needed)]
    for name in needed:
        check_dtype(frame[name], name)
    missing = frame.isna()
    keep = ~missing.any(axis=1).to_numpy()
    if not drop and not keep.all():
        cols = [c for c in needed if missing[c].any()]
        counts = ", ".join(f"'{c}': {int(missing[c].sum())} of {len(frame)} rows" for c in cols)
        raise DataError(f"{what} has missing values in {cols} ({counts}); predictions need every column the "
                        "model uses. Drop or fill those rows first.")
    if not keep.any():
        raise DataError(f"Every row has a missing value in at least one of the columns {list(needed)}; "
                        "nothing is left to fit.")
    dropped = tuple(frame.index[~keep])
    return to_numpy_dtypes(frame.loc[keep] if not keep.all() else frame), dropped


def warn_dropped(n_dropped: int, n_rows: int, *, fitting: bool = True, note: str = "") -> None:
    """One DataWarning for rows dropped for missing values."""
    where = "; their index labels are in fit.dropped_rows" if fitting else " (a fit would drop them)"
    warn(f"Dropped {n_dropped} of {n_rows} rows with missing values in the columns the formula uses{where}{note}.",
         DataWarning)


def has_infinite(values: pd.Series) -> bool:
    """Whether a numeric (not boolean) column holds ±inf."""
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return False
    return bool(np.isinf(values.to_numpy(dtype=float, na_value=np.nan)).any())


def check_finite(frame: pd.DataFrame, what: str = "data") -> None:
    """DataError naming the first column holding ±inf."""
    for name in frame.columns:
        if has_infinite(frame[name]):
            raise DataError(f"Column '{name}' of {what} contains infinite values; replace or remove them.")
