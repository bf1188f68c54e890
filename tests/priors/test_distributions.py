"""The prior-distribution table against scipy: densities, supports, truncated draws, centres and scales.

Engines evaluate each prior at the parameter's value on the user's scale (an
exact linear map of the sampled value), so the log density itself is what
must be right: here PyMC's (the PyTensor engines) against scipy's. The C
kernel's densities are checked against the PyTensor graph in
``tests/engines/test_kernel.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

import lmmbayes as lb
from lmmbayes.priors.distributions import draws, lookup

CASES = [
    ("normal", (1.5, 2.0), [-3.0, 0.0, 1.5, 7.0]),
    ("student_t", (3.0, -1.0, 2.5), [-9.0, -1.0, 0.3, 12.0]),
    ("cauchy", (0.0, 2.0), [-20.0, 0.0, 3.0]),
    ("double_exponential", (1.0, 0.5), [-1.0, 0.9, 1.1, 4.0]),
    ("logistic", (0.0, 1.5), [-5.0, 0.0, 2.0]),
    ("exponential", (2.0,), [0.01, 0.5, 3.0]),
    ("gamma", (2.0, 0.5), [0.1, 1.0, 9.0]),
    ("inv_gamma", (3.0, 2.0), [0.2, 1.0, 5.0]),
    ("lognormal", (0.5, 0.8), [0.1, 1.0, 6.0]),
    ("weibull", (1.5, 2.0), [0.1, 1.0, 4.0]),
    ("beta", (2.0, 3.0), [0.05, 0.4, 0.9]),
    ("uniform", (-1.0, 3.0), [-0.5, 0.0, 2.9]),
]


@pytest.mark.parametrize(("name", "args", "points"), CASES, ids=[c[0] for c in CASES])
def test_log_density_matches_scipy(name, args, points):
    import pytensor.tensor as pt

    dist = lookup(name)
    x = pt.dvector("x")
    ours = dist.logp_pt(args, x).eval({x: np.array(points)})
    expected = dist.frozen(args).logpdf(points)
    # equal up to PyMC's rounding (about 1e-8): a wrong parameterisation would differ by O(1)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-7)
    np.testing.assert_allclose(np.diff(ours), np.diff(expected), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize(("name", "args", "points"), CASES, ids=[c[0] for c in CASES])
def test_centre_and_scale_are_median_and_central_99_spread(name, args, points):
    dist = lookup(name)
    frozen = dist.frozen(args)
    centre, scale = dist.centre_scale(args)
    assert centre == pytest.approx(frozen.median())
    assert scale == pytest.approx((frozen.ppf(0.995) - frozen.ppf(0.005)) / (2 * stats.norm.ppf(0.995)))


def test_a_skewed_vague_prior_is_not_taken_for_a_narrow_one():
    # gamma(0.01, 0.01) (brms's phi default) has an IQR near 1e-11 but a 99% range in the hundreds
    centre, scale = lookup("gamma").centre_scale((0.01, 0.01))
    assert scale > 10


def test_truncated_draws_follow_the_truncated_distribution():
    rng = np.random.default_rng(0)
    dist = lookup("student_t")
    x = draws(dist, (3.0, 0.0, 2.5), 0.0, math.inf, 20_000, 1, rng, "test")[:, 0]
    assert x.min() >= 0
    frozen = stats.t(3.0, 0.0, 2.5)
    cdf = (frozen.cdf(np.sort(x)) - 0.5) / 0.5
    ks = stats.kstest(cdf, "uniform")
    assert ks.pvalue > 0.001


def test_custom_factories_are_checked():
    import pymc as pm

    lb.register_distribution("goodlaplace", lambda name, mu, b, **kw: pm.Laplace(name, mu, b, **kw), n_args=2)
    lb.register_distribution("noname", lambda name, mu, b, **kw: pm.Laplace("other", mu, b, **kw), n_args=2)
    lb.register_distribution("noshape", lambda name, mu, b, **kw: pm.Laplace(name, mu, b), n_args=2)
    lb.register_distribution("novar", lambda name, mu, b, **kw: 3.0, n_args=2)
    from lmmbayes.priors.distributions import custom_variable

    assert custom_variable(lookup("goodlaplace"), (0.0, 1.0), 3, "p").name == "lmmbayes_prior_check"
    with pytest.raises(lb.PriorError, match="must name its variable"):
        custom_variable(lookup("noname"), (0.0, 1.0), 3, "p")
    with pytest.raises(lb.PriorError, match="must pass \\*\\*kwargs"):
        custom_variable(lookup("noshape"), (0.0, 1.0), 3, "p")  # shape=(3,) expected
    with pytest.raises(lb.PriorError, match="must return the PyMC random variable"):
        custom_variable(lookup("novar"), (0.0, 1.0), 3, "p")
