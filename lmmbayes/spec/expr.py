"""The closed expression language of formulas: columns, numbers, operators and allow-listed calls.

formulae parses a formula into lazy call trees; `from_formulae`
turns them into the frozen nodes below and refuses anything outside the
language: a function not in `FUNCTIONS`, a dotted name such as
``os.system`` or ``x.to_csv``, a string outside a comparison, an argument a
function does not take. Nothing here evaluates anything: the design layer
(`lmmbayes.design.transforms`) evaluates these nodes against the data's
columns only, so a formula can never reach Python objects, builtins or
modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from ..errors import FormulaError

#: Binary operators, as formulae names them (``op.__name__``) -> our symbol.
BINARY = {"add": "+", "sub": "-", "mul": "*", "truediv": "/", "pow": "**",
          "eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
UNARY = {"neg": "-", "pos": "+"}
COMPARISONS = frozenset({"==", "!=", "<", "<=", ">", ">="})


@dataclass(frozen=True)
class Column:
    """A column of the data, by name."""

    name: str

    def __str__(self) -> str:
        return self.name if self.name.isidentifier() else f"`{self.name}`"


@dataclass(frozen=True)
class Literal:
    """A number, a boolean or (only as an operand of a comparison) a string."""

    value: float | int | bool | str

    def __str__(self) -> str:
        return repr(self.value) if isinstance(self.value, str) else str(self.value)


@dataclass(frozen=True)
class Operation:
    """An arithmetic or comparison operator applied elementwise: ``x + 1``, ``-x``, ``x > 2``."""

    op: str
    args: tuple[Expr, ...]

    def __str__(self) -> str:
        if len(self.args) == 1:
            return f"{self.op}{_wrap(self.args[0])}"
        op = "^" if self.op == "**" else self.op  # R's spelling, so names are brms's: I(x^2) -> IxE2
        return f"{_wrap(self.args[0])} {op} {_wrap(self.args[1])}"


@dataclass(frozen=True)
class Call:
    """A call of an allow-listed function (`FUNCTIONS`)."""

    fn: str
    args: tuple[Expr, ...]
    kwargs: tuple[tuple[str, Expr], ...] = ()

    def __str__(self) -> str:
        parts = [str(a) for a in self.args] + [f"{k}={v}" for k, v in self.kwargs]
        return f"{self.fn}({', '.join(parts)})"

    def option(self, name: str, default: Any = None) -> Any:
        """The literal value of keyword ``name`` (or of its positional slot), else ``default``."""
        sig = FUNCTIONS[self.fn]
        for key, value in self.kwargs:
            if key == name:
                return _literal(value)
        if name in sig.positional:
            k = sig.positional.index(name)
            if k < len(self.args):
                return _literal(self.args[k])
        return default


Expr = Union[Column, Literal, Operation, Call]


def _wrap(e: Expr) -> str:
    return f"({e})" if isinstance(e, Operation) and len(e.args) == 2 else str(e)


def _literal(e: Expr) -> Any:
    return e.value if isinstance(e, Literal) else e


@dataclass(frozen=True)
class Signature:
    """What a formula function accepts.

    Attributes
    ----------
    name : str
    positional : tuple of str
        Argument names in order; the first is the data (an expression).
    options : dict
        Per optional argument after the first: the kind of literal it takes
        (``"int>=1"``, ``"bool"``, ``"number"``).
    kind : str
        ``"elementwise"`` (a numpy ufunc), ``"identity"`` (``I``),
        ``"categorical"`` (``C``, ``factor``), ``"stateful"`` (its state is
        learnt on the training rows and reused on new rows), ``"offset"``.
    doc : str
    """

    name: str
    positional: tuple[str, ...]
    options: tuple[tuple[str, str], ...]
    kind: str
    doc: str

    @property
    def option_kinds(self) -> dict[str, str]:
        return dict(self.options)


def _sig(name: str, kind: str, doc: str, *options: tuple[str, str]) -> Signature:
    return Signature(name, ("x", *(o for o, _ in options)), tuple(options), kind, doc)


#: The functions a formula may call: nothing else is reachable from a formula string.
FUNCTIONS: dict[str, Signature] = {s.name: s for s in (
    _sig("log", "elementwise", "natural logarithm (x > 0)"),
    _sig("log1p", "elementwise", "log(1 + x) (x > -1)"),
    _sig("log2", "elementwise", "base-2 logarithm (x > 0)"),
    _sig("log10", "elementwise", "base-10 logarithm (x > 0)"),
    _sig("exp", "elementwise", "exponential"),
    _sig("sqrt", "elementwise", "square root (x >= 0)"),
    _sig("abs", "elementwise", "absolute value"),
    _sig("I", "identity", "arithmetic as written: I(x**2), I(x / 1000), I(x > 2)"),
    _sig("C", "categorical", "treat a column as categorical (treatment coding)"),
    _sig("factor", "categorical", "R's name for C()"),
    _sig("center", "stateful", "x minus its training mean"),
    _sig("scale", "stateful", "(x - mean) / sd of the training rows, as R's scale()"),
    _sig("standardize", "stateful", "the same as scale()"),
    _sig("poly", "stateful", "orthogonal polynomials as R's poly(x, degree); raw=True for plain powers",
         ("degree", "int>=1"), ("raw", "bool")),
    _sig("bs", "stateful", "B-spline basis as R's splines::bs(x, df, degree, intercept)",
         ("df", "int>=1"), ("degree", "int>=1"), ("intercept", "bool")),
    _sig("offset", "offset", "a term with its coefficient fixed at 1 (on the link scale)"),
)}


def allowed_text() -> str:
    """The allow-list, for error messages."""
    return ", ".join(f"{n}()" for n in FUNCTIONS)


def _bad(where: str, what: str) -> FormulaError:
    return FormulaError(f"{what} in {where}. Formulas may use the data's columns, numbers, the "
                        f"operators + - * / ** and comparisons inside a call, and the functions {allowed_text()}.")


def from_formulae(node: Any, where: str, *, top: bool = False) -> Expr:
    """Convert one of formulae's lazy nodes (or a component) into the closed language.

    Parameters
    ----------
    node : formulae Variable/Call component or LazyVariable/LazyValue/LazyOperator/LazyCall
    where : str
        The term as written, for messages.
    top : bool
        Whether ``node`` is a whole term component (then a bare number is not a column).

    Raises
    ------
    FormulaError
        For anything outside the language, naming it and listing what is allowed.
    """
    kind = type(node).__name__
    if kind == "Variable":  # a formulae term component: a column name
        if getattr(node, "level", None) is not None:
            raise _bad(where, f"Subscript '{node.name}[{node.level}]'")
        return _column(node.name, where)
    if kind == "Call":
        return from_formulae(node.call, where)
    if kind == "LazyVariable":
        return _column(node.name, where)
    if kind == "LazyValue":
        value = node.value
        if isinstance(value, bool) or isinstance(value, (int, float)):
            return Literal(value)
        if isinstance(value, str):
            return Literal(value)
        raise _bad(where, f"The value {value!r}")
    if kind == "LazyOperator":
        name = node.op.__name__
        table = UNARY if len(node.args) == 1 else BINARY
        if name not in table:
            raise _bad(where, f"The operator '{node.symbol}'")
        args = tuple(from_formulae(a, where) for a in node.args)
        op = table[name]
        strings = [a for a in args if isinstance(a, Literal) and isinstance(a.value, str)]
        if strings and op not in COMPARISONS:
            raise _bad(where, f"The string {strings[0]} used with '{op}' (strings may only be compared)")
        return Operation(op, args)
    if kind == "LazyCall":
        return _call(node, where)
    raise _bad(where, f"The expression '{node}'")


def _column(name: str, where: str) -> Column:
    if not isinstance(name, str) or not name:
        raise _bad(where, f"The name {name!r}")
    try:
        float(name)
    except ValueError:
        return Column(name)
    raise FormulaError(f"The number {name} is not a predictor in {where}; a formula term must be a column, "
                       "an interaction or a call such as I(x * 2). Write 1 or 0 for the intercept.")


def _call(node: Any, where: str) -> Call:
    name = node.callee
    if "." in name:
        raise _bad(where, f"The dotted name '{name}' (formulas cannot reach attributes or modules)")
    if name not in FUNCTIONS:
        raise _bad(where, f"The function '{name}' is not allowed")
    sig = FUNCTIONS[name]
    args = tuple(from_formulae(a, where) for a in node.args)
    kwargs = tuple((k, from_formulae(v, where)) for k, v in node.kwargs.items())
    if not args:
        raise FormulaError(f"{name}() in {where} needs a column or expression as its first argument.")
    if len(args) > len(sig.positional):
        raise FormulaError(f"{name}() in {where} takes at most {len(sig.positional)} positional argument(s) "
                           f"({', '.join(sig.positional)}), got {len(args)}.")
    kinds = sig.option_kinds
    given = [p for p in sig.positional[1:len(args)]]
    for key, _ in kwargs:
        if key not in kinds:
            valid = f"its options are {list(kinds)}" if kinds else "it takes no options"
            raise FormulaError(f"{name}() in {where} has no argument '{key}'; {valid}.")
        if key in given:
            raise FormulaError(f"{name}() in {where} got argument '{key}' twice.")
    call = Call(name, args, kwargs)
    for key, kind in kinds.items():
        value = call.option(key)
        if value is not None:
            _check_option(name, key, kind, value, where)
    if isinstance(args[0], Literal):
        raise FormulaError(f"{name}() in {where} needs a column or expression as its first argument, "
                           f"got the constant {args[0]}.")
    return call


def _check_option(fn: str, key: str, kind: str, value: Any, where: str) -> None:
    if isinstance(value, Column) and kind == "bool" and value.name in ("TRUE", "FALSE", "True", "False"):
        return
    ok = {"int>=1": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
          "bool": lambda v: isinstance(v, bool),
          "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)}[kind]
    if isinstance(value, (Column, Operation, Call)) or not ok(value):
        want = {"int>=1": "a positive integer", "bool": "True or False", "number": "a number"}[kind]
        raise FormulaError(f"{fn}() in {where}: argument '{key}' must be {want}, got {value}.")


def as_flag(value: Any) -> bool:
    """A boolean option, accepting R's TRUE/FALSE spelled as names."""
    if isinstance(value, Column):
        return value.name in ("TRUE", "True")
    return bool(value)


def columns(e: Expr) -> tuple[str, ...]:
    """The data columns an expression reads, in order of appearance."""
    if isinstance(e, Column):
        return (e.name,)
    if isinstance(e, Literal):
        return ()
    if isinstance(e, Operation):
        return tuple(dict.fromkeys(c for a in e.args for c in columns(a)))
    out = list(columns(e.args[0]))
    for a in e.args[1:]:  # options are literals (or TRUE/FALSE names), never data
        if isinstance(a, (Operation, Call)):
            out += columns(a)
    return tuple(dict.fromkeys(out))


#: brms's renaming of special characters in coefficient names (brms:::rename).
_RENAME = ((" ", ""), ("(", ""), (")", ""), ("[", ""), ("]", ""), (",", ""), ('"', ""), ("'", ""),
           ("?", ""), ("+", "P"), ("-", "M"), ("*", "MU"), ("/", "D"), ("^", "E"), ("=", "EQ"), ("$", "USD"),
           ("`", ""))


def brms_rename(name: str) -> str:
    """A coefficient name as brms writes it: ``poly(x, 2)1`` -> ``polyx21``, ``bs(x, df = 4)1`` -> ``bsxdfEQ41``."""
    for old, new in _RENAME:
        name = name.replace(old, new)
    return name
