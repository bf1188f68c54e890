"""The pointwise log-likelihood of a fit's rows: in memory in row chunks, on Dask partition by partition.

``log p(y_i | draw)`` per draw, conditional on the drawn random effects (as
brms does), times the row's weight where the formula has ``weights()``. It
is computed on demand from the one linear predictor and the family's
density, in row chunks so that temporaries stay bounded, and never stored
on the fit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _validate as check
from ..design import Rows
from ..design.encoder import FactorCoding
from ..families import Family
from ..results.model import FitResult
from .linpred import Params, linear_predictor, params

#: Elements of one (draws x rows) temporary when computing the log-likelihood in chunks.
CHUNK_ELEMENTS = 2**22


def chunk_rows(chunk_size: Any, n_samples: int) -> int:
    """Rows per chunk: about `CHUNK_ELEMENTS` draw-row pairs, or the user's number."""
    if chunk_size is None:
        return max(1, CHUNK_ELEMENTS // max(1, n_samples))
    return check.count(chunk_size, "chunk_size (rows per chunk)")


@dataclass(frozen=True, eq=False)
class PointwiseLogLik:
    """Computes the log-likelihood of encoded rows, chunk by chunk (light enough to ship to Dask workers).

    Attributes
    ----------
    family : Family
    factors : tuple of FactorCoding
    centred : bool
    params : Params
        All posterior draws, stacked chain after chain.
    chunk : int
        Rows per chunk.
    """

    family: Family
    factors: tuple[FactorCoding, ...]
    centred: bool
    params: Params
    chunk: int

    def chunks(self, rows: Rows) -> Iterator[tuple[slice, np.ndarray]]:
        """(rows, (draws x rows) log-likelihood), ``chunk`` rows at a time."""
        dp = {k: v[:, None] for k, v in self.params.dpars.items()}
        for start in range(0, rows.n, self.chunk):
            part = slice(start, min(start + self.chunk, rows.n))
            eta = linear_predictor(self.params, rows, self.factors, centred=self.centred, rows_slice=part)
            assert rows.y is not None
            ll = self.family.logpdf(rows.y[part][None, :], eta, dp, rows.extra.take(part))
            if rows.weights is not None:
                ll = ll * rows.weights[part][None, :]
            yield part, ll

    def reduce(self, rows: Rows, terms: Callable[[np.ndarray], tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
        """Per-row results of ``terms`` applied to each chunk's log-likelihood, concatenated."""
        out: list[list[np.ndarray]] = []
        for _, ll in self.chunks(rows):
            parts = terms(ll)
            if not out:
                out = [[] for _ in parts]
            for k, values in enumerate(parts):
                out[k].append(values)
        return tuple(np.concatenate(o) for o in out)


def evaluator(fit: FitResult, chunk_size: Any = None) -> PointwiseLogLik:
    """The log-likelihood computer of ``fit`` (all draws)."""
    p = params(fit.posterior, fit.design)
    return PointwiseLogLik(fit.family, fit.design.factors, fit.design.intercept_in_eta, p,
                           chunk_rows(chunk_size, p.n))


def log_lik(fit: FitResult, *, chunk_size: int | None = None) -> np.ndarray:
    """Pointwise log-likelihood of the fitted data, (chain, draw, N).

    Parameters
    ----------
    fit : Fit
    chunk_size : int, optional
        Rows per chunk; by default about 4 million draw-row pairs at a time.

    Raises
    ------
    FitError
        For a fit made from a Dask DataFrame (the matrix needs the rows in one place).
    """
    rows = fit.design.require_rows(
        "The whole (draws x rows) pointwise log-likelihood",
        "loo(), waic() and loo_compare() work on it partition by partition; for the matrix itself, use a pandas "
        "sample of the data (ddf.sample(frac=...).compute()).")
    ev = evaluator(fit, chunk_size)
    out = np.empty((ev.params.n, rows.n))
    for part, ll in ev.chunks(rows):
        out[:, part] = ll
    return out.reshape(fit.n_chains, -1, rows.n)
