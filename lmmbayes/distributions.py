"""The registry of prior distributions usable in prior strings.

Each entry declares its parameters and their constraints as data, so that a
prior such as ``normal(0, -1)`` is rejected when :func:`lmmbayes.prior` is
called, long before sampling. :func:`register_distribution` adds a custom
distribution; afterwards its name works inside prior strings.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pymc as pm

from .errors import PriorError

#: Support kinds: where a distribution puts its mass.
SUPPORTS = ("real", "positive", "unit", "cholesky")


@dataclass(frozen=True)
class Distribution:
    """A named prior family.

    Attributes
    ----------
    name : str
        Name used in prior strings, e.g. ``"normal"``.
    params : tuple of str
        Parameter names, in the order they are written; ``None`` for a
        custom distribution that accepts any number of arguments.
    constraints : tuple of str
        Per parameter: ``"real"``, ``"positive"`` or ``"integer>=2"``.
    support : str
        One of :data:`SUPPORTS`.
    make : callable or None
        ``make(name, *args, **kwargs)`` for built-ins: a named PyMC variable,
        or with ``name=None`` an unnamed ``.dist()`` (for truncation).
    half : callable or None
        ``half(name, *args, **kwargs)``: the half distribution, used for
        ``lb = 0`` when the location argument is 0.
    location : int or None
        Position of the location argument, for the half-distribution rule.
    factory : callable or None
        ``factory(name, *args, **kwargs) -> random variable`` for custom
        distributions.
    """

    name: str
    params: tuple[str, ...] | None
    constraints: tuple[str, ...]
    support: str
    make: Callable[..., Any] | None = None
    factory: Callable[..., Any] | None = None
    half: Callable[..., Any] | None = None
    location: int | None = None

    @property
    def builtin(self) -> bool:
        return self.factory is None

    def check_args(self, args: tuple[float, ...], text: str) -> None:
        """Raise PriorError unless ``args`` fit the declared parameters."""
        if self.params is None:
            return
        if len(args) != len(self.params):
            sig = f"{self.name}({', '.join(self.params)})"
            raise PriorError(
                f"Prior '{text}': {self.name} takes {len(self.params)} argument(s), "
                f"{sig}, but {len(args)} were given."
            )
        for value, pname, constraint in zip(args, self.params, self.constraints):
            if not math.isfinite(value):
                raise PriorError(f"Prior '{text}': argument {pname} must be finite, got {value}.")
            if constraint == "positive" and value <= 0:
                raise PriorError(
                    f"Prior '{text}': argument {pname} of {self.name} must be > 0, got {value}."
                )
        if self.name == "uniform" and args[0] >= args[1]:
            raise PriorError(
                f"Prior '{text}': uniform(lower, upper) needs lower < upper, got {args[0]} >= {args[1]}."
            )

    def support_bounds(self, args: tuple[float, ...]) -> tuple[float, float]:
        if self.support == "positive":
            return 0.0, math.inf
        if self.support == "unit":
            return 0.0, 1.0
        if self.name == "uniform":
            return args[0], args[1]
        return -math.inf, math.inf


def _builtins() -> dict[str, Distribution]:
    P, R = "positive", "real"

    def kw(cls: Any, *names: str) -> Callable[..., Any]:
        # Map the positional arguments of the prior string onto PyMC keywords.
        return lambda name, *args, **extra: (
            cls.dist(**dict(zip(names, args)), **extra) if name is None
            else cls(name, **dict(zip(names, args)), **extra))

    def half(cls: Any, *names: str, skip: int) -> Callable[..., Any]:
        # Drop the location argument(s): only used when the location is 0.
        keep = lambda args: dict(zip(names, [a for i, a in enumerate(args) if i not in skip]))
        return lambda name, *args, **extra: cls(name, **keep(args), **extra)

    table = [
        Distribution("normal", ("mu", "sigma"), (R, P), "real", kw(pm.Normal, "mu", "sigma"),
                     half=half(pm.HalfNormal, "sigma", skip=(0,)), location=0),
        Distribution("student_t", ("nu", "mu", "sigma"), (P, R, P), "real",
                     kw(pm.StudentT, "nu", "mu", "sigma"),
                     half=half(pm.HalfStudentT, "nu", "sigma", skip=(1,)), location=1),
        Distribution("cauchy", ("mu", "sigma"), (R, P), "real", kw(pm.Cauchy, "alpha", "beta"),
                     half=half(pm.HalfCauchy, "beta", skip=(0,)), location=0),
        Distribution("double_exponential", ("mu", "sigma"), (R, P), "real", kw(pm.Laplace, "mu", "b")),
        Distribution("logistic", ("mu", "sigma"), (R, P), "real", kw(pm.Logistic, "mu", "s")),
        Distribution("exponential", ("rate",), (P,), "positive", kw(pm.Exponential, "lam")),
        Distribution("gamma", ("shape", "rate"), (P, P), "positive", kw(pm.Gamma, "alpha", "beta")),
        Distribution("inv_gamma", ("shape", "scale"), (P, P), "positive",
                     kw(pm.InverseGamma, "alpha", "beta")),
        Distribution("lognormal", ("mu", "sigma"), (R, P), "positive", kw(pm.LogNormal, "mu", "sigma")),
        Distribution("weibull", ("shape", "scale"), (P, P), "positive", kw(pm.Weibull, "alpha", "beta")),
        Distribution("beta", ("alpha", "beta"), (P, P), "unit", kw(pm.Beta, "alpha", "beta")),
        Distribution("uniform", ("lower", "upper"), (R, R), "real", kw(pm.Uniform, "lower", "upper")),
        Distribution("flat", (), (), "real", None),
        Distribution("lkj", ("eta",), (P,), "cholesky", None),
        Distribution("lkj_corr_cholesky", ("eta",), (P,), "cholesky", None),
    ]
    out = {d.name: d for d in table}
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
    raise PriorError(
        f"Unknown distribution '{name}' in prior '{text or name}'. Valid names: "
        f"{', '.join(available())}; add your own with lmmbayes.register_distribution()."
    )


def available() -> list[str]:
    """Names usable in prior strings, built-in and registered."""
    return sorted({*_BUILTINS, *_CUSTOM})


def register_distribution(
    name: str,
    factory: Callable[..., Any],
    *,
    n_args: int | None = None,
    support: str = "real",
) -> None:
    """Make ``name`` usable in prior strings.

    Parameters
    ----------
    name : str
        An identifier that is not a built-in name, e.g. ``"mylaplace"``.
    factory : callable
        ``factory(name, *args, **kwargs)`` receives the PyMC variable name,
        the numbers written in the prior string in order, and PyMC keywords
        such as ``shape``; it returns a PyMC random variable. It is called
        inside the model's context.
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
        raise PriorError(
            f"register_distribution: '{name}' is a built-in distribution; choose another name."
        )
    if not callable(factory):
        raise PriorError(
            f"register_distribution: factory for '{name}' must be callable, got {type(factory).__name__}."
        )
    if support not in ("real", "positive", "unit"):
        raise PriorError(
            f"register_distribution: support must be 'real', 'positive' or 'unit', got {support!r}."
        )
    if n_args is not None and (not isinstance(n_args, int) or n_args < 0):
        raise PriorError(f"register_distribution: n_args must be a non-negative integer, got {n_args!r}.")
    params = None if n_args is None else tuple(f"arg{i + 1}" for i in range(n_args))
    constraints = () if params is None else ("real",) * len(params)
    _CUSTOM[name] = Distribution(name, params, constraints, support, factory=factory)


def callable_distribution(factory: Callable[..., Any]) -> Distribution:
    """Wrap a factory given in place of a prior string (no arguments, real support)."""
    label = getattr(factory, "__name__", "custom")
    return Distribution(f"<{label}>", None, (), "real", factory=factory)
