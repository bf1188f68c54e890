"""Levels of categorical variables and grouping factors: the one level coder.

A `Levels` holds one variable's values in level order (a categorical
column's category order, otherwise sorted, as R and brms order them) and
numbers any rows by them. A `LevelCoder` combines the levels of the
variables that define a grouping factor (``a:b``, nested ``a/b``) and keeps
only the combinations that occur. Both match values, never labels, so new
data of another numeric dtype (``1.0`` for ``1``) finds its level; labels are
made unique or refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError, DataWarning, warn

KINDS = ("str", "int", "float", "bool")


def level_label(value: Any) -> str:
    """A level's label: strings as they are, integers and integral floats without a decimal point."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.15g}"
    return str(value)


def _kind(values: np.ndarray) -> str:
    if values.dtype == bool:
        return "bool"
    if np.issubdtype(values.dtype, np.integer):
        return "int"
    if np.issubdtype(values.dtype, np.floating):
        return "float"
    return "str"


@dataclass(frozen=True)
class Levels:
    """One variable's levels, in order.

    Attributes
    ----------
    values : tuple
        The values (str, int, float or bool), JSON-serialisable.
    kind : str
        One of ``str``, ``int``, ``float``, ``bool``.
    """

    values: tuple[Any, ...]
    kind: str

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(level_label(v) for v in self.values)

    def __len__(self) -> int:
        return len(self.values)

    @classmethod
    def learn(cls, col: pd.Series, name: str, *, warn_unused: bool = True) -> Levels:
        """The levels of a column of complete rows: category order (used ones) or sorted values."""
        if isinstance(col.dtype, pd.CategoricalDtype):
            codes = col.cat.codes.to_numpy()
            used = np.zeros(len(col.cat.categories), dtype=bool)
            used[codes[codes >= 0]] = True
            if warn_unused and not used.all():
                unused = [level_label(v) for v in col.cat.categories[~used]]
                warn(f"Column '{name}' has unused categories {unused[:10]}{' ...' if len(unused) > 10 else ''}; "
                     "they are dropped.", DataWarning)
            cats = col.cat.categories[used]
            values = np.asarray(cats)
            kind = _kind(values) if values.dtype != object else "str"
            return cls(tuple(_plain(v, kind) for v in values), kind)
        values = np.asarray(col.to_numpy())
        kind = _kind(values)
        uniq = pd.unique(values)
        try:
            ordered = np.sort(uniq)
        except TypeError:
            raise DataError(f"Column '{name}' mixes values that cannot be ordered; convert it to strings "
                            "or a categorical.") from None
        return cls(tuple(_plain(v, kind) for v in ordered), kind)

    def codes(self, values: Any) -> np.ndarray:
        """(n,) position of every value among the levels; -1 for a value not among them."""
        series = values if isinstance(values, pd.Series) else pd.Series(np.asarray(values, dtype=object)
                                                                       if np.asarray(values).dtype == object
                                                                       else np.asarray(values))
        if isinstance(series.dtype, pd.CategoricalDtype):
            lookup = np.append(self.codes(np.asarray(series.cat.categories)), -1)
            return lookup[series.cat.codes.to_numpy()]
        target = series.to_numpy()
        index = self.index()
        if self.kind in ("int", "float") and target.dtype.kind in "iuf":
            return np.asarray(pd.Index(np.asarray(self.values, dtype=float)).get_indexer(target.astype(float)),
                              dtype=np.int64)
        if self.kind == "bool" and target.dtype == bool:
            return np.asarray(index.get_indexer(target), dtype=np.int64)
        if self.kind == "str" and target.dtype == object and all(isinstance(v, str) for v in target):
            return np.asarray(index.get_indexer(target), dtype=np.int64)
        # another kind of value than in training (strings for an integer column, numbers for a string one)
        labels = pd.Index(self.labels)
        return np.asarray(labels.get_indexer([level_label(v) for v in target]), dtype=np.int64)

    def index(self) -> pd.Index:
        if self.kind == "str":
            return pd.Index(list(self.values), dtype=object)
        return pd.Index(np.asarray(self.values, dtype={"int": np.int64, "float": float, "bool": bool}[self.kind]))


def _plain(value: Any, kind: str) -> Any:
    """A numpy scalar as the matching Python value (JSON-serialisable)."""
    if kind == "bool":
        return bool(value)
    if kind == "int":
        return int(value)
    if kind == "float":
        return float(value)
    return str(value)


@dataclass(frozen=True)
class LevelCoder:
    """The levels of a grouping factor and the level number of any row.

    Attributes
    ----------
    name : str
        The factor's name (``"county"``, ``"batch:cask"``).
    variables : tuple of str
    levels : tuple of Levels
        Per variable, its values in level order.
    keys : tuple of int
        Several variables: the sorted mixed-radix keys of the combinations that
        occur (one per level); empty for one variable.
    """

    name: str
    variables: tuple[str, ...]
    levels: tuple[Levels, ...]
    keys: tuple[int, ...] = ()

    @classmethod
    def learn(cls, frame: pd.DataFrame, name: str, variables: tuple[str, ...]) -> LevelCoder:
        """The coder of the factor from rows that hold every level (all rows, or their distinct combinations)."""
        levels = tuple(Levels.learn(frame[v], v) for v in variables)
        if len(variables) == 1:
            coder = cls(name, variables, levels)
        else:
            codes = [lev.codes(frame[v]) for v, lev in zip(variables, levels)]
            keys = np.unique(_mixed_radix(codes, levels))
            coder = cls(name, variables, levels, tuple(int(k) for k in keys))
        coder.check_labels()
        if coder.n_levels < 2:
            raise DataError(f"Grouping factor '{name}' has a single level ({coder.labels[0]!r}) in the data; "
                            "a group-level term needs at least two levels.")
        return coder

    @property
    def n_levels(self) -> int:
        return len(self.keys) if self.keys else len(self.levels[0])

    @property
    def labels(self) -> tuple[str, ...]:
        """Level labels; interaction levels joined with ``_`` as brms does."""
        if not self.keys:
            return self.levels[0].labels
        digits = _digits(np.asarray(self.keys, dtype=np.int64), self.levels)
        per = [lev.labels for lev in self.levels]
        return tuple("_".join(per[k][d[i]] for k, d in enumerate(digits)) for i in range(len(self.keys)))

    def check_labels(self) -> None:
        """DataError if two levels would get the same label (e.g. ('N', 'p_1') and ('N_p', '1'))."""
        labels = self.labels
        if len(set(labels)) == len(labels):
            return
        seen: dict[str, int] = {}
        for i, lab in enumerate(labels):
            if lab in seen:
                clash = [self._combination(seen[lab]), self._combination(i)]
                raise DataError(
                    f"Grouping factor '{self.name}': the level combinations {clash[0]} and {clash[1]} would both "
                    f"be labelled {lab!r} (brms joins the values of {list(self.variables)} with '_'); rename the "
                    "values so that the labels are unique, e.g. without '_'.")
            seen[lab] = i

    def _combination(self, i: int) -> tuple[str, ...]:
        if not self.keys:
            return (self.levels[0].labels[i],)
        digits = _digits(np.asarray([self.keys[i]], dtype=np.int64), self.levels)
        return tuple(lev.labels[d[0]] for lev, d in zip(self.levels, digits))

    def codes(self, frame: pd.DataFrame) -> np.ndarray:
        """(n,) level of every row of ``frame``; -1 for a combination not among the levels."""
        codes = [lev.codes(frame[v]) for v, lev in zip(self.variables, self.levels)]
        if not self.keys:
            return codes[0]
        keys = np.asarray(self.keys, dtype=np.int64)
        key = _mixed_radix(codes, self.levels)
        pos = np.minimum(np.searchsorted(keys, key), keys.size - 1)
        missing = (keys[pos] != key) | np.any(np.stack(codes) < 0, axis=0)
        return np.where(missing, -1, pos).astype(np.int64)

    def row_labels(self, frame: pd.DataFrame) -> np.ndarray:
        """Each row's level label (for levels absent from the training data too)."""
        cols = [[level_label(v) for v in frame[var].to_numpy()] for var in self.variables]
        if len(cols) == 1:
            return np.asarray(cols[0], dtype=object)
        return np.asarray(["_".join(parts) for parts in zip(*cols)], dtype=object)


def _mixed_radix(codes: list[np.ndarray], levels: tuple[Levels, ...]) -> np.ndarray:
    """One integer per row whose order is the lexicographic order of its codes."""
    if np.prod([float(len(v)) for v in levels]) >= 2.0**62:
        raise DataError("A grouping factor combines too many distinct values to number its levels.")
    key = np.zeros_like(codes[0], dtype=np.int64)
    for c, lev in zip(codes, levels):
        key = key * len(lev) + np.maximum(c, 0)
    return key


def _digits(keys: np.ndarray, levels: tuple[Levels, ...]) -> list[np.ndarray]:
    """Inverse of `_mixed_radix`: per variable, the code within each key."""
    out = []
    for lev in reversed(levels):
        keys, digit = np.divmod(keys, len(lev))
        out.append(digit)
    return out[::-1]
