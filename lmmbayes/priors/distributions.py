"""The prior-distribution table: one row per distribution, everything known about it in one place.

Each `Distribution` declares its parameters and their constraints (so
``normal(0, -1)`` is refused when `lmmbayes.prior` is called), its
support, a scipy version (draws from the prior, and the witness in the
tests), its log density in PyTensor (the PyMC engines), its code in the C
kernel, and a location and scale (the engines' prior-aware standardisation).
No rescaling rules are needed: engines sample a standardised parameter and
evaluate the prior at its value on the user's scale, an exact linear map.

`register_distribution` adds a custom distribution; afterwards its name
works inside prior strings.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import PriorError

#: Support kinds: where a distribution puts its mass.
SUPPORTS = ("real", "positive", "unit", "cholesky")


@dataclass(frozen=True)
class Distribution:
    """A named prior family.

    Attributes
    ----------
    name : str
        Name used in prior strings, e.g. ``"normal"``.
    params : tuple of str or None
        Parameter names, in the order they are written; None for a custom
        distribution that accepts any number of arguments.
    constraints : tuple of str
        Per parameter: ``"real"`` or ``"positive"``.
    support : str
        One of `SUPPORTS`.
    kernel : int
        Its number in the C kernel's ``family_lp`` (-1: not in the kernel).
    pymc : str
        The PyMC class and its keyword for each parameter, ``"Normal:mu,sigma"``.
    scipy : callable or None
        ``scipy(*args)`` -> a frozen scipy distribution (built-ins).
    factory : callable or None
        ``factory(name, *args, **kwargs) -> random variable`` for custom distributions.
    """

    name: str
    params: tuple[str, ...] | None
    constraints: tuple[str, ...]
    support: str
    kernel: int = -1
    pymc: str = ""
    scipy: Callable[..., Any] | None = None
    factory: Callable[..., Any] | None = None

    @property
    def builtin(self) -> bool:
        return self.factory is None

    @property
    def flat(self) -> bool:
        return self.name == "flat"

    def check_args(self, args: tuple[float, ...], text: str) -> None:
        """Raise PriorError unless ``args`` fit the declared parameters."""
        if self.params is None:
            return
        if len(args) != len(self.params):
            sig = f"{self.name}({', '.join(self.params)})"
            raise PriorError(f"Prior '{text}': {self.name} takes {len(self.params)} argument(s), {sig}, but "
                             f"{len(args)} were given.")
        for value, pname, constraint in zip(args, self.params, self.constraints):
            if not math.isfinite(value):
                raise PriorError(f"Prior '{text}': argument {pname} must be finite, got {value}.")
            if constraint == "positive" and value <= 0:
                raise PriorError(f"Prior '{text}': argument {pname} of {self.name} must be > 0, got {value}.")
        if self.name == "uniform" and args[0] >= args[1]:
            raise PriorError(f"Prior '{text}': uniform(lower, upper) needs lower < upper, got {args[0]} >= {args[1]}.")

    def support_bounds(self, args: tuple[float, ...]) -> tuple[float, float]:
        if self.support == "positive":
            return 0.0, math.inf
        if self.support == "unit":
            return 0.0, 1.0
        if self.name == "uniform":
            return args[0], args[1]
        return -math.inf, math.inf

    def frozen(self, args: tuple[float, ...]) -> Any:
        """The scipy distribution (None for flat, lkj and custom distributions)."""
        return None if self.scipy is None else self.scipy(*args)

    def centre_scale(self, args: tuple[float, ...]) -> tuple[float, float] | None:
        """Median and the spread of the central 99% (its width / 5.152, the sd of a normal) of a proper
        built-in prior; None otherwise.

        The 99% interval, not the IQR: a skewed prior such as gamma(0.01, 0.01)
        has a tiny IQR but is not narrow.
        """
        dist = self.frozen(args)
        if dist is None:
            return None
        with np.errstate(all="ignore"):
            lo, med, hi = (float(v) for v in dist.ppf([0.005, 0.5, 0.995]))
        scale = (hi - lo) / (2 * 2.5758293035489)
        if not (math.isfinite(med) and math.isfinite(scale) and scale > 0):
            return None
        return med, scale

    def logp_pt(self, args: tuple[float, ...], value: Any) -> Any:
        """The log density at ``value`` (a PyTensor variable), up to a constant."""
        import pymc as pm

        if self.flat:
            return 0.0 * value
        if not self.builtin or not self.pymc:
            raise PriorError(f"'{self.name}' has no PyMC log density.")
        cls, _, keys = self.pymc.partition(":")
        dist = getattr(pm, cls).dist(**dict(zip(keys.split(","), args)))
        return pm.logp(dist, value)


def _scipy(name: str) -> Callable[..., Any]:
    from scipy import stats

    makers: dict[str, Callable[..., Any]] = {
        "normal": lambda mu, s: stats.norm(mu, s),
        "student_t": lambda nu, mu, s: stats.t(nu, mu, s),
        "cauchy": lambda mu, s: stats.cauchy(mu, s),
        "double_exponential": lambda mu, s: stats.laplace(mu, s),
        "logistic": lambda mu, s: stats.logistic(mu, s),
        "exponential": lambda rate: stats.expon(scale=1.0 / rate),
        "gamma": lambda shape, rate: stats.gamma(shape, scale=1.0 / rate),
        "inv_gamma": lambda shape, scale: stats.invgamma(shape, scale=scale),
        "lognormal": lambda mu, s: stats.lognorm(s, scale=math.exp(mu)),
        "weibull": lambda shape, scale: stats.weibull_min(shape, scale=scale),
        "beta": lambda a, b: stats.beta(a, b),
        "uniform": lambda lo, hi: stats.uniform(lo, hi - lo),
    }
    return makers[name]


def _builtins() -> dict[str, Distribution]:
    P, R = "positive", "real"

    def d(name: str, params: tuple[str, ...], cons: tuple[str, ...], support: str, kernel: int,
          pymc: str) -> Distribution:
        return Distribution(name, params, cons, support, kernel, pymc, lambda *a: _scipy(name)(*a))

    table = [
        Distribution("flat", (), (), "real", 0),
        d("normal", ("mu", "sigma"), (R, P), "real", 1, "Normal:mu,sigma"),
        d("student_t", ("nu", "mu", "sigma"), (P, R, P), "real", 2, "StudentT:nu,mu,sigma"),
        d("cauchy", ("mu", "sigma"), (R, P), "real", 3, "Cauchy:alpha,beta"),
        d("double_exponential", ("mu", "sigma"), (R, P), "real", 4, "Laplace:mu,b"),
        d("logistic", ("mu", "sigma"), (R, P), "real", 5, "Logistic:mu,s"),
        d("exponential", ("rate",), (P,), "positive", 6, "Exponential:lam"),
        d("gamma", ("shape", "rate"), (P, P), "positive", 7, "Gamma:alpha,beta"),
        d("inv_gamma", ("shape", "scale"), (P, P), "positive", 8, "InverseGamma:alpha,beta"),
        d("lognormal", ("mu", "sigma"), (R, P), "positive", 9, "LogNormal:mu,sigma"),
        d("weibull", ("shape", "scale"), (P, P), "positive", 10, "Weibull:alpha,beta"),
        d("beta", ("alpha", "beta"), (P, P), "unit", 11, "Beta:alpha,beta"),
        d("uniform", ("lower", "upper"), (R, R), "real", 12, "Uniform:lower,upper"),
        Distribution("lkj", ("eta",), (P,), "cholesky"),
        Distribution("lkj_corr_cholesky", ("eta",), (P,), "cholesky"),
    ]
    out = {dist.name: dist for dist in table}
    out["laplace"] = out["double_exponential"]
    return out


_BUILTINS = _builtins()
_CUSTOM: dict[str, Distribution] = {}


def lookup(name: str, text: str = "") -> Distribution:
    """The distribution called ``name``; PriorError listing the valid names otherwise."""
    if name in _CUSTOM:
        return _CUSTOM[name]
    if name in _BUILTINS:
        return _BUILTINS[name]
    raise PriorError(f"Unknown distribution '{name}' in prior '{text or name}'. Valid names: "
                     f"{', '.join(available())}; add your own with lmmbayes.register_distribution().")


def available() -> list[str]:
    """Names usable in prior strings, built-in and registered."""
    return sorted({*_BUILTINS, *_CUSTOM})


def register_distribution(name: str, factory: Callable[..., Any], *, n_args: int | None = None,
                          support: str = "real") -> None:
    """Make ``name`` usable in prior strings.

    Parameters
    ----------
    name : str
        An identifier that is not a built-in name, e.g. ``"mylaplace"``.
    factory : callable
        ``factory(name, *args, **kwargs)`` receives the PyMC variable name,
        the numbers written in the prior string in order, and PyMC keywords
        such as ``shape``; it returns a PyMC random variable named ``name``.
        lmmbayes evaluates that variable's log density at the parameter's
        value (and draws from it for prior simulation).
    n_args : int, optional
        Number of arguments the prior string must give; unchecked if None.
    support : {"real", "positive", "unit"}
        Where the distribution puts its mass. Classes ``sd`` and ``sigma``
        need ``"positive"`` (a real-valued custom prior cannot be truncated).

    Examples
    --------
    >>> import pymc as pm
    >>> lb.register_distribution(
    ...     "mylaplace", lambda name, mu, b, **kw: pm.Laplace(name, mu, b, **kw), n_args=2)
    >>> lb.prior("mylaplace(0, 5)", class_="b")
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise PriorError(f"register_distribution: name must be an identifier, got {name!r}.")
    if name in _BUILTINS:
        raise PriorError(f"register_distribution: '{name}' is a built-in distribution; choose another name.")
    if not callable(factory):
        raise PriorError(f"register_distribution: factory for '{name}' must be callable, got {type(factory).__name__}.")
    if support not in ("real", "positive", "unit"):
        raise PriorError(f"register_distribution: support must be 'real', 'positive' or 'unit', got {support!r}.")
    if n_args is not None and (not isinstance(n_args, int) or isinstance(n_args, bool) or n_args < 0):
        raise PriorError(f"register_distribution: n_args must be a non-negative integer, got {n_args!r}.")
    params = None if n_args is None else tuple(f"arg{i + 1}" for i in range(n_args))
    constraints = () if params is None else ("real",) * len(params)
    _CUSTOM[name] = Distribution(name, params, constraints, support, factory=factory)


def callable_distribution(factory: Callable[..., Any]) -> Distribution:
    """Wrap a factory given in place of a prior string (no arguments, real support)."""
    label = getattr(factory, "__name__", "custom")
    return Distribution(f"<{label}>", None, (), "real", factory=factory)


def custom_variable(dist: Distribution, args: tuple[float, ...], size: int, label: str) -> Any:
    """The random variable a custom factory makes, checked (in a scratch model: it joins no user model).

    Raises
    ------
    PriorError
        The factory failed, returned something other than a PyMC random
        variable named as asked, or one of the wrong shape.
    """
    import pymc as pm

    name = "lmmbayes_prior_check"
    with pm.Model() as scratch:
        try:
            rv = dist.factory(name, *args, shape=(size,)) if dist.factory is not None else None
        except Exception as exc:  # the user's code: say whose it is
            raise PriorError(f"{label}: the custom distribution's factory failed: {type(exc).__name__}: {exc}") from None
    if rv is None or getattr(rv, "owner", None) is None or rv not in scratch.free_RVs:
        raise PriorError(f"{label}: the custom distribution's factory must return the PyMC random variable it "
                         f"creates, e.g. pm.Normal(name, 0, 1, **kwargs); it returned {type(rv).__name__}.")
    if rv.name != name:
        raise PriorError(f"{label}: the custom distribution's factory must name its variable with the name it is "
                         f"given (it named it {rv.name!r}); pass `name` on to PyMC.")
    shape = tuple(rv.type.shape)
    if None in shape:
        shape = tuple(np.shape(pm.draw(rv, random_seed=0)))
    if shape != (size,):
        raise PriorError(f"{label}: the custom distribution's factory must pass **kwargs (which hold shape=({size},)) "
                         f"on to PyMC; its variable has shape {shape}.")
    return rv


def logp_pt(dist: Distribution, args: tuple[float, ...], value: Any, label: str) -> Any:
    """Log density of ``dist`` at ``value`` (a (size,) PyTensor vector), built-in or custom."""
    if dist.builtin:
        return dist.logp_pt(args, value)
    import pymc as pm

    size = int(value.type.shape[0]) if value.type.shape and value.type.shape[0] is not None else 1
    rv = custom_variable(dist, args, size, label)
    return pm.logp(rv, value)


def draws(dist: Distribution, args: tuple[float, ...], lo: float, hi: float, n: int, size: int,
          rng: np.random.Generator, label: str) -> np.ndarray:
    """``(n, size)`` draws from ``dist`` truncated to ``[lo, hi]`` (prior simulation).

    Built-ins draw by the inverse CDF between the CDF's values at the bounds;
    a custom distribution draws through PyMC and may not be truncated.
    """
    frozen = dist.frozen(args)
    if frozen is not None:
        s_lo, s_hi = dist.support_bounds(args)
        a = float(frozen.cdf(lo)) if lo > s_lo else 0.0
        b = float(frozen.cdf(hi)) if hi < s_hi else 1.0
        if not b > a:
            raise PriorError(f"{label}: the bounds [{lo}, {hi}] leave no mass to draw from.")
        u = rng.uniform(a, b, size=(n, size))
        out = frozen.ppf(u)
        return np.clip(out, lo if lo > -math.inf else -np.inf, hi)
    if dist.factory is None:
        raise PriorError(f"{label}: cannot draw from '{dist.name}'.")
    import pymc as pm

    rv = custom_variable(dist, args, size, label)
    out = np.asarray(pm.draw(rv, draws=n, random_seed=rng), dtype=float).reshape(n, size)
    s_lo, s_hi = dist.support_bounds(args)
    if lo > s_lo or hi < s_hi:
        raise PriorError(f"{label}: a custom distribution cannot be truncated to [{lo}, {hi}]; register it "
                         "with the support it needs (e.g. support='positive' for sd and sigma).")
    return out
