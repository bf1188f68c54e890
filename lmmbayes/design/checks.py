"""Checks on the encoded population-level columns: collinearity, constant columns."""

from __future__ import annotations

import numpy as np

from ..errors import DataWarning, warn

#: Condition number of the standardised population-level columns above which
#: lmmbayes warns about collinearity (pairwise |r| of about 0.9999 reaches it).
COLLINEARITY_LIMIT = 1e3
#: Above this condition number the columns are exactly collinear.
EXACT_LIMIT = 1e12


def collinear_columns(X: np.ndarray, names: tuple[str, ...], centre: bool) -> tuple[list[str], float]:
    """Columns in the worst near-linear dependence, and the condition number.

    Columns are scaled to unit length so units do not matter. With a centred
    intercept they are centred first (the intercept is then implicit), so a
    constant column counts as collinear with the intercept.
    """
    if X.shape[1] == 0 or X.shape[0] == 0:
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
    """`collinear_columns` from the Gram matrix of the (centred, if ``centre``) columns.

    For designs that hold sums, not rows. An eigen-decomposition of the Gram
    matrix squares the condition number, so its square root is reported.
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
        kind = "exactly" if cond > EXACT_LIMIT else "strongly"
        warn(f"Population-level columns {cols} are {kind} collinear (condition number {cond:.3g}"
             f"{', constant with the intercept' if np.isinf(cond) else ''}); their coefficients are identified "
             "only by their priors. Drop or combine some of them.", DataWarning)
