"""Join a :class:`~lmmbayes.formula.FormulaSpec` with data into a frozen :class:`Design`.

The design holds the response, the population-level matrix ``X`` and, per
grouping factor, a per-row level index and the (N, q) values of its terms.
There is deliberately no dense N x (levels x terms) random-effects matrix:
the engines gather ``r[index]`` instead.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import formulae as fm
import numpy as np
import pandas as pd

from .errors import DataError, DataWarning, FormulaError
from .formula import FormulaSpec

#: Functions a formula may call besides formulae's own (C, scale, center, I...).
FORMULA_FUNCTIONS: dict[str, Any] = {
    "log": np.log,
    "log1p": np.log1p,
    "log2": np.log2,
    "log10": np.log10,
    "exp": np.exp,
    "sqrt": np.sqrt,
    "abs": np.abs,
}


@dataclass(frozen=True, eq=False)
class Factor:
    """One grouping factor with all its group-level terms.

    Attributes
    ----------
    name : str
        brms's name: ``"county"`` or ``"batch:cask"``.
    variables : tuple of str
        The data columns that define the factor.
    levels : tuple of str
        Level labels in model order (interaction levels joined with ``_``).
    index : numpy.ndarray
        (N,) integer level of every row.
    terms : tuple of str
        brms names of the factor's terms, e.g. ``("Intercept", "std_age")``.
    blocks : tuple of tuple of int
        Indices into ``terms`` that share a correlation matrix; ``||`` terms
        are blocks of one.
    Z : numpy.ndarray
        (N, q) values of the terms for every row.
    term_matrices : tuple
        formulae matrices of each ``(lhs | factor)`` part, to evaluate new data.
    """

    name: str
    variables: tuple[str, ...]
    levels: tuple[str, ...]
    index: np.ndarray
    terms: tuple[str, ...]
    blocks: tuple[tuple[int, ...], ...]
    Z: np.ndarray
    term_matrices: tuple[Any, ...] = field(repr=False)

    @property
    def n_levels(self) -> int:
        return len(self.levels)

    @property
    def cor_pairs(self) -> tuple[tuple[int, int], ...]:
        """(i, j) term pairs, i < j, whose correlation is a parameter."""
        return tuple(
            (block[a], block[b])
            for block in self.blocks
            for b in range(len(block))
            for a in range(b)
        )


@dataclass(frozen=True, eq=False)
class Design:
    """Everything the engines need, as plain arrays and names.

    Attributes
    ----------
    spec : FormulaSpec
    y : numpy.ndarray
        (N,) response.
    X : numpy.ndarray
        (N, p) population-level columns, uncentred, without the centred
        intercept (an explicit ``0 + Intercept`` column is included).
    coef_names : tuple of str
        brms names of the columns of ``X`` (``catb``, ``x:z``...).
    factors : tuple of Factor
    n_dropped : int
        Rows dropped for missing values.
    dropped_index : tuple
        Index labels of the dropped rows in the user's data frame.
    fixed_matrix : object
        formulae's population-level matrix, to evaluate new data.
    """

    spec: FormulaSpec
    y: np.ndarray
    X: np.ndarray
    coef_names: tuple[str, ...]
    factors: tuple[Factor, ...]
    n_dropped: int
    dropped_index: tuple[Any, ...]
    fixed_matrix: Any = field(repr=False)

    @property
    def n_obs(self) -> int:
        return int(self.y.shape[0])

    @property
    def centred_intercept(self) -> bool:
        return self.spec.intercept == "centred"

    @property
    def b_names(self) -> tuple[str, ...]:
        """Population-level names as reported (``Intercept`` first if centred)."""
        return (("Intercept",) if self.centred_intercept else ()) + self.coef_names

    @property
    def x_means(self) -> np.ndarray:
        """Column means used to centre ``X`` (zeros without a centred intercept)."""
        if not self.centred_intercept or self.X.shape[1] == 0:
            return np.zeros(self.X.shape[1])
        return self.X.mean(axis=0)

    def factor(self, name: str) -> Factor:
        for f in self.factors:
            if f.name == name:
                return f
        raise KeyError(name)


def brms_name(label: str) -> str:
    """formulae column label to brms coefficient name: ``cat[b]`` -> ``catb``."""
    name = re.sub(r"\[([^\]]*)\]", r"\1", label)
    return re.sub(r"[\s()\"',]", "", name)


def as_pandas(data: Any) -> pd.DataFrame:
    """Accept a pandas or polars DataFrame; anything else is a DataError."""
    if isinstance(data, pd.DataFrame):
        return data
    module = type(data).__module__.split(".")[0]
    if module == "polars" and hasattr(data, "to_pandas"):
        try:
            return data.to_pandas()
        except Exception as exc:  # pyarrow missing or an exotic dtype
            raise DataError(f"Could not convert the polars DataFrame to pandas: {exc}") from exc
    raise DataError(
        f"data must be a pandas or polars DataFrame, got {type(data).__name__}."
    )


def formula_variables(spec: FormulaSpec) -> list[str]:
    """Data columns the formula uses, in a stable order."""
    names: list[str] = []
    try:
        names += sorted(fm.model_description(f"{spec.response} ~ {spec.fixed}").var_names)
        for g in spec.groups:
            names += sorted(fm.model_description(g.lhs).var_names)
    except Exception as exc:  # formulae's parser: report it as a formula problem
        raise FormulaError(f"Could not parse the formula {spec.formula!r}: {exc}") from exc
    for g in spec.groups:
        names += list(g.factor_vars)
    return list(dict.fromkeys(n for n in names if n))


def _check_frame(df: pd.DataFrame, needed: list[str], formula: str) -> None:
    if df.columns.duplicated().any():
        dup = sorted(set(map(str, df.columns[df.columns.duplicated()])))
        raise DataError(f"data has duplicate column names {dup}; rename them so each is unique.")
    if len(df) == 0:
        raise DataError("data has no rows.")
    missing = [n for n in needed if n not in df.columns]
    if missing:
        raise FormulaError(
            f"The formula {formula!r} uses column(s) {missing} that are not in the data; "
            f"available columns: {list(map(str, df.columns))}."
        )


def _evaluate(text: str, frame: pd.DataFrame, where: str) -> Any:
    try:
        return fm.design_matrices(text, frame, na_action="pass", extra_namespace=FORMULA_FUNCTIONS)
    except KeyError as exc:
        raise FormulaError(
            f"Unknown function or name {exc.args[0]!r} in {where}; available functions: "
            f"{sorted(FORMULA_FUNCTIONS)} and formulae's C(), I(), scale(), center(), standardize()."
        ) from None
    except Exception as exc:
        raise FormulaError(f"Could not evaluate {where} ({text!r}): {exc}") from None


def _levels_and_index(frame: pd.DataFrame, variables: tuple[str, ...]) -> tuple[tuple[str, ...], np.ndarray]:
    codes = []
    labels = []
    for var in variables:
        col = frame[var]
        if isinstance(col.dtype, pd.CategoricalDtype):
            unused = [c for c in col.cat.categories if c not in set(col.unique())]
            if unused:
                warnings.warn(
                    f"Grouping column '{var}' has unused categories {unused[:10]}"
                    f"{' ...' if len(unused) > 10 else ''}; they are dropped.",
                    DataWarning,
                    stacklevel=4,
                )
            col = col.cat.remove_unused_categories()
            code, uniq = col.cat.codes.to_numpy(), list(col.cat.categories)
        else:
            code, uniq = pd.factorize(col, sort=True)
        codes.append(np.asarray(code, dtype=np.int64))
        labels.append([str(u) for u in uniq])
    if len(variables) == 1:
        return tuple(labels[0]), codes[0]
    combo = np.stack(codes, axis=1)
    uniq_rows, index = np.unique(combo, axis=0, return_inverse=True)
    levels = tuple("_".join(labels[k][c] for k, c in enumerate(row)) for row in uniq_rows)
    return levels, index.reshape(-1).astype(np.int64)


def _build_factor(spec: FormulaSpec, name: str, frame: pd.DataFrame) -> Factor:
    parts = [g for g in spec.groups if g.factor == name]
    levels, index = _levels_and_index(frame, parts[0].factor_vars)
    if len(levels) < 2:
        raise DataError(
            f"Grouping factor '{name}' has a single level ({levels[0]!r}) in the data; "
            "a group-level term needs at least two levels."
        )
    terms: list[str] = []
    blocks: list[tuple[int, ...]] = []
    columns: list[np.ndarray] = []
    matrices = []
    for g in parts:
        dm = _evaluate(g.lhs, frame, f"the group-level term {g.source}")
        mat = np.asarray(np.asarray(dm.common), dtype=float)
        names = [brms_name(c) for c in dm.common.as_dataframe().columns]
        start = len(terms)
        for t in names:
            if t in terms:
                raise FormulaError(
                    f"The group-level term '{t}' for factor '{name}' is listed twice "
                    f"(in {g.source}); list each term once per grouping factor."
                )
            terms.append(t)
        idx = tuple(range(start, len(terms)))
        blocks.extend([idx] if g.correlated else [(i,) for i in idx])
        columns.append(mat)
        matrices.append(dm.common)
    return Factor(
        name=name,
        variables=parts[0].factor_vars,
        levels=levels,
        index=index,
        terms=tuple(terms),
        blocks=tuple(blocks),
        Z=np.concatenate(columns, axis=1),
        term_matrices=tuple(matrices),
    )


#: Condition number of the standardised population-level columns above which
#: lmmbayes warns about collinearity (pairwise |r| of about 0.9999 reaches it).
COLLINEARITY_LIMIT = 1e3


def collinear_columns(X: np.ndarray, names: tuple[str, ...], centre: bool) -> tuple[list[str], float]:
    """Columns in the worst near-linear dependence, and the condition number.

    Columns are scaled to unit length so units do not matter. With a centred
    intercept they are centred first (the intercept is then implicit), so a
    constant column counts as collinear with the intercept.
    """
    if X.shape[1] == 0:
        return [], 1.0
    M = X - X.mean(axis=0) if centre else X
    scale = np.sqrt((M**2).sum(axis=0))
    flat = np.flatnonzero(scale <= 1e-12 * max(1.0, float(np.abs(X).max())))
    if flat.size:
        return [names[k] for k in flat], float("inf")
    _, sv, vt = np.linalg.svd(M / scale, full_matrices=False)
    cond = float(sv[0] / sv[-1]) if sv[-1] > 0 else float("inf")
    if X.shape[1] < 2 and centre:
        return [], cond
    return [names[k] for k in np.flatnonzero(np.abs(vt[-1]) > 0.1)], cond


def _warn_collinearity(X: np.ndarray, names: tuple[str, ...], centre: bool) -> None:
    cols, cond = collinear_columns(X, names, centre)
    if cols and cond > COLLINEARITY_LIMIT:
        kind = "exactly" if cond > 1e12 else "strongly"
        warnings.warn(
            f"Population-level columns {cols} are {kind} collinear (condition number {cond:.3g}"
            f"{', constant with the intercept' if np.isinf(cond) else ''}); their coefficients "
            "are identified only by their priors. Drop or combine some of them.",
            DataWarning,
            stacklevel=3,
        )


def build_design(spec: FormulaSpec, data: Any) -> Design:
    """Evaluate ``spec`` on ``data``.

    Rows with a missing value in any column the formula uses are dropped
    with a :class:`~lmmbayes.errors.DataWarning`. The user's frame is never
    modified: all work happens on a copy of the needed columns.

    Raises
    ------
    DataError, FormulaError
    """
    df = as_pandas(data)
    needed = formula_variables(spec)
    _check_frame(df, needed, spec.formula)
    frame = df.loc[:, needed].copy()
    for col in needed:
        values = frame[col]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            if np.isinf(values.to_numpy(dtype=float, na_value=np.nan)).any():
                raise DataError(
                    f"Column '{col}' contains infinite values; replace or remove them before fitting."
                )
    keep = frame.notna().all(axis=1).to_numpy()
    n_dropped = int((~keep).sum())
    if n_dropped == len(frame):
        raise DataError(
            f"Every row has a missing value in at least one of the columns {needed}; nothing is left to fit."
        )
    dropped_index = tuple(frame.index[~keep])
    if n_dropped:
        warnings.warn(
            f"Dropped {n_dropped} of {len(frame)} rows with missing values in the columns "
            f"the formula uses; their index labels are in fit.dropped_rows.",
            DataWarning,
            stacklevel=3,
        )
        frame = frame.loc[keep]
    frame = frame.reset_index(drop=True)
    if spec.response in frame.columns and not (
        pd.api.types.is_numeric_dtype(frame[spec.response])
        and not pd.api.types.is_bool_dtype(frame[spec.response])
    ):
        raise DataError(
            f"The response '{spec.response}' must be numeric for family gaussian, "
            f"but its dtype is {frame[spec.response].dtype}."
        )
    dm = _evaluate(f"{spec.response} ~ {spec.fixed}", frame, "the population-level formula")
    y = np.asarray(np.asarray(dm.response), dtype=float).reshape(-1)
    if not np.all(np.isfinite(y)):
        raise DataError(f"The response '{spec.response}' evaluates to non-finite values.")
    labels = list(dm.common.as_dataframe().columns)
    X = np.asarray(np.asarray(dm.common), dtype=float)
    if spec.intercept == "centred":
        X, labels = X[:, 1:], labels[1:]
    coef_names = tuple(brms_name(c) for c in labels)
    _warn_collinearity(X, coef_names, spec.intercept == "centred")
    factors = tuple(_build_factor(spec, name, frame) for name in spec.factors)
    return Design(
        spec=spec,
        y=y,
        X=X,
        coef_names=coef_names,
        factors=factors,
        n_dropped=n_dropped,
        dropped_index=dropped_index,
        fixed_matrix=dm.common,
    )
