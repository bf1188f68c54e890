"""Evaluate formula expressions against the data's columns, and nothing else.

`Evaluator` walks the closed expression nodes of `lmmbayes.spec.expr`:
a column is looked up in the frame (never anywhere else), literals are
numbers, operators act elementwise, and a call runs only the implementation
registered here under the same name as in the allow-list. Stateful
transforms (``center``, ``scale``, ``poly``, ``bs``) learn their state from
the training rows once; the state is plain numbers (`State`), stored
in the design and in fit files, and reused for new rows.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError, FormulaError
from ..spec.expr import FUNCTIONS, Call, Column, Expr, Literal, Operation, as_flag


@dataclass(frozen=True)
class State:
    """What a stateful transform learnt from the training rows: numbers only.

    Attributes
    ----------
    fn : str
        The function (``scale``, ``poly``...).
    params : tuple of (str, float or tuple of float)
    """

    fn: str
    params: tuple[tuple[str, Any], ...]

    def get(self, name: str) -> Any:
        return dict(self.params)[name]


#: (domain check, message) of the elementwise functions.
_ELEMENTWISE: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray], str]] = {
    "log": (np.log, lambda x: x > 0, "x > 0"),
    "log1p": (np.log1p, lambda x: x > -1, "x > -1"),
    "log2": (np.log2, lambda x: x > 0, "x > 0"),
    "log10": (np.log10, lambda x: x > 0, "x > 0"),
    "exp": (np.exp, lambda x: x < 709.78, "x < 709.78 (larger values overflow)"),
    "sqrt": (np.sqrt, lambda x: x >= 0, "x >= 0"),
    "abs": (np.abs, lambda x: np.ones(x.shape, dtype=bool), ""),
}
_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv, "**": operator.pow,
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}
_STATEFUL = ("center", "scale", "standardize", "poly", "bs")
IMPLEMENTED = frozenset({*_ELEMENTWISE, "I", "C", "factor", *_STATEFUL, "offset"})


class Evaluator:
    """Evaluates expressions on the rows of one frame.

    Parameters
    ----------
    frame : pandas.DataFrame
        Complete rows with numpy dtypes (`lmmbayes.design.frame.complete_rows`).
    states : dict
        Learnt states by call text; with ``learn``, missing ones are learnt here and added.
    learn : bool
        Whether this frame holds the training rows.
    what : str
        Where the rows come from, for messages (``"data"``, ``"newdata"``).
    """

    def __init__(self, frame: pd.DataFrame, states: dict[str, State], *, learn: bool = False,
                 what: str = "data") -> None:
        self.frame = frame
        self.states = states
        self.learn = learn
        self.what = what
        self.n = len(frame)

    # -- values --------------------------------------------------------------------------
    def value(self, e: Expr) -> Any:
        """The expression's values: (n,) or (n, k) array, or a scalar for a literal."""
        if isinstance(e, Column):
            if e.name not in self.frame.columns:
                raise DataError(f"{self.what} lacks the column '{e.name}'.")
            col = self.frame[e.name]
            if isinstance(col.dtype, pd.CategoricalDtype):
                return np.asarray(col.astype(object))
            return col.to_numpy()
        if isinstance(e, Literal):
            return e.value
        if isinstance(e, Operation):
            args = [self.value(a) for a in e.args]
            if len(args) == 1:
                x = self._numbers(args[0], e)
                return -x if e.op == "-" else x
            a, b = args
            if e.op in ("==", "!="):
                return np.asarray(_BINARY[e.op](a, b), dtype=bool)
            a, b = self._numbers(a, e), self._numbers(b, e)
            with np.errstate(all="ignore"):
                out = _BINARY[e.op](a, b)
            if e.op not in ("<", "<=", ">", ">="):
                self._check_finite(out, e, a if np.ndim(a) else b, "")
            return out
        return self._call(e)

    def numeric(self, e: Expr) -> np.ndarray:
        """(n, k) float columns of a numeric expression."""
        v = self.value(e)
        arr = np.asarray(v, dtype=float) if not isinstance(v, np.ndarray) or v.dtype != object else None
        if arr is None:
            raise DataError(f"'{e}' is not numeric in {self.what}; use C({e}) for a categorical predictor.")
        if arr.ndim == 0:
            arr = np.full(self.n, float(arr))
        return arr.reshape(self.n, -1)

    def is_categorical(self, e: Expr) -> bool:
        """Whether ``e`` is a categorical predictor: C()/factor(), or values that are not numbers."""
        if isinstance(e, Call) and e.fn in ("C", "factor"):
            return True
        v = self.value(e)
        if isinstance(e, Column) and isinstance(self.frame[e.name].dtype, pd.CategoricalDtype):
            return True
        return isinstance(v, np.ndarray) and (v.dtype == bool or v.dtype == object)

    def categories(self, e: Expr) -> pd.Series:
        """The values of a categorical expression (C(x) is x itself)."""
        inner = e.args[0] if isinstance(e, Call) and e.fn in ("C", "factor") else e
        if isinstance(inner, Column) and isinstance(self.frame[inner.name].dtype, pd.CategoricalDtype):
            return self.frame[inner.name].reset_index(drop=True)
        v = self.value(inner)
        if not isinstance(v, np.ndarray):
            v = np.full(self.n, v)
        return pd.Series(v)

    # -- helpers -------------------------------------------------------------------------
    def _numbers(self, v: Any, e: Expr) -> Any:
        if isinstance(v, (bool, np.bool_)):
            return float(v)
        if isinstance(v, str):
            raise DataError(f"'{e}' uses the string {v!r} in arithmetic.")
        if isinstance(v, np.ndarray):
            if v.dtype == object:
                raise DataError(f"'{e}' does arithmetic on a non-numeric column in {self.what}; only numeric "
                                "columns can be transformed.")
            return v.astype(float)
        return float(v)

    def _check_finite(self, out: Any, e: Expr, x: Any, domain: str) -> None:
        """DataError naming ``e``, how many rows and an example when ``out`` is not finite."""
        bad = ~np.isfinite(np.asarray(out, dtype=float))
        if bad.ndim > 1:
            bad = bad.any(axis=tuple(range(1, bad.ndim)))
        if np.any(bad):
            self._fail(e, np.broadcast_to(bad, (self.n,)), x, domain)

    def _fail(self, e: Expr, bad: np.ndarray, x: Any, domain: str) -> None:
        rows = np.flatnonzero(bad)
        k = int(rows[0])
        label = self.frame.index[k] if k < len(self.frame.index) else k
        xv = np.ravel(np.broadcast_to(np.asarray(x, dtype=float), (self.n,) + np.shape(x)[1:])[k])[0]
        need = f"; {domain}" if domain else ""
        raise DataError(f"'{e}' is not finite for {rows.size} row(s) of {self.what} (e.g. row {label!r}, where "
                        f"its argument is {xv:g}){need}.")

    def _call(self, c: Call) -> Any:
        if c.fn not in IMPLEMENTED or c.fn not in FUNCTIONS:  # the allow-list and the implementations agree
            raise FormulaError(f"The function '{c.fn}' is not allowed.")
        if c.fn in _ELEMENTWISE:
            fn, ok, domain = _ELEMENTWISE[c.fn]
            x = self._numbers(self.value(c.args[0]), c)
            inside = np.broadcast_to(ok(np.asarray(x)), np.shape(x))
            if not np.all(inside):
                bad = ~inside if np.ndim(x) == 1 else ~inside.all(axis=tuple(range(1, np.ndim(x)))) \
                    if np.ndim(x) else np.full(self.n, True)
                self._fail(c, bad, x, f"{c.fn}() needs {domain}")
            with np.errstate(all="ignore"):
                out = fn(x)
            self._check_finite(out, c, x, "")
            return out
        if c.fn == "I":
            return self.value(c.args[0])
        if c.fn in ("C", "factor"):
            return self.value(c.args[0])
        if c.fn == "offset":
            return self._numbers(self.value(c.args[0]), c)
        x = np.asarray(self._numbers(self.value(c.args[0]), c), dtype=float)
        if x.ndim != 1:
            raise DataError(f"{c.fn}() in '{c}' needs one column as its argument.")
        key = str(c)
        state = self.states.get(key)
        if state is None:
            if not self.learn:
                raise DataError(f"No learnt state for '{key}'.")
            state = _LEARN[c.fn](c, x)
            self.states[key] = state
        return _APPLY[c.fn](c, x, state)


# -- stateful transforms: learn on training rows, apply to any rows ---------------------------------


def _learn_centre(c: Call, x: np.ndarray) -> State:
    return State(c.fn, (("mean", float(np.mean(x))),))


def _learn_scale(c: Call, x: np.ndarray) -> State:
    sd = float(np.std(x, ddof=1)) if x.size > 1 else 0.0
    if not sd > 0:
        raise DataError(f"'{c}': the column is constant in the data, so it cannot be scaled.")
    return State(c.fn, (("mean", float(np.mean(x))), ("sd", sd)))


def _apply_centre(c: Call, x: np.ndarray, s: State) -> np.ndarray:
    return x - s.get("mean")


def _apply_scale(c: Call, x: np.ndarray, s: State) -> np.ndarray:
    return (x - s.get("mean")) / s.get("sd")


def _learn_poly(c: Call, x: np.ndarray) -> State:
    degree = int(c.option("degree", 1))
    raw = as_flag(c.option("raw", False))
    if raw:
        return State("poly", (("degree", degree), ("raw", True), ("alpha", ()), ("norm2", ())))
    unique = np.unique(x).size
    if degree >= unique:
        raise DataError(f"'{c}': the degree ({degree}) must be less than the number of distinct values of its "
                        f"argument ({unique}).")
    # R's poly(): monic orthogonal polynomials by the three-term recurrence, normalised on the data.
    alpha, norm2 = [], [1.0]
    p_prev, p = np.zeros_like(x), np.ones_like(x)
    norm2.append(float(x.size))
    for k in range(degree):
        a = float(np.sum(x * p * p) / np.sum(p * p))
        alpha.append(a)
        nxt = (x - a) * p - (norm2[-1] / norm2[-2]) * p_prev if k > 0 else (x - a) * p
        p_prev, p = p, nxt
        norm2.append(float(np.sum(p * p)))
    return State("poly", (("degree", degree), ("raw", False), ("alpha", tuple(alpha)), ("norm2", tuple(norm2))))


def _apply_poly(c: Call, x: np.ndarray, s: State) -> np.ndarray:
    degree = int(s.get("degree"))
    if s.get("raw"):
        return np.column_stack([x**k for k in range(1, degree + 1)])
    alpha, norm2 = s.get("alpha"), s.get("norm2")
    Z = np.ones((x.size, degree + 1))
    Z[:, 1] = x - alpha[0]
    for i in range(1, degree):
        Z[:, i + 1] = (x - alpha[i]) * Z[:, i] - (norm2[i + 1] / norm2[i]) * Z[:, i - 1]
    return Z[:, 1:] / np.sqrt(np.asarray(norm2[2:]))


def _learn_bs(c: Call, x: np.ndarray) -> State:
    degree = int(c.option("degree", 3))
    intercept = as_flag(c.option("intercept", False))
    df = c.option("df")
    n_inner = 0 if df is None else int(df) - degree - int(intercept)
    if n_inner < 0:
        raise DataError(f"'{c}': df must be at least degree + intercept = {degree + int(intercept)}.")
    lo, hi = float(np.min(x)), float(np.max(x))
    if not hi > lo:
        raise DataError(f"'{c}': the column is constant in the data, so no spline basis can be built on it.")
    probs = np.linspace(0.0, 1.0, n_inner + 2)[1:-1]
    inner = tuple(float(v) for v in np.quantile(x, probs)) if n_inner else ()
    return State("bs", (("degree", degree), ("intercept", intercept), ("knots", inner), ("boundary", (lo, hi))))


def _apply_bs(c: Call, x: np.ndarray, s: State) -> np.ndarray:
    from scipy.interpolate import BSpline

    degree, (lo, hi) = int(s.get("degree")), s.get("boundary")
    knots = np.concatenate([[lo] * (degree + 1), list(s.get("knots")), [hi] * (degree + 1)])
    n_basis = knots.size - degree - 1
    inside = np.clip(x, lo, hi)
    basis = BSpline.design_matrix(inside, knots, degree, extrapolate=False).toarray()
    outside = (x < lo) | (x > hi)
    if outside.any():  # beyond the boundary knots: continue the boundary polynomial pieces
        for j in range(n_basis):
            coef = np.zeros(n_basis)
            coef[j] = 1.0
            basis[outside, j] = BSpline(knots, coef, degree, extrapolate=True)(x[outside])
    return basis if s.get("intercept") else basis[:, 1:]


_LEARN: dict[str, Callable[[Call, np.ndarray], State]] = {
    "center": _learn_centre, "scale": _learn_scale, "standardize": _learn_scale, "poly": _learn_poly,
    "bs": _learn_bs,
}
_APPLY: dict[str, Callable[[Call, np.ndarray, State], np.ndarray]] = {
    "center": _apply_centre, "scale": _apply_scale, "standardize": _apply_scale, "poly": _apply_poly,
    "bs": _apply_bs,
}


def stateful_calls(e: Expr) -> list[Call]:
    """Every stateful call inside ``e`` (to check a frame's transforms can be learnt, e.g. not on Dask)."""
    out: list[Call] = []
    if isinstance(e, Call):
        if e.fn in _STATEFUL:
            out.append(e)
        for a in e.args:
            out += stateful_calls(a)
    elif isinstance(e, Operation):
        for a in e.args:
            out += stateful_calls(a)
    return out

