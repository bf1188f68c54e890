"""Parse an lme4/brms formula string into a frozen :class:`FormulaSpec`.

The group-level terms ``(lhs | g)``, ``(lhs || g)``, ``(1 | a/b)`` and
``(1 | a:b)`` are split off here, because formulae knows neither ``||`` nor
brms's naming; the population-level part and each term's left-hand side are
later evaluated by formulae (see :mod:`lmmbayes.design`). No data is needed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import FormulaError

_NAME = re.compile(r"^[A-Za-z_.][A-Za-z0-9_.]*$")


@dataclass(frozen=True)
class GroupTerm:
    """One ``(lhs | factor)`` block.

    Attributes
    ----------
    lhs : str
        The left-hand side, e.g. ``"1 + std_age"``; formulae evaluates it.
    factor : str
        The grouping factor's name as brms writes it, e.g. ``"county"`` or
        ``"batch:cask"``.
    factor_vars : tuple of str
        The data columns that make up the factor.
    correlated : bool
        False for ``||`` terms: every term then gets its own block.
    source : str
        The text of the term as written, for error messages.
    """

    lhs: str
    factor: str
    factor_vars: tuple[str, ...]
    correlated: bool
    source: str


@dataclass(frozen=True)
class FormulaSpec:
    """A parsed formula, independent of any data.

    Attributes
    ----------
    formula : str
        The formula as the user wrote it.
    response : str
        The response expression (a column name or a formulae call).
    fixed : str
        The population-level right-hand side for formulae, always starting
        with ``1 +`` or ``0 +``; the brms keyword ``Intercept`` is removed.
    intercept : str
        ``"centred"`` (the default intercept, with brms's centring),
        ``"explicit"`` (``0 + Intercept``: an ordinary, uncentred
        coefficient) or ``"none"``.
    groups : tuple of GroupTerm
    """

    formula: str
    response: str
    fixed: str
    intercept: str
    groups: tuple[GroupTerm, ...]

    @property
    def factors(self) -> tuple[str, ...]:
        """Grouping factors in order of first appearance, without repeats."""
        return tuple(dict.fromkeys(g.factor for g in self.groups))


def _check_parentheses(text: str, offset: int) -> None:
    depth = 0
    opened: list[int] = []
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
            opened.append(i)
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise FormulaError(
                    f"Unmatched ')' at position {offset + i} of the formula; "
                    "every ')' needs an opening '('."
                )
            opened.pop()
    if depth:
        raise FormulaError(
            f"Unclosed '(' at position {offset + opened[-1]} of the formula; "
            "add the matching ')'."
        )


def _split_top(text: str, offset: int) -> list[tuple[str, str, int]]:
    """Split ``text`` at top-level ``+``/``-`` into (sign, summand, position)."""
    parts: list[tuple[str, str, int]] = []
    depth, start, sign = 0, 0, "+"
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch in "+-" and depth == 0 and not _is_exponent(text, i):
            piece = text[start:i].strip()
            if piece:
                parts.append((sign, piece, offset + start))
            elif parts or start > 0:
                raise FormulaError(
                    f"Formula syntax error at position {offset + i}: expected a term "
                    f"before '{ch}'."
                )
            sign, start = ch, i + 1
    last = text[start:].strip()
    if not last:
        raise FormulaError(
            f"Formula syntax error at position {offset + len(text)}: the formula ends "
            f"with '{sign}'; add a term after it or remove it."
        )
    parts.append((sign, last, offset + start))
    return parts


def _is_exponent(text: str, i: int) -> bool:
    # '1e-3' inside a numeric literal is not a subtraction.
    return i >= 2 and text[i - 1] in "eE" and text[i - 2].isdigit()


def _split_bar(inner: str) -> tuple[str, str, bool] | None:
    depth = 0
    for i, ch in enumerate(inner):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            if inner[i : i + 2] == "||":
                return inner[:i], inner[i + 2 :], False
            return inner[:i], inner[i + 1 :], True
    return None


def _group_factors(rhs: str, source: str) -> list[tuple[str, tuple[str, ...]]]:
    """``a/b`` -> [a, a:b]; ``a:b`` -> [a:b]; ``a`` -> [a]."""
    text = rhs.replace(" ", "")
    if not text:
        raise FormulaError(
            f"Group-level term {source} has no grouping factor after '|'; "
            "write e.g. (1 | g)."
        )
    out: list[tuple[str, tuple[str, ...]]] = []
    prefix: tuple[str, ...] = ()
    for level in text.split("/"):
        names = tuple(level.split(":"))
        for name in names:
            if not _NAME.match(name):
                raise FormulaError(
                    f"Grouping factor '{name or rhs.strip()}' in {source} is not a column "
                    "name; grouping factors are columns, their interactions "
                    "(a:b) or nestings (a/b)."
                )
        prefix = prefix + names
        out.append((":".join(prefix), prefix))
    return out


def parse_formula(formula: str) -> FormulaSpec:
    """Parse a brms/lme4 formula.

    Parameters
    ----------
    formula : str
        For example ``"y ~ x + (1 + x | g)"``.

    Returns
    -------
    FormulaSpec

    Raises
    ------
    FormulaError
        On a syntax error (with its position), a missing response, a term
        listed twice or a malformed group-level term.
    """
    if not isinstance(formula, str):
        raise FormulaError(
            f"The formula must be a string such as 'y ~ x + (1 | g)', got {type(formula).__name__}."
        )
    _check_parentheses(formula, 0)
    tilde = [i for i, ch in enumerate(formula) if ch == "~"]
    if len(tilde) != 1:
        raise FormulaError(
            f"The formula {formula!r} must contain exactly one '~' separating the "
            "response from the predictors, as in 'y ~ x + (1 | g)'."
        )
    lhs, rhs = formula[: tilde[0]], formula[tilde[0] + 1 :]
    response = lhs.strip()
    if not response:
        raise FormulaError(
            f"The formula {formula!r} has no response: write the outcome column "
            "before '~', as in 'y ~ x'."
        )
    if not rhs.strip():
        raise FormulaError(
            f"The formula {formula!r} has nothing after '~'; write '1' for an "
            "intercept-only model."
        )
    offset = tilde[0] + 1
    fixed: list[str] = []
    groups: list[GroupTerm] = []
    seen: dict[str, str] = {}
    no_intercept = False
    explicit = False
    for sign, term, pos in _split_top(rhs, offset):
        key = term.replace(" ", "")
        if sign == "-":
            if key == "1":
                no_intercept = True
                continue
            raise FormulaError(
                f"Removing the term '{term}' at position {pos} is not supported; "
                "only '- 1' (no intercept) may be subtracted."
            )
        if key in seen:
            raise FormulaError(f"The term '{term}' is listed twice in the formula; list it once.")
        seen[key] = term
        bar = _split_bar(term[1:-1]) if term.startswith("(") and term.endswith(")") else None
        if bar is None:
            if "|" in term:
                raise FormulaError(
                    f"The group-level term at position {pos} ('{term}') must be "
                    "written in its own parentheses, as in (1 + x | g)."
                )
            if key == "0":
                no_intercept = True
            elif key == "Intercept":
                explicit = True
            elif key != "1":
                fixed.append(term)
            continue
        left, right, correlated = bar
        if not left.strip():
            raise FormulaError(
                f"Group-level term {term} has nothing before '|'; write e.g. (1 | g) "
                "for a random intercept."
            )
        for factor, factor_vars in _group_factors(right, term):
            groups.append(GroupTerm(left.strip(), factor, factor_vars, correlated, term))
    if explicit and not no_intercept:
        raise FormulaError(
            "The keyword 'Intercept' only makes sense without the default intercept: "
            "write 'y ~ 0 + Intercept + x' to put a prior on the uncentred intercept."
        )
    intercept = "explicit" if explicit else ("none" if no_intercept else "centred")
    head = "0" if intercept == "none" else "1"
    return FormulaSpec(
        formula=formula,
        response=response,
        fixed=" + ".join([head, *fixed]),
        intercept=intercept,
        groups=tuple(groups),
    )
