"""Priors: parsing, classes and targets, brms's data-scaled defaults, resolution, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pymc as pm
import pytest

import lmmbayes as lb
from lmmbayes.design import build_design
from lmmbayes.families import family, r_mad
from lmmbayes.priors import as_prior_set, resolve_priors
from lmmbayes.spec import parse_formula


def sleepstudy_shaped(median: float = 288.7, mad: float = 59.3) -> pd.DataFrame:
    """18 subjects x 10 days whose response has exactly the given median and mad.

    Values are median +/- a_k (k = 1..90) so the median is exact, and the
    middle of the a_k equals mad / 1.4826, so R's mad() is exact too.
    """
    a = np.linspace(1.0, 2 * mad / 1.4826 - 1.0, 90)
    values = np.concatenate([median - a, median + a])
    rng = np.random.default_rng(3)
    return pd.DataFrame({
        "Reaction": rng.permutation(values),
        "Days": np.tile(np.arange(10), 18),
        "Subject": np.repeat([f"S{i}" for i in range(18)], 10),
    })


def test_brms_defaults_for_sleepstudy_shape():
    data = sleepstudy_shaped()
    assert np.median(data["Reaction"]) == pytest.approx(288.7)
    assert r_mad(data["Reaction"].to_numpy()) == pytest.approx(59.3)
    table = lb.get_prior("Reaction ~ Days + (Days | Subject)", data)
    assert list(table.columns) == ["prior", "class", "coef", "group", "source"]
    by = {(r["class"], r["coef"], r["group"]): r["prior"] for _, r in table.iterrows()}
    assert by[("Intercept", "", "")] == "student_t(3, 288.7, 59.3)"
    assert by[("sd", "", "")] == "student_t(3, 0, 59.3)"
    assert by[("sigma", "", "")] == "student_t(3, 0, 59.3)"
    assert by[("b", "", "")] == "flat"
    assert by[("cor", "", "")] == "lkj(1)"
    # every settable target is listed
    assert ("b", "Days", "") in by
    assert ("sd", "Intercept", "Subject") in by and ("sd", "Days", "Subject") in by
    assert ("cor", "", "Subject") in by


def test_default_scale_has_floor_of_2_5():
    data = sleepstudy_shaped(median=10.0, mad=0.4)
    table = lb.get_prior("Reaction ~ Days", data)
    assert table.loc[table["class"] == "Intercept", "prior"].item() == "student_t(3, 10, 2.5)"


def test_default_prior_alias_and_centred_note(bounce):
    table = lb.default_prior("bounce_time ~ std_age + (1 | county)", bounce)
    assert "centred" in repr(table)
    assert "0 + Intercept" in repr(table)


def test_default_intercept_matches_r_rules_on_bounce(bounce):
    y = bounce["bounce_time"].to_numpy()
    table = lb.get_prior("bounce_time ~ std_age", bounce)
    expected = f"student_t(3, {round(np.median(y), 1):g}, {round(max(2.5, r_mad(y)), 1):g})"
    assert table.loc[table["class"] == "Intercept", "prior"].item() == expected


@pytest.mark.parametrize(
    ("text", "name", "args"),
    [
        ("normal(0, 10)", "normal", (0.0, 10.0)),
        ("student_t(3, 0, 2.5)", "student_t", (3.0, 0.0, 2.5)),
        ("exponential(1)", "exponential", (1.0,)),
        (" cauchy( -1.5 ,2e1 ) ", "cauchy", (-1.5, 20.0)),
        ("flat", "flat", ()),
        ("", "flat", ()),
    ],
)
def test_prior_strings_parse(text, name, args):
    p = lb.prior(text, class_="b")
    assert (p.family.name, p.args) == (name, args)


def test_lkj_for_cor_and_bounds_for_sd():
    assert lb.prior("lkj(2)", class_="cor").args == (2.0,)
    assert lb.prior("lkj(2)", class_="L").class_ == "cor"
    assert lb.prior("normal(0, 1)", class_="sd").lb == 0.0
    assert lb.prior("normal(0, 1)", class_="sigma").lb == 0.0


def test_priors_combine_with_plus_and_lists():
    a, b, c = (lb.prior("normal(0, 1)"), lb.prior("normal(0, 2)", class_="sigma"),
               lb.prior("lkj(2)", class_="cor"))
    combined = a + b + c
    assert isinstance(combined, lb.PriorSet) and len(combined) == 3
    assert len(as_prior_set([a, b + c])) == 3


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"dist": "nosuch(1)"}, "Unknown distribution 'nosuch'"),
        ({"dist": "normal(0)"}, "takes 2 argument(s)"),
        ({"dist": "normal(0, 1, 2)"}, "takes 2 argument(s)"),
        ({"dist": "normal(0, -1)"}, "sigma of normal must be > 0"),
        ({"dist": "student_t(0, 0, 1)"}, "nu of student_t must be > 0"),
        ({"dist": "normal(0, a)"}, "is not a number"),
        ({"dist": "normal 0, 1"}, "Cannot read the prior"),
        ({"dist": "lkj(0)", "class_": "cor"}, "eta of lkj must be > 0"),
        ({"dist": "lkj(-1)", "class_": "cor"}, "must be > 0"),
        ({"dist": "normal(0, 1)", "class_": "cor"}, "needs an LKJ prior"),
        ({"dist": "lkj(1)", "class_": "b"}, "only valid for class 'cor'"),
        ({"dist": "normal(0, 1)", "class_": "beta"}, "Unknown prior class"),
        ({"dist": "normal(0, 1)", "class_": 3}, "Unknown prior class"),
        ({"dist": "normal(0, 1)", "class_": "sigma", "coef": "x"}, "takes no coef or group"),
        ({"dist": "normal(0, 1)", "class_": "b", "group": "g"}, "takes no group"),
        ({"dist": "normal(0, 1)", "class_": "nu", "lb": 0.5}, "lb must be >= 1"),
        ({"dist": "normal(0, 1)", "lb": 2, "ub": 1}, "must be smaller than ub"),
        ({"dist": "exponential(1)", "ub": -1}, "leave no mass"),
        ({"dist": "uniform(0, 1)", "lb": 5}, "leave no mass"),
        ({"dist": "normal(0, 1)", "class_": "sd", "lb": -1}, "lb must be >= 0"),
        ({"dist": "lkj(1)", "class_": "cor", "lb": 0}, "bounds cannot be set"),
        ({"dist": "uniform(2, 1)"}, "lower < upper"),
        ({"dist": 3}, "must be a string"),
    ],
)
def test_prior_errors(kwargs, needle):
    with pytest.raises(lb.PriorError) as info:
        lb.prior(**kwargs)
    assert needle in str(info.value)


def _resolved(formula, data, priors):
    design = build_design(parse_formula(formula), family("gaussian"), data)
    return resolve_priors(design, as_prior_set(priors))


def test_specific_prior_beats_general(bounce):
    resolved = _resolved(
        "bounce_time ~ std_age + (1 + std_age | county)", bounce,
        [lb.prior("normal(0, 5)", class_="sd"),
         lb.prior("normal(0, 3)", class_="sd", group="county"),
         lb.prior("normal(0, 1)", class_="sd", group="county", coef="std_age"),
         lb.prior("normal(0, 9)", class_="b"),
         lb.prior("normal(4, 1)", class_="b", coef="std_age")],
    )
    assert resolved.get("sd", "Intercept", "county").dist == "normal(0, 3)"
    assert resolved.get("sd", "std_age", "county").dist == "normal(0, 1)"
    assert resolved.get("b", "std_age").dist == "normal(4, 1)"
    frame = resolved.frame()
    assert set(frame["source"]) == {"user", "default"}


@pytest.mark.parametrize(
    ("p", "needle"),
    [
        (lb.prior("normal(0, 1)", coef="nope"), "coef='nope'"),
        (lb.prior("normal(0, 1)", class_="sd", group="nope"), "group='nope'"),
        (lb.prior("normal(0, 1)", class_="sd", group="county", coef="nope"), "matches no parameter"),
        (lb.prior("lkj(2)", class_="cor", group="county"), "has no correlated terms"),
    ],
)
def test_prior_matching_nothing_lists_what_can_be_set(bounce, p, needle):
    with pytest.raises(lb.PriorError) as info:
        _resolved("bounce_time ~ std_age + (1 | county)", bounce, [p])
    text = str(info.value)
    assert needle in text
    assert "can be set" in text and "class='sd', group='county'" in text


def test_same_target_twice_with_different_priors(bounce):
    with pytest.raises(lb.PriorError, match="Two different priors"):
        _resolved("bounce_time ~ std_age", bounce,
                  [lb.prior("normal(0, 1)", coef="std_age"), lb.prior("normal(0, 2)", coef="std_age")])
    # the same prior twice is harmless
    _resolved("bounce_time ~ std_age", bounce,
              [lb.prior("normal(0, 1)", coef="std_age"), lb.prior("normal(0, 1)", coef="std_age")])


def test_explicit_intercept_takes_b_prior(bounce):
    resolved = _resolved("bounce_time ~ 0 + Intercept + std_age", bounce,
                         [lb.prior("normal(200, 5)", class_="b", coef="Intercept")])
    assert resolved.get("b", "Intercept").dist == "normal(200, 5)"
    with pytest.raises(lb.PriorError, match="class='Intercept'"):
        _resolved("bounce_time ~ 0 + Intercept + std_age", bounce,
                  [lb.prior("normal(200, 5)", class_="Intercept")])


def test_priors_argument_type_checked(bounce):
    with pytest.raises(lb.PriorError, match="must contain lmmbayes.prior"):
        as_prior_set(["normal(0, 1)"])
    with pytest.raises(lb.PriorError, match="must be a prior"):
        as_prior_set("normal(0, 1)")


def test_register_distribution_makes_name_usable():
    lb.register_distribution("mylaplace", lambda name, mu, b, **kw: pm.Laplace(name, mu, b, **kw),
                             n_args=2)
    p = lb.prior("mylaplace(0, 5)", class_="b")
    assert p.family.name == "mylaplace" and p.args == (0.0, 5.0)
    with pytest.raises(lb.PriorError, match="takes 2 argument"):
        lb.prior("mylaplace(0)", class_="b")
    with pytest.raises(lb.PriorError, match="built-in"):
        lb.register_distribution("normal", lambda name, **kw: None)
    with pytest.raises(lb.PriorError, match="callable"):
        lb.register_distribution("notcallable", 3)


def test_prior_on_a_class_the_family_lacks_lists_what_can_be_set(bounce):
    with pytest.raises(lb.PriorError) as info:
        _resolved("bounce_time ~ std_age", bounce, [lb.prior("gamma(2, 1)", class_="shape")])
    text = str(info.value)
    assert "Family 'gaussian' has no parameter 'shape'" in text and "class='sigma'" in text


def test_offset_moves_the_default_intercept_location_unrounded():
    rng = np.random.default_rng(1)
    data = pd.DataFrame({"y": rng.normal(10, 3, 50), "o": rng.normal(0.3, 0.1, 50)})
    table = lb.get_prior("y ~ 1 + offset(o)", data)
    prior = table.loc[table["class"] == "Intercept", "prior"].item()
    location = round(float(np.median(data["y"])), 1) - data["o"].mean()
    assert prior == f"student_t(3, {location:.15g}, {round(max(2.5, r_mad(data['y'].to_numpy())), 1):.15g})"
