"""Formula strings to frozen specifications, in a closed language (see `.expr`)."""

from .expr import FUNCTIONS, Call, Column, Expr, Literal, Operation, brms_rename
from .parse import Additions, FormulaSpec, GroupTerm, Term, parse_formula

__all__ = ["FUNCTIONS", "Additions", "Call", "Column", "Expr", "FormulaSpec", "GroupTerm", "Literal", "Operation",
           "Term", "brms_rename", "parse_formula"]
