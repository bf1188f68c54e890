"""Formula parsing into the closed language: features and errors (no data, no sampling)."""

from __future__ import annotations

import pytest

import lmmbayes as lb
from lmmbayes.spec import Call, Column, Literal, Operation, parse_formula
from lmmbayes.spec.expr import FUNCTIONS, brms_rename


def labels(spec):
    return [t.label for t in spec.fixed]


def test_random_slope_is_one_correlated_term():
    spec = parse_formula("y ~ x + (1 + x | g)")
    assert spec.response == Column("y")
    assert labels(spec) == ["x"]
    assert spec.intercept == "centred"
    (g,) = spec.groups
    assert (g.intercept, [t.label for t in g.terms], g.factor, g.correlated) == (True, ["x"], "g", True)


def test_double_bar_is_uncorrelated():
    (g,) = parse_formula("y ~ x + (x || g)").groups
    assert g.correlated is False
    assert g.intercept  # (x || g) has an intercept, as in lme4


@pytest.mark.parametrize("formula", ["y ~ 0 + x", "y ~ x - 1", "y ~ -1 + x"])
def test_intercept_removed(formula):
    spec = parse_formula(formula)
    assert spec.intercept == "none"
    assert labels(spec) == ["x"]


def test_explicit_intercept_keyword():
    spec = parse_formula("y ~ 0 + Intercept + x")
    assert spec.intercept == "explicit"
    assert labels(spec) == ["Intercept", "x"]
    assert spec.fixed[0].components == ()


def test_nested_expands_to_outer_and_interaction():
    spec = parse_formula("y ~ 1 + (1 | batch/cask)")
    assert [g.factor for g in spec.groups] == ["batch", "batch:cask"]
    assert spec.groups[1].factor_vars == ("batch", "cask")


def test_crossed_and_interaction_factors():
    spec = parse_formula("y ~ x + (1 | a) + (1 | b) + (1 | a:c)")
    assert spec.factors == ("a", "b", "a:c")


def test_interactions_are_expanded_by_formulae():
    assert labels(parse_formula("y ~ a*b + c:d")) == ["a", "b", "a:b", "c:d"]


def test_calls_become_closed_expressions():
    spec = parse_formula("log(y) ~ I(x**2 + 1) + poly(x, 2) + scale(z) + offset(log(n))")
    assert spec.response == Call("log", (Column("y"),))
    i_term = spec.fixed[0].components[0]
    assert i_term == Call("I", (Operation("+", (Operation("**", (Column("x"), Literal(2))), Literal(1))),))
    assert spec.fixed[1].components[0].option("degree") == 2
    assert spec.offsets == (Call("log", (Column("n"),)),)
    assert spec.variables() == ("y", "x", "z", "n")


def test_addition_terms():
    spec = parse_formula("y | trials(n) + weights(w) ~ x")
    assert spec.additions.trials == Column("n") and spec.additions.weights == Column("w")
    assert parse_formula("y | trials(10) ~ x").additions.trials == Literal(10)
    se = parse_formula("y | se(s, sigma = TRUE) ~ 1").additions
    assert se.se == Column("s") and se.se_sigma is True
    assert parse_formula("y | se(s) ~ 1").additions.se_sigma is False


def test_backticked_and_non_ascii_group_names_are_columns():
    spec = parse_formula("y ~ x + (1 | `my group`) + (1 | größe)")
    assert spec.factors == ("my group", "größe")
    assert spec.variables() == ("y", "x", "my group", "größe")


def test_zero_and_intercept_free_random_models_parse():
    assert parse_formula("y ~ 0").intercept == "none"
    spec = parse_formula("y ~ 0 + (1 | g)")
    assert spec.intercept == "none" and spec.groups[0].intercept


def test_brms_renaming_of_special_characters():
    assert brms_rename("poly(x, 2)1") == "polyx21"
    assert brms_rename("bs(x, df = 4)1") == "bsxdfEQ41"
    assert brms_rename("I(x^2)") == "IxE2"
    assert brms_rename("I(a - b/c * d + 1)") == "IaMbDcMUdP1"


@pytest.mark.parametrize(
    ("formula", "needle"),
    [
        ("y ~ x +", "position 7"),
        ("y ~ x + + z", "position 8"),
        ("~ x", "no response"),
        ("y ~ (x", "Unclosed '('"),
        ("y ~ x)", "Unmatched ')'"),
        ("y ~ x + x", "listed twice"),
        ("y ~ x | g", "own parentheses"),
        ("y ~ (|g)", "nothing before '|'"),
        ("y ~ (1|)", "no grouping factor"),
        ("y ~ (1 | log(g))", "not a column name"),
        ("y ~ Intercept + x", "0 + Intercept"),
        ("y ~ x - z", "only '- 1'"),
        ("y ~ ", "nothing after '~'"),
        ("y ~ x ~ z", "exactly one '~'"),
        ("y ~ x %in% g", "%in%"),
        ("y ~ 1e-3", "'1e-3'"),
        ("y ~ x + 2", "'2'"),
        ("y ~ (0 | g)", "has no terms"),
        ("y ~ C(x)[b]", "square brackets"),
        ("y ~ .", "'.'"),
        ("y ~ log(x, 3)", "at most 1 positional"),
        ("y ~ poly(x, degree = 0)", "positive integer"),
        ("y ~ poly(x, deg = 2)", "no argument 'deg'"),
        ("y ~ I(x + 'a')", "strings may only be compared"),
        ("y | cens(c) ~ x", "'cens' is a brms addition term"),
        ("y | frob(c) ~ x", "Unknown addition term"),
        ("y | weights(w) + weights(v) ~ x", "given twice"),
        ("y ~ (offset(z) | g)", "offset() cannot appear inside"),
    ],
)
def test_formula_errors_name_the_problem(formula, needle):
    with pytest.raises(lb.FormulaError) as info:
        parse_formula(formula)
    assert needle in str(info.value)


@pytest.mark.parametrize(
    "formula",
    [
        "y ~ x + os.system('id')",
        "y ~ I(x + 0*os.system('id'))",
        "y ~ frame.to_csv('anywhere.csv')",
        "y ~ x.to_csv('anywhere.csv')",
        "os.system('id') ~ x",
        "y ~ x + (1 + np.log(x) | g)",
        "y ~ __import__('os')",
        "y ~ eval('1')",
        "y ~ exec('import os')",
        "y ~ getattr(x, 'to_csv')('a')",
        "y ~ open('/etc/passwd')",
        "y ~ x + (1 | g) + offset(os.getcwd())",
        "y | weights(os.getpid()) ~ x",
        "y ~ lambda: 1",
    ],
)
def test_code_is_refused_before_anything_runs(formula):
    with pytest.raises(lb.FormulaError) as info:
        parse_formula(formula)
    message = str(info.value)
    assert "not allowed" in message or "dotted name" in message or "Could not parse" in message \
        or "not part of a formula" in message or "Unknown addition term" in message
    if "not allowed" in message or "dotted name" in message:
        assert "log()" in message  # the allow-list is listed


def test_allow_list_is_the_documented_one():
    assert set(FUNCTIONS) == {"log", "log1p", "log2", "log10", "exp", "sqrt", "abs", "I", "C", "factor", "center",
                              "scale", "standardize", "poly", "bs", "offset"}


def test_formula_must_be_a_string():
    with pytest.raises(lb.FormulaError, match="must be a string"):
        parse_formula(3)
