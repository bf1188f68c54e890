"""Parse an lme4/brms formula string into a frozen `FormulaSpec`. No data is needed.

The left-hand side is the response, optionally followed by brms's addition
terms (``y | trials(n) + weights(w) ~ ...``). On the right, group-level terms
``(lhs | g)``, ``(lhs || g)``, ``(1 | a/b)`` and ``(1 | a:b)``, ``offset()``
terms and the brms keyword ``Intercept`` are split off here (formulae knows
none of them); formulae parses what is left (expanding ``*``, ``/`` and
``**``) and `.expr` turns its trees into the closed expression language,
refusing anything outside it. Parsing never evaluates anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import FormulaError
from .expr import Call, Expr, Literal, columns, from_formulae

#: Longest formula accepted (a guard against pathological input, far above any real model).
MAX_LENGTH = 20_000
#: brms addition terms lmmbayes understands, with the options each takes.
ADDITIONS = {"trials": (), "weights": (), "se": ("sigma",)}
_KNOWN_ADDITIONS = ("cens", "mi", "rate", "thres", "cat", "dec", "subset", "index", "vreal", "vint", "resp_se")


@dataclass(frozen=True)
class Term:
    """One population- or group-level term: the product of its components.

    ``components`` is empty for the explicit ``Intercept`` column of
    ``0 + Intercept + ...``.
    """

    components: tuple[Expr, ...]

    @property
    def label(self) -> str:
        return ":".join(str(c) for c in self.components) or "Intercept"

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c for e in self.components for c in columns(e)))


@dataclass(frozen=True)
class GroupTerm:
    """One ``(lhs | factor)`` block for one grouping factor.

    Attributes
    ----------
    intercept : bool
        Whether the block has a group-level intercept.
    terms : tuple of Term
        The block's other terms.
    factor : str
        The grouping factor's name as brms writes it (``"county"``, ``"batch:cask"``).
    factor_vars : tuple of str
        The data columns that make up the factor.
    correlated : bool
        False for ``||``: every term is then its own block.
    source : str
        The term as written, for messages.
    """

    intercept: bool
    terms: tuple[Term, ...]
    factor: str
    factor_vars: tuple[str, ...]
    correlated: bool
    source: str

    @property
    def lhs_columns(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c for t in self.terms for c in t.columns))


@dataclass(frozen=True)
class Additions:
    """brms's addition terms on the left of ``~``."""

    trials: Expr | None = None
    weights: Expr | None = None
    se: Expr | None = None
    se_sigma: bool = False

    @property
    def present(self) -> tuple[str, ...]:
        return tuple(n for n in ADDITIONS if getattr(self, n) is not None)

    def expressions(self) -> tuple[tuple[str, Expr], ...]:
        return tuple((n, getattr(self, n)) for n in self.present)


@dataclass(frozen=True)
class FormulaSpec:
    """A parsed formula, independent of any data.

    Attributes
    ----------
    formula : str
        As the user wrote it.
    response : Expr
        The response (a column or a transform such as ``log(y)``).
    additions : Additions
    intercept : str
        ``"centred"`` (the default intercept, with brms's centring),
        ``"explicit"`` (``0 + Intercept``: an ordinary, uncentred coefficient)
        or ``"none"``.
    fixed : tuple of Term
        Population-level terms, without the intercept (the explicit
        ``Intercept`` column is the first term when present).
    offsets : tuple of Expr
        ``offset()`` terms: added to the linear predictor with coefficient 1.
    groups : tuple of GroupTerm
    """

    formula: str
    response: Expr
    additions: Additions
    intercept: str
    fixed: tuple[Term, ...]
    offsets: tuple[Expr, ...]
    groups: tuple[GroupTerm, ...]
    response_text: str = field(default="", compare=False)

    @property
    def factors(self) -> tuple[str, ...]:
        """Grouping factors in order of first appearance, without repeats."""
        return tuple(dict.fromkeys(g.factor for g in self.groups))

    def factor_vars(self, factor: str) -> tuple[str, ...]:
        return next(g.factor_vars for g in self.groups if g.factor == factor)

    @property
    def response_name(self) -> str:
        """The response as written (``"bounce_time"``, ``"log(y)"``)."""
        return self.response_text or str(self.response)

    def variables(self, *, response: bool = True, groups: tuple[str, ...] | None = None) -> tuple[str, ...]:
        """The data columns the formula reads, in a stable order.

        Parameters
        ----------
        response : bool
            Include the response and the addition terms' columns.
        groups : tuple of str, optional
            Only these grouping factors' columns (default: all).
        """
        names: list[str] = []
        if response:
            names += columns(self.response)
            for _, e in self.additions.expressions():
                names += columns(e)
        for t in self.fixed:
            names += t.columns
        for e in self.offsets:
            names += columns(e)
        for g in self.groups:
            if groups is None or g.factor in groups:
                names += g.lhs_columns
                names += g.factor_vars
        return tuple(dict.fromkeys(names))


# -- splitting the text -------------------------------------------------------------


def _strip_quoted(text: str) -> str:
    """``text`` with backticked names and quoted strings blanked (same length), for scanning."""
    out, quote = [], ""
    for ch in text:
        if quote:
            out.append(" " if ch != quote else ch)
            if ch == quote:
                quote = ""
        else:
            out.append(ch)
            if ch in "`\"'":
                quote = ch
    return "".join(out)


def _check_parentheses(text: str, offset: int) -> None:
    depth = 0
    opened: list[int] = []
    for i, ch in enumerate(_strip_quoted(text)):
        if ch == "(":
            depth += 1
            opened.append(i)
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise FormulaError(f"Unmatched ')' at position {offset + i} of the formula; "
                                   "every ')' needs an opening '('.")
            opened.pop()
    if depth:
        raise FormulaError(f"Unclosed '(' at position {offset + opened[-1]} of the formula; add the matching ')'.")


def _is_exponent(text: str, i: int) -> bool:
    # '1e-3' inside a numeric literal is not a subtraction.
    return i >= 2 and text[i - 1] in "eE" and text[i - 2].isdigit() and (i < 3 or not text[i - 3].isalpha())


def _split_top(text: str, offset: int, signs: str = "+-") -> list[tuple[str, str, int]]:
    """Split ``text`` at top-level ``+``/``-`` into (sign, summand, position)."""
    parts: list[tuple[str, str, int]] = []
    depth, start, sign = 0, 0, "+"
    scan = _strip_quoted(text)
    for i, ch in enumerate(scan):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch in signs and depth == 0 and not _is_exponent(scan, i):
            if i + 1 < len(scan) and scan[i + 1] == "*":
                continue
            piece = text[start:i].strip()
            if piece:
                parts.append((sign, piece, offset + start))
            elif parts or start > 0:
                raise FormulaError(f"Formula syntax error at position {offset + i}: expected a term before '{ch}'.")
            sign, start = ch, i + 1
    last = text[start:].strip()
    if not last:
        raise FormulaError(f"Formula syntax error at position {offset + len(text)}: the formula ends "
                           f"with '{sign}'; add a term after it or remove it.")
    parts.append((sign, last, offset + start))
    return parts


def update_formula(old: str, new: str) -> str:
    """brms's (and R's ``update.formula``) shorthand: ``new`` with ``.`` standing for ``old``'s sides.

    ``". ~ . + x"`` adds a term, ``". ~ . - x"`` removes one (``- 1`` removes
    the intercept), ``"log_y ~ ."`` keeps the predictors with another
    response. A formula without ``.`` replaces the old one. Only text is
    rearranged here; the result is parsed and checked like any formula.
    """
    for text in (old, new):
        if not isinstance(text, str):
            raise FormulaError(f"The formula must be a string such as '. ~ . + x', got {type(text).__name__}.")
        if len(text) > MAX_LENGTH:
            raise FormulaError(f"The formula has {len(text)} characters; at most {MAX_LENGTH} are accepted.")
    tilde = [i for i, ch in enumerate(_strip_quoted(new)) if ch == "~"]
    old_tilde = [i for i, ch in enumerate(_strip_quoted(old)) if ch == "~"]
    if len(tilde) != 1 or len(old_tilde) != 1:
        raise FormulaError(f"The formula {new!r} must contain exactly one '~', as in '. ~ . + x'.")
    lhs, rhs = new[:tilde[0]].strip(), new[tilde[0] + 1:]
    old_lhs, old_rhs = old[:old_tilde[0]].strip(), old[old_tilde[0] + 1:]
    lhs = old_lhs if lhs == "." else lhs
    terms: list[tuple[str, str]] = []
    for sign, term, _ in _split_top(rhs, tilde[0] + 1):
        key = term.replace(" ", "")
        if key == ".":
            terms += [(sg, t) for sg, t, _ in _split_top(old_rhs, old_tilde[0] + 1)]
        elif sign == "+" and key not in [t.replace(" ", "") for _, t in terms]:
            terms.append(("+", term))
        elif sign == "-":
            kept = [(sg, t) for sg, t in terms if t.replace(" ", "") != key or sg == "-"]
            if len(kept) == len(terms) and key not in ("1", "Intercept", "0"):
                raise FormulaError(f"'{new}' removes the term '{term}', which the formula {old!r} does not have.")
            terms = kept + ([("-", term)] if key in ("1", "Intercept") else [])
    if not terms:
        raise FormulaError(f"Updating {old!r} by {new!r} leaves no terms; write '1' for an intercept-only model.")
    text = " ".join(f"{'' if k == 0 and sg == '+' else sg + ' '}{t}" for k, (sg, t) in enumerate(terms))
    return f"{lhs} ~ {text}"


def _split_bar(inner: str) -> tuple[str, str, bool] | None:
    depth = 0
    scan = _strip_quoted(inner)
    for i, ch in enumerate(scan):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            if scan[i:i + 2] == "||":
                return inner[:i], inner[i + 2:], False
            return inner[:i], inner[i + 1:], True
    return None


_BACKTICKED = re.compile(r"^`([^`]+)`$")


def _factor_name(name: str, source: str) -> str:
    """A grouping column's name: an identifier (any script, dots allowed) or a backticked name."""
    name = name.strip()
    match = _BACKTICKED.match(name)
    if match:
        return match.group(1)
    if name and name.replace(".", "_").isidentifier():
        return name
    raise FormulaError(f"Grouping factor '{name or source}' in {source} is not a column name; grouping factors "
                       "are columns (backticked if they contain spaces), their interactions (a:b) or "
                       "nestings (a/b).")


def _group_factors(rhs: str, source: str) -> list[tuple[str, tuple[str, ...]]]:
    """``a/b`` -> [a, a:b]; ``a:b`` -> [a:b]; ``a`` -> [a]."""
    if not rhs.strip():
        raise FormulaError(f"Group-level term {source} has no grouping factor after '|'; write e.g. (1 | g).")
    out: list[tuple[str, tuple[str, ...]]] = []
    prefix: tuple[str, ...] = ()
    for level in _split_outside_ticks(rhs, "/"):
        names = tuple(_factor_name(n, source) for n in _split_outside_ticks(level, ":"))
        prefix = prefix + names
        out.append((":".join(prefix), prefix))
    return out


def _split_outside_ticks(text: str, sep: str) -> list[str]:
    scan = _strip_quoted(text)
    pieces, start = [], 0
    for i, ch in enumerate(scan):
        if ch == sep:
            pieces.append(text[start:i])
            start = i + 1
    pieces.append(text[start:])
    return pieces


# -- formulae does the term algebra ---------------------------------------------------------


def _python_powers(text: str) -> str:
    """R's ``^`` as formulae's ``**`` (outside quotes): a power inside calls, crossing of terms outside."""
    scan = _strip_quoted(text)
    return "".join("**" if scan[i] == "^" else ch for i, ch in enumerate(text))


def _describe(text: str, where: str) -> Any:
    import formulae as fm

    try:
        return fm.model_description(_python_powers(text))
    except Exception as exc:  # formulae's scanner and parser: report as a formula problem
        raise FormulaError(f"Could not parse {where} ({text!r}): {exc}") from None


def _terms(description: Any, where: str) -> tuple[bool, tuple[Term, ...]]:
    """(has an intercept, the other terms) of a formulae model description."""
    intercept, out = False, []
    for t in description.terms:
        kind = type(t).__name__
        if kind == "Intercept":
            intercept = True
            continue
        if kind != "Term":
            raise FormulaError(f"Unsupported term {t} in {where}.")
        comps = tuple(from_formulae(c, where, top=True) for c in t.components)
        for c in comps:
            if isinstance(c, Literal):
                raise FormulaError(f"The constant {c} is not a predictor in {where}.")
        out.append(Term(comps))
    return intercept, tuple(out)


def _offset_argument(term: str, pos: int) -> Expr | None:
    """The argument of an ``offset(...)`` term, or None if ``term`` is not one."""
    if not re.match(r"^offset\s*\(", term):
        return None
    desc = _describe(f"y ~ 0 + {term}", f"the term '{term}' at position {pos}")
    (t,) = desc.terms
    call = from_formulae(t.components[0], f"'{term}'")
    if not isinstance(call, Call) or len(call.args) != 1 or call.kwargs:
        raise FormulaError(f"offset() at position {pos} takes exactly one column or expression, as in offset(log(n)).")
    return call.args[0]


def _response(lhs: str, formula: str) -> tuple[Expr, Additions, str]:
    """The response expression and the addition terms of the left-hand side."""
    bar = _split_bar(lhs)
    if bar is not None and not bar[2]:
        raise FormulaError(f"The response {lhs.strip()!r} has '||'; addition terms follow one '|', "
                           "as in 'y | trials(n) ~ x'.")
    text = (bar[0] if bar else lhs).strip()
    if not text:
        raise FormulaError(f"The formula {formula!r} has no response: write the outcome column before '~', "
                           "as in 'y ~ x'.")
    desc = _describe(f"{text} ~ 1", "the response")
    components = desc.response.term.components if desc.response is not None else []
    if len(components) != 1:
        raise FormulaError(f"The response {text!r} must be one column or one transform of it, such as log(y).")
    response = from_formulae(components[0], f"the response '{text}'", top=True)
    if isinstance(response, Literal):
        raise FormulaError(f"The response {text!r} is a constant; write the outcome column.")
    return response, (_additions(bar[1], formula) if bar else Additions()), text


def _additions(text: str, formula: str) -> Additions:
    found: dict[str, Any] = {}
    for _, term, pos in _split_top(text, 0, "+"):
        match = re.match(r"^([A-Za-z_][A-Za-z0-9_.]*)\s*\((.*)\)\s*$", term, re.DOTALL)
        name = match.group(1) if match else term
        if not match or name not in ADDITIONS:
            hint = f" ('{name}' is a brms addition term lmmbayes does not support)" if name in _KNOWN_ADDITIONS else ""
            raise FormulaError(f"Unknown addition term '{term}' after '|' in {formula!r}{hint}; supported: "
                               "trials(n), weights(w), se(s) and se(s, sigma = TRUE).")
        if name in found:
            raise FormulaError(f"The addition term {name}() is given twice in {formula!r}.")
        inner = _first_arg(match.group(2)) if name == "se" else match.group(2)
        desc = _describe(f"y ~ 0 + I({inner})", f"the addition term '{term}'")
        (t,) = desc.terms
        (arg,) = t.components[0].call.args
        value = from_formulae(arg, f"the addition term '{term}'")
        if isinstance(value, Literal) and (name != "trials" or isinstance(value.value, (str, bool))):
            raise FormulaError(f"{name}() in {formula!r} needs a column" + (" or a number" if name == "trials" else "")
                               + f", got {value}.")
        found[name] = value
        if name == "se":
            found["se_sigma"] = _se_sigma(match.group(2), term)
    return Additions(**found)


def _first_arg(text: str) -> str:
    depth, scan = 0, _strip_quoted(text)
    for i, ch in enumerate(scan):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            return text[:i]
    return text


def _se_sigma(args: str, term: str) -> bool:
    rest = args[len(_first_arg(args)):].strip()
    if not rest:
        return False
    match = re.match(r"^,\s*sigma\s*=\s*(TRUE|FALSE|True|False|T|F)\s*$", rest)
    if not match:
        raise FormulaError(f"Cannot read the options of {term}; se() takes one column and optionally "
                           "sigma = TRUE, as in se(s, sigma = TRUE).")
    return match.group(1) in ("TRUE", "True", "T")


def _check_text(formula: str) -> None:
    scan = _strip_quoted(formula)
    if "%" in scan:
        raise FormulaError(f"The formula {formula!r} uses an operator with '%' (such as %in%), which lmmbayes does "
                           "not support; write the interaction explicitly, e.g. 'x:g' for 'x %in% g'.")
    if "[" in scan or "]" in scan:
        raise FormulaError(f"The formula {formula!r} uses square brackets; subscripts are not part of a formula "
                           "(backtick names with special characters: `my[col]`).")
    if re.search(r"\)\s*\.", scan):
        raise FormulaError(f"The formula {formula!r} uses attribute access ('.' after a call), which is not part of "
                           "a formula; formulas may use the data's columns and the allowed functions only.")
    for ch in ("\\", ";", "@", "{", "}", "$", "!", "&", "#"):
        if ch in scan:
            raise FormulaError(f"The formula {formula!r} contains '{ch}', which is not part of a formula; "
                               "backtick column names with special characters.")


# -- the parser ------------------------------------------------------------------------------


def parse_formula(formula: Any) -> FormulaSpec:
    """Parse a brms/lme4 formula.

    Parameters
    ----------
    formula : str
        For example ``"y ~ x + (1 + x | g)"`` or ``"y | trials(n) ~ x + offset(log(t))"``.

    Returns
    -------
    FormulaSpec

    Raises
    ------
    FormulaError
        On a syntax error (with its position), a function or name outside the
        allowed language, a missing response, a term listed twice or a
        malformed group-level or addition term.
    """
    if not isinstance(formula, str):
        raise FormulaError(f"The formula must be a string such as 'y ~ x + (1 | g)', got {type(formula).__name__}.")
    if len(formula) > MAX_LENGTH:
        raise FormulaError(f"The formula has {len(formula)} characters; at most {MAX_LENGTH} are accepted.")
    _check_text(formula)
    _check_parentheses(formula, 0)
    tilde = [i for i, ch in enumerate(_strip_quoted(formula)) if ch == "~"]
    if len(tilde) != 1:
        raise FormulaError(f"The formula {formula!r} must contain exactly one '~' separating the response from "
                           "the predictors, as in 'y ~ x + (1 | g)'.")
    lhs, rhs = formula[:tilde[0]], formula[tilde[0] + 1:]
    response, additions, response_text = _response(lhs, formula)
    if not rhs.strip():
        raise FormulaError(f"The formula {formula!r} has nothing after '~'; write '1' for an intercept-only model.")
    offset = tilde[0] + 1
    fixed_text: list[str] = []
    offsets: list[Expr] = []
    groups: list[GroupTerm] = []
    seen: set[str] = set()
    no_intercept = explicit = False
    for sign, term, pos in _split_top(rhs, offset):
        key = term.replace(" ", "")
        if sign == "-":
            if key in ("1", "Intercept"):
                no_intercept = True
                continue
            raise FormulaError(f"Removing the term '{term}' at position {pos} is not supported; only '- 1' "
                               "(no intercept) may be subtracted.")
        if key in seen:
            raise FormulaError(f"The term '{term}' is listed twice in the formula; list it once.")
        seen.add(key)
        inside = term.startswith("(") and term.endswith(")") and _closes_at_end(term)
        bar = _split_bar(term[1:-1]) if inside else None
        if bar is None:
            if "|" in _strip_quoted(term):
                raise FormulaError(f"The group-level term at position {pos} ('{term}') must be written in its own "
                                   "parentheses, as in (1 + x | g).")
            if key == "0":
                no_intercept = True
            elif key == "Intercept":
                explicit = True
            elif key == "1":
                pass
            elif key == ".":
                raise FormulaError("'.' (all other columns) is not supported; list the predictors.")
            else:
                off = _offset_argument(term, pos)
                if off is not None:
                    offsets.append(off)
                else:
                    _check_number(key, pos)
                    fixed_text.append(term)
            continue
        left, right, correlated = bar
        if not left.strip():
            raise FormulaError(f"Group-level term {term} has nothing before '|'; write e.g. (1 | g) for a "
                               "random intercept.")
        lhs_intercept, lhs_terms = _group_lhs(left, term)
        for factor, factor_vars in _group_factors(right, term):
            groups.append(GroupTerm(lhs_intercept, lhs_terms, factor, factor_vars, correlated, term))
    if explicit and not no_intercept:
        raise FormulaError("The keyword 'Intercept' only makes sense without the default intercept: write "
                           "'y ~ 0 + Intercept + x' to put a prior on the uncentred intercept.")
    intercept = "explicit" if explicit else ("none" if no_intercept else "centred")
    fixed: tuple[Term, ...] = ()
    if fixed_text:
        _, fixed = _terms(_describe("y ~ 0 + " + " + ".join(fixed_text), "the population-level formula"),
                          "the population-level formula")
    if explicit:
        fixed = (Term(()),) + fixed
    _check_duplicates(fixed, "population-level terms")
    return FormulaSpec(formula, response, additions, intercept, fixed, tuple(offsets), tuple(groups),
                       response_text)


def _closes_at_end(term: str) -> bool:
    """Whether the '(' opening ``term`` is closed by its last character."""
    depth, scan = 0, _strip_quoted(term)
    for i, ch in enumerate(scan):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0:
            return i == len(scan) - 1
    return False


def _check_number(key: str, pos: int) -> None:
    try:
        float(key)
    except ValueError:
        return
    raise FormulaError(f"The number '{key}' at position {pos} is not a predictor; a term is a column, an "
                       "interaction or a call such as I(x * 2). Write 1 or 0 for the intercept.")


def _group_lhs(left: str, source: str) -> tuple[bool, tuple[Term, ...]]:
    where = f"the group-level term {source}"
    for _, piece, _ in _split_top(left, 0):
        if re.match(r"^offset\s*\(", piece.strip()):
            raise FormulaError(f"offset() cannot appear inside {where}; put it among the population-level terms.")
    intercept, terms = _terms(_describe("y ~ " + left, where), where)
    if any(not t.components for t in terms) or "Intercept" in left.replace(" ", "").split("+"):
        raise FormulaError(f"Write '1' rather than 'Intercept' for the group-level intercept in {source}.")
    if not intercept and not terms:
        raise FormulaError(f"Group-level term {source} has no terms ('0' alone); write (1 | g) for a random "
                           "intercept or (0 + x | g) for a slope only.")
    _check_duplicates(terms, where)
    return intercept, terms


def _check_duplicates(terms: tuple[Term, ...], where: str) -> None:
    labels = [t.label for t in terms]
    for label in labels:
        if labels.count(label) > 1:
            raise FormulaError(f"The term '{label}' appears twice in the {where}; list it once.")
