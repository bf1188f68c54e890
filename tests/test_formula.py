"""Formula parsing: features and errors (no data, no sampling)."""

from __future__ import annotations

import pytest

import lmmbayes as lb
from lmmbayes.formula import parse_formula


def test_random_slope_is_one_correlated_term():
    spec = parse_formula("y ~ x + (1 + x | g)")
    assert spec.response == "y"
    assert spec.fixed == "1 + x"
    assert spec.intercept == "centred"
    (g,) = spec.groups
    assert (g.lhs, g.factor, g.correlated) == ("1 + x", "g", True)


def test_double_bar_is_uncorrelated():
    (g,) = parse_formula("y ~ x + (x || g)").groups
    assert g.correlated is False


@pytest.mark.parametrize("formula", ["y ~ 0 + x", "y ~ x - 1", "y ~ -1 + x"])
def test_intercept_removed(formula):
    spec = parse_formula(formula)
    assert spec.intercept == "none"
    assert spec.fixed.startswith("0 +")


def test_explicit_intercept_keyword():
    spec = parse_formula("y ~ 0 + Intercept + x")
    assert spec.intercept == "explicit"
    assert "Intercept" not in spec.fixed


def test_nested_expands_to_outer_and_interaction():
    spec = parse_formula("y ~ 1 + (1 | batch/cask)")
    assert [g.factor for g in spec.groups] == ["batch", "batch:cask"]
    assert spec.groups[1].factor_vars == ("batch", "cask")


def test_crossed_and_interaction_factors():
    spec = parse_formula("y ~ x + (1 | a) + (1 | b) + (1 | a:c)")
    assert spec.factors == ("a", "b", "a:c")


def test_interactions_pass_through():
    assert parse_formula("y ~ a*b + c:d").fixed == "1 + a*b + c:d"


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
    ],
)
def test_formula_errors_name_the_problem(formula, needle):
    with pytest.raises(lb.FormulaError, match=None) as info:
        parse_formula(formula)
    assert needle in str(info.value)
    assert isinstance(info.value, lb.LmmbayesError)


def test_formula_must_be_a_string():
    with pytest.raises(lb.FormulaError, match="must be a string"):
        parse_formula(3)
