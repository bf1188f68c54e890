"""brms's ``hypothesis()``: tests of expressions of parameters against their posterior draws.

A hypothesis is ``left (= | < | >) right``; both sides are expressions of
parameter names, numbers, ``+ - * / ^`` (``^`` is a power, as in R),
parentheses and the functions ``exp``, ``log``, ``sqrt`` and ``abs``. The
string is user input: it is parsed by the small recursive-descent grammar
below into a closed tree and evaluated on the draws; nothing is ever passed
to ``eval``.

Summary as brms computes it (R/hypothesis.R): ``Estimate`` and ``Est.Error``
are the mean and SD of the draws of ``left - right``; the interval has
probabilities ``(alpha/2, 1 - alpha/2)`` for a point hypothesis (``=``) and
``(alpha, 1 - alpha)`` for a one-sided one; ``Evid.Ratio`` is
``P(x > 0) / P(x <= 0)`` for ``>`` (and the mirror for ``<``), ``Post.Prob``
``Evid.Ratio / (1 + Evid.Ratio)``; ``Star`` marks a point hypothesis whose
interval excludes 0 or a one-sided one whose posterior probability exceeds
``1 - alpha`` (an evidence ratio that is infinite prints ``Inf``, as R).
A point hypothesis gets the Savage-Dickey evidence ratio
where the fit keeps prior draws (``sample_prior="yes"``): the density of the
posterior draws of ``left - right`` at 0 over that of its prior draws
(Gaussian kernel densities with R's default bandwidth, ``bw.nrd0``, as brms's
``density()``), NaN where a parameter has no prior draws (a flat prior).

`HypothesisResult.plot` is brms's ``plot(hypothesis(...))``: one panel per
hypothesis with the density of its posterior draws and, where the fit keeps
prior draws, that of its prior draws (both Gaussian kernel densities with
``bw.nrd0``, over the range of their draws, as ggplot's ``geom_density``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .. import _validate as check
from ..errors import FormulaError
from .display import pre_html

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Functions a hypothesis may call.
FUNCTIONS = {"exp": np.exp, "log": np.log, "sqrt": np.sqrt, "abs": np.abs}

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_.:]*(?:\[[^\]\s]*\])?)
  | (?P<op>[-+*/^(),])
  | (?P<relation>[=<>])
""", re.VERBOSE)


@dataclass(frozen=True)
class Node:
    """One node of a parsed expression: ``kind`` is "num", "par", "neg", "call" or an operator."""

    kind: str
    value: Any = None
    args: tuple[Node, ...] = ()

    def names(self) -> set[str]:
        own = {self.value} if self.kind == "par" else set()
        return own.union(*(a.names() for a in self.args)) if self.args else own

    def evaluate(self, draws: dict[str, np.ndarray]) -> np.ndarray:
        if self.kind == "num":
            return np.asarray(self.value, dtype=float)
        if self.kind == "par":
            return draws[self.value]
        vals = [a.evaluate(draws) for a in self.args]
        with np.errstate(all="ignore"):
            if self.kind == "neg":
                return -vals[0]
            if self.kind == "call":
                return FUNCTIONS[self.value](vals[0])
            a, b = vals
            return {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide, "^": np.power}[self.kind](a, b)


class _Parser:
    """expr := term (("+" | "-") term)*; term := unary (("*" | "/") unary)*;
    unary := "-" unary | power; power := atom ("^" unary)?; atom := number | name | name "(" expr ")" | "(" expr ")"."""

    def __init__(self, text: str, tokens: list[tuple[str, str, int]], end: int) -> None:
        self.text, self.tokens, self.pos, self.end = text, tokens, 0, end

    def error(self, what: str) -> FormulaError:
        at = self.tokens[self.pos][2] if self.pos < len(self.tokens) else self.end
        return FormulaError(f"Hypothesis {self.text!r}: {what} at position {at}. A hypothesis is 'left (= or < "
                            "or >) right' with parameter names, numbers, + - * / ^, parentheses and "
                            f"{', '.join(FUNCTIONS)}().")

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos][:2] if self.pos < len(self.tokens) else None

    def take(self, kind: str, value: str | None = None) -> bool:
        tok = self.peek()
        if tok is not None and tok[0] == kind and (value is None or tok[1] == value):
            self.pos += 1
            return True
        return False

    def expr(self) -> Node:
        node = self.term()
        while (tok := self.peek()) is not None and tok[0] == "op" and tok[1] in "+-":
            self.pos += 1
            node = Node(tok[1], args=(node, self.term()))
        return node

    def term(self) -> Node:
        node = self.unary()
        while (tok := self.peek()) is not None and tok[0] == "op" and tok[1] in "*/":
            self.pos += 1
            node = Node(tok[1], args=(node, self.unary()))
        return node

    def unary(self) -> Node:
        if self.take("op", "-"):
            return Node("neg", args=(self.unary(),))
        if self.take("op", "+"):
            return self.unary()
        return self.power()

    def power(self) -> Node:
        base = self.atom()
        if self.take("op", "^"):  # right-associative, binds tighter than unary minus on its left (as R)
            return Node("^", args=(base, self.unary()))
        return base

    def atom(self) -> Node:
        tok = self.peek()
        if tok is None:
            raise self.error("the expression ends too early")
        kind, value = tok
        if kind == "number":
            self.pos += 1
            return Node("num", float(value))
        if kind == "name":
            self.pos += 1
            if self.take("op", "("):
                if value not in FUNCTIONS:
                    raise self.error(f"'{value}()' is not an allowed function")
                inner = self.expr()
                if not self.take("op", ")"):
                    raise self.error("a ')' is missing")
                return Node("call", value, (inner,))
            return Node("par", value)
        if self.take("op", "("):
            inner = self.expr()
            if not self.take("op", ")"):
                raise self.error("a ')' is missing")
            return inner
        raise self.error(f"unexpected {value!r}")


def _tokens(text: str, where: str) -> list[tuple[str, str, int]]:
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise FormulaError(f"Hypothesis {where!r}: {text[pos]!r} at position {pos} is not allowed; use "
                               "parameter names, numbers, + - * / ^, parentheses, = < > and "
                               f"{', '.join(FUNCTIONS)}().")
        kind = m.lastgroup
        assert kind is not None
        if kind != "space":
            out.append((kind, m.group(), pos))
        pos = m.end()
    return out


@dataclass(frozen=True)
class ParsedHypothesis:
    """``left - right`` compared with 0 by ``sign``; ``label`` as brms prints it."""

    tree: Node
    sign: str
    label: str


def parse_hypothesis(text: Any) -> ParsedHypothesis:
    """Parse one hypothesis string (never evaluated as code).

    Raises
    ------
    FormulaError
        Naming the position and what is allowed.
    """
    if not isinstance(text, str) or not text.strip():
        raise FormulaError(f"A hypothesis must be a non-empty string such as 'x > 0', got {text!r}.")
    tokens = _tokens(text, text)
    relations = [k for k, t in enumerate(tokens) if t[0] == "relation"]
    if len(relations) != 1:
        raise FormulaError(f"Hypothesis {text!r} must be of the form 'left (= or < or >) right' with exactly one "
                           f"relation; it has {len(relations)}.")
    k = relations[0]
    sides = []
    for part, end in ((tokens[:k], tokens[k][2]), (tokens[k + 1:], len(text))):
        parser = _Parser(text, part, end)
        if not part:
            raise FormulaError(f"Hypothesis {text!r} has an empty side; write e.g. 'x > 0'.")
        node = parser.expr()
        if parser.pos != len(part):
            raise parser.error(f"unexpected {part[parser.pos][1]!r}")
        sides.append(node)
    compact = [re.sub(r"\s+", "", text[: tokens[k][2]]), re.sub(r"\s+", "", text[tokens[k][2] + 1:])]
    zero = sides[1].kind == "num" and sides[1].value == 0.0
    label = f"({compact[0]})" + ("" if zero else f"-({compact[1]})") + f" {tokens[k][1]} 0"
    tree = sides[0] if zero else Node("-", args=tuple(sides))
    return ParsedHypothesis(tree, tokens[k][1], label)


@dataclass(frozen=True, eq=False)
class HypothesisResult:
    """brms's ``brmshypothesis``: the table and the draws of each hypothesis.

    Attributes
    ----------
    table : pandas.DataFrame
        ``Hypothesis, Estimate, Est.Error, CI.Lower, CI.Upper, Evid.Ratio, Post.Prob, Star``.
    samples : pandas.DataFrame
        Draws of each hypothesis's ``left - right`` (columns ``H1``, ``H2``, ...).
    prior_samples : pandas.DataFrame or None
        The same from the prior draws (brms's ``prior_samples``), when the fit
        holds them (``sample_prior="yes"``); NaN columns for hypotheses of
        parameters with flat priors. `plot` overlays their densities.
    class_ : str
        The class prefix used to look names up ("" for full names).
    alpha : float
    """

    table: pd.DataFrame
    samples: pd.DataFrame
    class_: str
    alpha: float
    prior_samples: pd.DataFrame | None = None

    def __str__(self) -> str:
        shown = self.table.copy()
        for col in ("Estimate", "Est.Error", "CI.Lower", "CI.Upper", "Evid.Ratio", "Post.Prob"):
            shown[col] = shown[col].map(_r_number)
        one, two = round((1 - 2 * self.alpha) * 100), round((1 - self.alpha) * 100)
        head = f"Hypothesis Tests for class {self.class_.rstrip('_')}:" if self.class_ else "Hypothesis Tests:"
        return "\n".join([
            head, shown.to_string(index=False), "---",
            f"'CI': {one:g}%-CI for one-sided and {two:g}%-CI for two-sided hypotheses.",
            f"'*': For one-sided hypotheses, the posterior probability exceeds {two:g}%;",
            f"for two-sided hypotheses, the value tested against lies outside the {two:g}%-CI.",
            "Posterior probabilities of point hypotheses assume equal prior probabilities.",
        ])

    def _repr_html_(self) -> str:
        return pre_html(self)

    def plot(self, *, ignore_prior: bool = False, points: int = 512) -> Figure:
        """brms's ``plot(hypothesis(...))``: each hypothesis's posterior density, its prior's overlaid.

        Parameters
        ----------
        ignore_prior : bool
            Leave out the prior densities even where the fit holds prior draws (brms's ``ignore_prior``).
        points : int
            Grid points of each density curve (512, as ggplot's ``geom_density``).

        Returns
        -------
        matplotlib.figure.Figure
            One panel per hypothesis (titled with its label), stacked as brms's
            facets: a line labelled ``"Posterior"`` (the density of
            ``samples[H<k>]``) and, when the fit was made with
            ``sample_prior="yes"`` and the hypothesis's parameters have proper
            priors, one labelled ``"Prior"`` (the density of
            ``prior_samples[H<k>]``). Each curve is a Gaussian kernel density
            with R's ``bw.nrd0`` bandwidth over the range of its draws.
        """
        import matplotlib.pyplot as plt

        if not isinstance(ignore_prior, (bool, np.bool_)):
            raise FormulaError(f"ignore_prior must be True or False, got {ignore_prior!r}.")
        n_points = check.count(points, "points", minimum=2)
        names = list(self.samples.columns)
        fig, axes = plt.subplots(len(names), 1, figsize=(6, 2.6 * len(names)), squeeze=False,
                                 layout="constrained")
        curves = [("Posterior", self.samples, "#1f77b4")]
        if self.prior_samples is not None and not ignore_prior:
            curves.append(("Prior", self.prior_samples, "#d62728"))
        for ax, name, label in zip(axes[:, 0], names, self.table["Hypothesis"]):
            for what, frame, colour in curves:
                grid, dens = density_curve(frame[name].to_numpy(dtype=float), n_points)
                if grid.size == 0:  # no prior draws (a flat prior) or draws that do not vary
                    continue
                ax.fill_between(grid, dens, color=colour, alpha=0.35, linewidth=0)
                ax.plot(grid, dens, color=colour, label=what)
            ax.set_title(label, fontsize=10)
            ax.set_ylabel("density")
            ax.set_ylim(bottom=0)
            ax.legend(loc="upper right", fontsize=8, frameon=False)
        return fig


def _r_number(v: Any) -> str:
    """A table number as brms prints it: two decimals, NA, and Inf / -Inf (not Python's inf)."""
    if pd.isna(v):
        return "NA"
    if np.isinf(v):
        return "Inf" if v > 0 else "-Inf"
    return f"{v:.2f}"


def bw_nrd0(x: np.ndarray) -> float:
    """R's default bandwidth ``bw.nrd0``: ``0.9 min(sd, IQR / 1.34) n^-1/5``; NaN for draws that do not vary."""
    sd = float(np.std(x, ddof=1))
    iqr = float(np.subtract(*np.quantile(x, [0.75, 0.25]))) / 1.34
    spread = min(sd, iqr) if iqr > 0 else sd
    return 0.9 * spread * x.size ** -0.2 if spread > 0 else float("nan")


def density_curve(x: np.ndarray, points: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(grid, density) of draws ``x``: Gaussian kernel, ``bw.nrd0``, ``points`` points from min to max of ``x``.

    Empty arrays where ``x`` holds a NaN (no prior draws) or does not vary.
    """
    x = np.asarray(x, dtype=float)
    if x.size < 2 or not np.isfinite(x).all() or not np.isfinite(bw := bw_nrd0(x)):
        return np.empty(0), np.empty(0)
    grid = np.linspace(x.min(), x.max(), points)
    dens = np.empty(points)
    step = max(1, (1 << 22) // x.size)  # bounded memory: at most ~4M grid-times-draws cells at once
    for start in range(0, points, step):
        z = (grid[start:start + step, None] - x[None, :]) / bw
        dens[start:start + step] = np.exp(-0.5 * z * z).mean(axis=1) / (bw * np.sqrt(2 * np.pi))
    return grid, dens


def density_at(x: np.ndarray, point: float = 0.0) -> float:
    """Gaussian kernel density of draws ``x`` at ``point``, with R's ``bw.nrd0`` bandwidth (brms's ``density``).

    NaN where ``x`` holds a NaN (no prior draws) or does not vary.
    """
    x = np.asarray(x, dtype=float)
    if x.size < 2 or not np.isfinite(x).all() or not np.isfinite(bw := bw_nrd0(x)):
        return float("nan")
    z = (point - x) / bw
    return float(np.mean(np.exp(-0.5 * z * z)) / (bw * np.sqrt(2 * np.pi)))


def hypothesis(draws: pd.DataFrame, hypotheses: Any, class_: str | None = "b", alpha: float = 0.05, *,
               prior: pd.DataFrame | None = None) -> HypothesisResult:
    """Test ``hypotheses`` (a string or a list of strings) against posterior ``draws`` (brms names as columns).

    Parameters
    ----------
    draws : pandas.DataFrame
        One column per parameter, brms names (``Fit.draws()``).
    hypotheses : str or sequence of str
    class_ : str or None
        Prefix added to every name: ``"b"`` (default, as brms) turns ``Days``
        into ``b_Days``; None or ``""`` takes names as they are
        (``sd_Subject__Days``).
    alpha : float
        Size of the tests (0.05: 95% intervals for point hypotheses, 90% for one-sided ones).
    prior : pandas.DataFrame, optional
        Draws from the priors, same columns (``Fit.prior_draws()``): point
        hypotheses then get Savage-Dickey evidence ratios.

    Raises
    ------
    FormulaError
        For a hypothesis that does not parse or names a parameter the fit does not have (the message lists
        the names of the class).
    """
    level = check.probability(alpha, "alpha")
    assert level is not None
    alpha = level
    texts = [hypotheses] if isinstance(hypotheses, str) else list(hypotheses) if isinstance(
        hypotheses, (list, tuple)) else None
    if not texts:
        raise FormulaError(f"hypotheses must be a string or a list of strings such as ['x > 0'], got {hypotheses!r}.")
    prefix = "" if not class_ else (class_ if class_.endswith("_") else class_ + "_")
    rows, samples, prior_samples = [], {}, {}
    for k, text in enumerate(texts, start=1):
        parsed = parse_hypothesis(text)
        missing = sorted(n for n in parsed.tree.names() if prefix + n not in draws.columns)
        if missing:
            known = [c[len(prefix):] for c in draws.columns if c.startswith(prefix)]
            raise FormulaError(f"Hypothesis {text!r}: the model has no parameter(s) "
                               f"{[prefix + n for n in missing]}; with class_={class_!r} the names are "
                               f"{known[:20]}{' ...' if len(known) > 20 else ''}"
                               + ("" if not prefix else " (class_=None takes full names)") + ".")
        x = np.asarray(parsed.tree.evaluate({n: draws[prefix + n].to_numpy(dtype=float)
                                             for n in parsed.tree.names()}), dtype=float)
        x = np.broadcast_to(x, (len(draws),))
        x0: np.ndarray | None = None
        if prior is not None:  # brms's prior_samples: the hypothesis evaluated on the prior draws
            # parameters without prior draws (group-level ones) leave NaN, as flat priors do
            x0 = np.broadcast_to(np.asarray(parsed.tree.evaluate(
                {n: prior[prefix + n].to_numpy(dtype=float) if prefix + n in prior.columns
                 else np.full(len(prior), np.nan) for n in parsed.tree.names()}), dtype=float), (len(prior),))
            prior_samples[f"H{k}"] = x0
        if parsed.sign == "=":
            lo, hi = np.quantile(x, [alpha / 2, 1 - alpha / 2])
            ratio = np.nan
            if x0 is not None:  # Savage-Dickey: posterior over prior density at the point
                ratio = density_at(x) / density_at(x0)
            star = not (lo <= 0 <= hi)
        else:
            lo, hi = np.quantile(x, [alpha, 1 - alpha])
            hits = int(np.sum(x > 0 if parsed.sign == ">" else x < 0))
            ratio = np.inf if hits == x.size else hits / (x.size - hits)
        post = np.nan if np.isnan(ratio) else 1.0 if np.isinf(ratio) else ratio / (1 + ratio)
        if parsed.sign != "=":
            star = post > 1 - alpha
        rows.append({"Hypothesis": parsed.label, "Estimate": float(np.mean(x)), "Est.Error": float(np.std(x, ddof=1)),
                     "CI.Lower": float(lo), "CI.Upper": float(hi), "Evid.Ratio": ratio, "Post.Prob": post,
                     "Star": "*" if star else ""})
        samples[f"H{k}"] = x
    return HypothesisResult(pd.DataFrame(rows), pd.DataFrame(samples), prefix, alpha,
                            pd.DataFrame(prior_samples) if prior is not None else None)
