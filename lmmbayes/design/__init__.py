"""Spec + family + data -> frozen Design: the one row encoder, levels, checks, cross-products, Dask."""

from .build import Design, Stats, build_design
from .encoder import (
           INTERCEPT,
           Component,
           EncodedTerm,
           FactorCoding,
           FactorRows,
           RowEncoder,
           Rows,
           learn_encoder,
)
from .fingerprint import response_fingerprint
from .frame import as_frame, complete_rows
from .levels import LevelCoder, Levels, level_label
from .transforms import State

__all__ = [
           "INTERCEPT",
           "Component",
           "Design",
           "EncodedTerm",
           "FactorCoding",
           "FactorRows",
           "LevelCoder",
           "Levels",
           "RowEncoder",
           "Rows",
           "State",
           "Stats",
           "as_frame",
           "build_design",
           "complete_rows",
           "learn_encoder",
           "level_label",
           "response_fingerprint",
]
