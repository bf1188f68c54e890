"""Join a :class:`~lmmbayes.formula.FormulaSpec` with data into a frozen :class:`Design`.

The design holds the response, the population-level matrix ``X`` and, per
grouping factor, a per-row level index and the (N, q) values of its terms.
There is deliberately no dense N x (levels x terms) random-effects matrix:
the engines gather ``r[index]`` instead.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import formulae as fm
import numpy as np
import pandas as pd

from .errors import DataError, DataWarning, FitError, FormulaError
from .formula import FormulaSpec

if TYPE_CHECKING:
    from .crossprod import ReducedRows

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn_data(message: str) -> None:
    """A DataWarning attributed to the user's first line outside lmmbayes, however deep the call."""
    warnings.warn(message, DataWarning, skip_file_prefixes=(_PACKAGE_DIR,))


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
    reduced : ReducedRows or None
        None when the design holds its rows (the usual case). A design built
        from a Dask DataFrame (:mod:`lmmbayes.distributed`) holds no rows:
        ``y``, ``X`` and every factor's ``index`` and ``Z`` are empty, and
        ``reduced`` keeps the cross-products and statistics the fit needs
        (:class:`~lmmbayes.crossprod.ReducedRows`). Check
        :attr:`rows_in_memory` before using the rows.
    """

    spec: FormulaSpec
    y: np.ndarray
    X: np.ndarray
    coef_names: tuple[str, ...]
    factors: tuple[Factor, ...]
    n_dropped: int
    dropped_index: tuple[Any, ...]
    fixed_matrix: Any = field(repr=False)
    reduced: ReducedRows | None = field(default=None, repr=False)

    @property
    def rows_in_memory(self) -> bool:
        """False for a design built from Dask input: it holds sums, not rows."""
        return self.reduced is None

    @property
    def n_obs(self) -> int:
        if self.reduced is not None:
            return self.reduced.n_obs
        return int(self.y.shape[0])

    @property
    def y_mean(self) -> float:
        return self.reduced.y_mean if self.reduced is not None else float(np.mean(self.y))

    @property
    def y_sd(self) -> float:
        """Standard deviation of the response (divisor N, as ``numpy.std``)."""
        return self.reduced.y_sd if self.reduced is not None else float(np.std(self.y))

    @property
    def y_median(self) -> float:
        return self.reduced.y_median if self.reduced is not None else float(np.median(self.y))

    @property
    def y_mad(self) -> float:
        """R's ``mad()`` of the response: 1.4826 times the median absolute deviation."""
        if self.reduced is not None:
            return self.reduced.y_mad
        return r_mad(self.y)

    def rescaled_response(self, shift: float, scale: float) -> Design:
        """The same design with the response ``(y − shift) / scale``."""
        if self.reduced is not None:
            return replace(self, reduced=self.reduced.rescaled_response(shift, scale))
        return replace(self, y=(self.y - shift) / scale)

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
        if self.reduced is not None:
            return self.reduced.x_means
        return self.X.mean(axis=0)

    def factor(self, name: str) -> Factor:
        for f in self.factors:
            if f.name == name:
                return f
        raise KeyError(name)


def require_rows(design: Design, what: str, instead: str) -> None:
    """Refuse ``what`` on a design that holds no rows (one fitted from a Dask DataFrame).

    Raises
    ------
    FitError
        Naming ``what`` and saying what to do ``instead``.
    """
    if not design.rows_in_memory:
        raise FitError(f"{what} needs the rows of the data, but this fit was made from a Dask DataFrame "
                       f"and keeps only their cross-products. {instead}")


def r_mad(y: np.ndarray) -> float:
    """R's ``mad()``: 1.4826 times the median absolute deviation from the median."""
    return float(1.4826 * np.median(np.abs(y - np.median(y))))


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


def _used_values(col: pd.Series) -> pd.Index:
    """A grouping column's distinct values in level order.

    A categorical column keeps its categories' order, less the unused ones
    (with a warning); any other column is sorted, as ``pandas.factorize``.
    """
    if isinstance(col.dtype, pd.CategoricalDtype):
        used = np.zeros(len(col.cat.categories), dtype=bool)
        used[col.cat.codes.to_numpy()[col.cat.codes.to_numpy() >= 0]] = True
        if not used.all():
            unused = list(col.cat.categories[~used])
            warn_data(f"Grouping column '{col.name}' has unused categories {unused[:10]}"
                      f"{' ...' if len(unused) > 10 else ''}; they are dropped.")
        return col.cat.categories[used]
    return pd.Index(pd.factorize(col, sort=True)[1])


def _variable_codes(col: pd.Series, values: pd.Index) -> np.ndarray:
    """Position of every row's value in ``values`` (-1 for a value absent from it)."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        # Map the (few) categories, then gather: no hashing of every row.
        lookup = np.append(values.get_indexer(col.cat.categories), -1)
        return lookup[col.cat.codes.to_numpy()]
    return np.asarray(values.get_indexer(col), dtype=np.int64)


@dataclass(frozen=True, eq=False)
class LevelCoder:
    """The levels of a grouping factor and the level number of any row.

    Levels are sorted as lme4 and brms sort them: per variable sorted values
    (a categorical column's category order), several variables (``a:b``) by
    their combinations in that order. Built once from rows that hold every
    level (all the rows, or only their distinct combinations), a coder numbers
    the rows of any chunk of the data consistently, e.g. each partition of a
    Dask frame.

    Attributes
    ----------
    variables : tuple of str
    values : tuple of pandas.Index
        Per variable, its values in level order.
    keys : numpy.ndarray or None
        Several variables: the sorted mixed-radix keys of the combinations
        that occur (one per level).
    levels : tuple of str
        Level labels (interaction levels joined with ``_``).
    """

    variables: tuple[str, ...]
    values: tuple[pd.Index, ...]
    keys: np.ndarray | None
    levels: tuple[str, ...]

    @classmethod
    def fit(cls, frame: pd.DataFrame, variables: tuple[str, ...]) -> tuple[LevelCoder, np.ndarray]:
        """The coder of the factor in ``frame``, and the level of each of its rows."""
        values = tuple(_used_values(frame[v]) for v in variables)
        codes = [_variable_codes(frame[v], u) for v, u in zip(variables, values)]
        labels = [[str(u) for u in vals] for vals in values]
        if len(variables) == 1:
            return cls(variables, values, None, tuple(labels[0])), codes[0]
        keys, index = np.unique(_mixed_radix(codes, values), return_inverse=True)
        digits = _digits(keys, values)
        levels = tuple("_".join(labels[k][d[i]] for k, d in enumerate(digits)) for i in range(keys.size))
        return cls(variables, values, keys, levels), index.reshape(-1).astype(np.int64)

    def codes(self, frame: pd.DataFrame) -> np.ndarray:
        """(n,) level of every row of ``frame``; -1 for a combination not among the levels."""
        codes = [_variable_codes(frame[v], u) for v, u in zip(self.variables, self.values)]
        if self.keys is None:
            return codes[0]
        key = _mixed_radix(codes, self.values)
        pos = np.minimum(np.searchsorted(self.keys, key), self.keys.size - 1)
        missing = (self.keys[pos] != key) | np.any(np.stack(codes) < 0, axis=0)
        return np.where(missing, -1, pos).astype(np.int64)


def _mixed_radix(codes: list[np.ndarray], values: tuple[pd.Index, ...]) -> np.ndarray:
    """One integer per row whose order is the lexicographic order of its codes."""
    if np.prod([float(len(v)) for v in values]) >= 2.0**62:
        raise DataError("A grouping factor combines too many distinct values to number its levels.")
    key = np.zeros_like(codes[0], dtype=np.int64)
    for c, vals in zip(codes, values):
        key = key * len(vals) + c
    return key


def _digits(keys: np.ndarray, values: tuple[pd.Index, ...]) -> list[np.ndarray]:
    """Inverse of :func:`_mixed_radix`: per variable, the code within each key."""
    out = []
    for vals in reversed(values):
        keys, digit = np.divmod(keys, len(vals))
        out.append(digit)
    return out[::-1]


def check_levels(name: str, levels: tuple[str, ...]) -> None:
    if len(levels) < 2:
        raise DataError(
            f"Grouping factor '{name}' has a single level ({levels[0]!r}) in the data; "
            "a group-level term needs at least two levels."
        )


def factor_terms(spec: FormulaSpec, name: str, frame: pd.DataFrame) -> tuple[
        tuple[str, ...], tuple[tuple[int, ...], ...], np.ndarray, tuple[Any, ...]]:
    """A factor's term names, correlation blocks, (N, q) term values and formulae matrices."""
    terms: list[str] = []
    blocks: list[tuple[int, ...]] = []
    columns: list[np.ndarray] = []
    matrices = []
    for g in (g for g in spec.groups if g.factor == name):
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
    return tuple(terms), tuple(blocks), np.concatenate(columns, axis=1), tuple(matrices)


def factor_variables(spec: FormulaSpec, name: str) -> tuple[str, ...]:
    """The data columns that define grouping factor ``name``."""
    return next(g.factor_vars for g in spec.groups if g.factor == name)


def _build_factor(spec: FormulaSpec, name: str, frame: pd.DataFrame) -> Factor:
    variables = factor_variables(spec, name)
    coder, index = LevelCoder.fit(frame, variables)
    check_levels(name, coder.levels)
    terms, blocks, Z, matrices = factor_terms(spec, name, frame)
    return Factor(
        name=name,
        variables=variables,
        levels=coder.levels,
        index=index,
        terms=terms,
        blocks=blocks,
        Z=Z,
        term_matrices=matrices,
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


def collinear_columns_from_gram(gram: np.ndarray, absmax: np.ndarray, names: tuple[str, ...],
                                centre: bool) -> tuple[list[str], float]:
    """:func:`collinear_columns` from the Gram matrix of the (centred, if ``centre``) columns.

    For designs that hold sums, not rows. An eigen-decomposition of the Gram
    matrix squares the condition number, so exact collinearity shows as a
    condition number near 1e8 rather than above 1e12.
    """
    if gram.shape[0] == 0:
        return [], 1.0
    scale = np.sqrt(np.clip(np.diag(gram), 0.0, None))
    flat = np.flatnonzero(scale <= 1e-12 * max(1.0, float(np.max(absmax))))
    if flat.size:
        return [names[k] for k in flat], float("inf")
    lam, vec = np.linalg.eigh(gram / np.outer(scale, scale))
    cond = float(np.sqrt(lam[-1] / lam[0])) if lam[0] > 0 else float("inf")
    if gram.shape[0] < 2 and centre:
        return [], cond
    return [names[k] for k in np.flatnonzero(np.abs(vec[:, 0]) > 0.1)], cond


def warn_collinearity(cols: list[str], cond: float) -> None:
    """The DataWarning for columns in a near-linear dependence, if it is strong enough."""
    if cols and cond > COLLINEARITY_LIMIT:
        kind = "exactly" if cond > 1e12 else "strongly"
        warn_data(
            f"Population-level columns {cols} are {kind} collinear (condition number {cond:.3g}"
            f"{', constant with the intercept' if np.isinf(cond) else ''}); their coefficients "
            "are identified only by their priors. Drop or combine some of them."
        )


def infinite_values_error(column: str) -> DataError:
    return DataError(f"Column '{column}' contains infinite values; replace or remove them before fitting.")


def has_infinite(values: pd.Series) -> bool:
    """Whether a numeric (not boolean) column holds ±inf."""
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return False
    return bool(np.isinf(values.to_numpy(dtype=float, na_value=np.nan)).any())


def all_dropped_error(needed: list[str]) -> DataError:
    return DataError(
        f"Every row has a missing value in at least one of the columns {needed}; nothing is left to fit."
    )


def warn_dropped(n_dropped: int, n_rows: int, note: str = "") -> None:
    """The DataWarning for rows dropped for missing values."""
    warn_data(f"Dropped {n_dropped} of {n_rows} rows with missing values in the columns "
              f"the formula uses; their index labels are in fit.dropped_rows{note}.")


def check_response(spec: FormulaSpec, frame: pd.DataFrame) -> None:
    """DataError unless the response column (if it is a column) is numeric."""
    if spec.response in frame.columns and not (
        pd.api.types.is_numeric_dtype(frame[spec.response])
        and not pd.api.types.is_bool_dtype(frame[spec.response])
    ):
        raise DataError(
            f"The response '{spec.response}' must be numeric for family gaussian, "
            f"but its dtype is {frame[spec.response].dtype}."
        )


def nonfinite_response_error(spec: FormulaSpec) -> DataError:
    return DataError(f"The response '{spec.response}' evaluates to non-finite values.")


def fixed_part(spec: FormulaSpec, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], Any]:
    """y, X (without a centred intercept's column), coefficient names and formulae's matrix."""
    dm = _evaluate(f"{spec.response} ~ {spec.fixed}", frame, "the population-level formula")
    y = np.asarray(np.asarray(dm.response), dtype=float).reshape(-1)
    if not np.all(np.isfinite(y)):
        raise nonfinite_response_error(spec)
    labels = list(dm.common.as_dataframe().columns)
    X = np.asarray(np.asarray(dm.common), dtype=float)
    if spec.intercept == "centred":
        X, labels = X[:, 1:], labels[1:]
    return y, X, tuple(brms_name(c) for c in labels), dm.common


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
        if has_infinite(frame[col]):
            raise infinite_values_error(col)
    keep = frame.notna().all(axis=1).to_numpy()
    n_dropped = int((~keep).sum())
    if n_dropped == len(frame):
        raise all_dropped_error(needed)
    dropped_index = tuple(frame.index[~keep])
    if n_dropped:
        warn_dropped(n_dropped, len(frame))
        frame = frame.loc[keep]
    frame = frame.reset_index(drop=True)
    check_response(spec, frame)
    y, X, coef_names, matrix = fixed_part(spec, frame)
    warn_collinearity(*collinear_columns(X, coef_names, spec.intercept == "centred"))
    factors = tuple(_build_factor(spec, name, frame) for name in spec.factors)
    return Design(
        spec=spec,
        y=y,
        X=X,
        coef_names=coef_names,
        factors=factors,
        n_dropped=n_dropped,
        dropped_index=dropped_index,
        fixed_matrix=matrix,
    )
