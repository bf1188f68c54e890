"""Property-based tests (hypothesis): the prior-string and formula parsers, and design invariants."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lmmbayes as lb
from lmmbayes.design import build_design
from lmmbayes.families import family
from lmmbayes.spec import parse_formula

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
positive = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False)
SIGNATURES = {
    "normal": (finite, positive),
    "student_t": (positive, finite, positive),
    "cauchy": (finite, positive),
    "exponential": (positive,),
    "gamma": (positive, positive),
    "lognormal": (finite, positive),
    "double_exponential": (finite, positive),
}


@st.composite
def valid_prior(draw):
    name = draw(st.sampled_from(sorted(SIGNATURES)))
    args = tuple(draw(s) for s in SIGNATURES[name])
    spaces = draw(st.sampled_from(["", " ", "  "]))
    text = f"{name}({(',' + spaces).join(repr(a) for a in args)})"
    return text, name, args


@given(valid_prior())
def test_valid_prior_strings_round_trip(case):
    text, name, args = case
    p = lb.prior(text, class_="b")
    assert p.family.name == name
    assert p.args == args
    # parsing what we print back gives the same prior
    again = lb.prior(f"{p.family.name}({', '.join(repr(a) for a in p.args)})", class_="b")
    assert again.same_distribution(p)


@given(st.text(max_size=30))
def test_arbitrary_text_is_a_prior_or_a_prior_error(text):
    try:
        lb.prior(text, class_="b")
    except lb.PriorError:
        pass


@given(st.sampled_from(sorted(SIGNATURES)), st.integers(min_value=0, max_value=5))
def test_wrong_arity_is_rejected(name, n):
    if n == len(SIGNATURES[name]):
        n += 1
    text = f"{name}({', '.join(['1'] * n)})"
    try:
        lb.prior(text, class_="b")
    except lb.PriorError as err:
        assert "argument" in str(err)
    else:
        raise AssertionError(f"{text} was accepted")


@given(st.sampled_from(["normal", "cauchy", "lognormal"]), st.floats(max_value=0, allow_nan=False))
def test_non_positive_scale_is_rejected(name, scale):
    try:
        lb.prior(f"{name}(0, {scale!r})", class_="b")
    except lb.PriorError:
        return
    raise AssertionError("accepted a non-positive scale")


@st.composite
def frames(draw):
    n = draw(st.integers(min_value=4, max_value=40))
    n_groups = draw(st.integers(min_value=2, max_value=6))
    rows = st.lists(st.integers(0, n_groups - 1), min_size=n, max_size=n)
    groups = draw(rows.filter(lambda g: len(set(g)) >= 2))
    cats = draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=n, max_size=n))
    missing = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.normal(size=n)
    x[np.array(missing)] = np.nan
    return pd.DataFrame({"y": rng.normal(size=n), "x": x, "cat": cats,
                         "g": [f"lvl{k}" for k in groups]})


@settings(suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow], deadline=None,
          max_examples=60)
@given(frames())
def test_design_invariants(df):
    kept = df.dropna()
    if kept["g"].nunique() < 2 or kept["cat"].nunique() < 2 or len(kept) < 2:
        return  # single-level factors and a single row are errors, tested elsewhere
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lb.DataWarning)
        d = build_design(parse_formula("y ~ x + cat + (1 + x | g)"), family("gaussian"), df)
    assert d.n_obs == len(kept)
    assert d.n_dropped == len(df) - len(kept)
    assert d.rows.X.shape == (d.n_obs, len(d.coef_names))
    assert len(d.b_names) == len(d.coef_names) + 1
    assert d.coef_names[0] == "x"
    assert all(name.startswith("cat") for name in d.coef_names[1:])
    (f,) = d.factors
    (fr,) = d.rows.factors
    assert list(f.levels) == sorted(kept["g"].unique())
    assert fr.index.min() == 0 and fr.index.max() == f.n_levels - 1
    np.testing.assert_array_equal(np.asarray(f.levels)[fr.index], kept["g"].to_numpy())
    np.testing.assert_allclose(fr.Z[:, 1], kept["x"].to_numpy())
    # the one encoder gives the training rows again
    again = d.encoder.encode(kept.reset_index(drop=True).astype({"y": float}), response=True)
    np.testing.assert_allclose(again.X, d.rows.X)
    np.testing.assert_array_equal(again.factors[0].index, fr.index)


FORMULA_TOKENS = st.sampled_from(["y", "x", "g", "~", "+", "-", "*", ":", "|", "||", "(", ")", "1", "0", "log(",
                                  "I(", "poly(", ",", "2", "os.system(", "'a'", "offset(", "trials(", "/", "**",
                                  "Intercept", "%in%", "[", "]", ".", "`x y`", " ", "=", "raw=True", "x.y"])


@settings(deadline=None, max_examples=300)
@given(st.lists(FORMULA_TOKENS, min_size=1, max_size=14).map("".join) | st.text(max_size=40))
def test_any_text_is_a_formula_or_a_formula_error(text):
    """The parser never fails with anything but a FormulaError (formulae's own errors are reworded)."""
    try:
        parse_formula(text)
    except lb.FormulaError:
        pass
