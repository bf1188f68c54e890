"""Moment matching for PSIS-LOO (brms's ``loo(fit, moment_match = TRUE)``).

For the observations whose Pareto k is too high, arviz-stats's
``loo_moment_match`` (Paananen et al. 2021, "Implicitly adaptive importance
sampling") moves the posterior draws, on the sampler's unbounded scale, by
affine maps that match the moments of the importance-weighted draws, and
importance-samples the leave-one-out posterior from the moved draws. It needs
three things from the fit, built here:

- ``upars``: the draws on the unbounded scale, `bridge._unbounded_draws` (the
  inverse of what the engine did to its draws);
- the log posterior density of any such point, to the same constant
  everywhere: the joint engine's PyMC model (priors, likelihood and the
  transforms' Jacobians), compiled once on a flat parameter vector;
- the log-likelihood of observation i at any such point: the point is mapped
  to the user's scale by the joint engine's own map (`joint.result`), and
  the family's density is evaluated as `fit.log_lik()` evaluates it.

The density is always the joint engine's, over every parameter, random
effects included, whichever engine fitted the model. A collapsed-engine fit
samples the hyperparameters from the marginal posterior and then draws the
random effects from their exact conditional posterior, so its draws are
draws of the joint posterior, whose density this is. (The marginal density
would not do: observation i's likelihood depends on the random effects,
which are not coordinates of the marginal.) The log-likelihood that
arviz-stats reads for the unmoved draws is the fit's own, `log_lik`; the
round trip draws -> unbounded -> user scale reproduces it to rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from ..errors import FitError
from ..results.model import FitResult
from .linpred import Params, linear_predictor, params

#: Name of the parameter dimension of ``upars``.
PARAM_DIM = "unconstrained_parameter"


@dataclass(frozen=True, eq=False)
class JointDensity:
    """The joint posterior of a fit on the unbounded scale, for moment matching.

    Attributes
    ----------
    evaluate : callable
        ``evaluate(x)`` for one point ``x`` (D,): the log posterior (up to a
        constant) and the engine's deterministic draws there (``u_std``,
        ``Lcorr__f``, ``z__f``), in `outputs`'s order.
    outputs : tuple of str
        Names of the deterministic draws ``evaluate`` returns after the log density.
    upars : (C, S, D) array
        The fit's draws on the unbounded scale.
    names : tuple of str
        What each coordinate is (PyMC's value variables, flattened).
    fit : FitResult
    plan : Plan
    cache : list
        The last two batches of points evaluated, with their results:
        arviz-stats asks for the log density and then the log-likelihood at
        the same points (in its split step, at two batches in turn).
    """

    evaluate: Callable[[np.ndarray], list[np.ndarray]]
    outputs: tuple[str, ...]
    upars: np.ndarray
    names: tuple[str, ...]
    fit: FitResult
    plan: Any
    cache: list[tuple[np.ndarray, np.ndarray, Params]] = field(default_factory=list)

    def _batch(self, x: np.ndarray) -> tuple[np.ndarray, Params]:
        """The log density (C, S) and the user-scale `Params` of the points ``x`` (C, S, D)."""
        for seen, logp_seen, p_seen in self.cache:
            if seen.shape == x.shape and np.array_equal(seen, x):
                return logp_seen, p_seen
        from ..engines import joint
        from ..results.posterior import to_datatree

        C, S, D = x.shape
        logp = np.empty((C, S))
        det: dict[str, np.ndarray] = {}
        with np.errstate(all="ignore"):
            for c in range(C):
                for s in range(S):
                    values = self.evaluate(x[c, s])
                    logp[c, s] = float(values[0])
                    for name, v in zip(self.outputs, values[1:]):
                        if name not in det:
                            det[name] = np.empty((C, S) + np.shape(v))
                        det[name][c, s] = v
        logp = np.where(np.isnan(logp), -np.inf, logp)
        design = self.fit.design
        # the engine's own map to the user's scale and brms's blocks: the fit's draws came the same way
        draws = joint.result(design, self.plan, det, {}, {}).draws
        posterior = to_datatree(design, draws, {}, {})["posterior"].to_dataset()
        p = params(posterior, design)
        self.cache.append((x.copy(), logp, p))
        del self.cache[:-2]
        return logp, p

    def log_prob(self, upars: xr.DataArray) -> xr.DataArray:
        """arviz-stats's ``log_prob_upars_fn``: the log posterior at every point of ``upars``."""
        x = np.asarray(upars.transpose("chain", "draw", PARAM_DIM).values, dtype=float)
        logp, _ = self._batch(x)
        return xr.DataArray(logp, dims=("chain", "draw"),
                            coords={d: upars.coords[d] for d in ("chain", "draw") if d in upars.coords})

    def log_lik_i(self, upars: xr.DataArray, i: int) -> xr.DataArray:
        """arviz-stats's ``log_lik_i_upars_fn``: log p(y_i | point) at every point, as `log_lik` computes it."""
        x = np.asarray(upars.transpose("chain", "draw", PARAM_DIM).values, dtype=float)
        _, p = self._batch(x)
        ll = row_log_lik(self.fit, p, int(i)).reshape(x.shape[:2])
        return xr.DataArray(ll, dims=("chain", "draw"),
                            coords={d: upars.coords[d] for d in ("chain", "draw") if d in upars.coords})

    def upars_array(self) -> xr.DataArray:
        """The fit's draws on the unbounded scale as arviz-stats wants them: (chain, draw, parameter)."""
        C, S, _ = self.upars.shape
        return xr.DataArray(self.upars, dims=("chain", "draw", PARAM_DIM),
                            coords={"chain": np.arange(C), "draw": np.arange(S), PARAM_DIM: list(self.names)})


def row_log_lik(fit: FitResult, p: Params, i: int) -> np.ndarray:
    """(S,) log p(y_i | draw) of fitted row ``i`` for the draws ``p``, times its weight (as `log_lik`)."""
    design = fit.design
    rows = design.rows
    assert rows is not None and rows.y is not None
    part = slice(i, i + 1)
    eta = linear_predictor(p, rows, design.factors, centred=design.intercept_in_eta, rows_slice=part)
    dp = {k: v[:, None] for k, v in p.dpars.items()}
    ll = fit.family.logpdf(rows.y[part][None, :], eta, dp, rows.extra.take(part))
    if rows.weights is not None:
        ll = ll * rows.weights[part][None, :]
    return np.asarray(ll, dtype=float)[:, 0]


def check_matchable(fit: FitResult) -> None:
    """Refuse fits moment matching cannot work on, saying why.

    Raises
    ------
    FitError
        Draws from the prior only, a fit without its rows (Dask input, or
        read from a file without them) or lacking some block of draws.
    """
    from ..results.posterior import dpar_names

    if fit.engine == "prior":
        raise FitError('loo(moment_match=True) needs posterior draws, and this fit holds draws from the prior only '
                       '(sample_prior="only").')
    if fit.design.rows is None:
        raise FitError("loo(moment_match=True) evaluates the joint posterior density, which needs the fitted rows; "
                       "this fit does not hold them (fitted from a Dask DataFrame). Use loo() without moment "
                       "matching, or kfold().")
    if "joint" not in fit.family.engines:
        raise FitError(f"loo(moment_match=True) needs the joint engine's density, which family {fit.family.name!r} "
                       "does not have.")
    post = fit.posterior
    needed = ["b", *dpar_names(fit.design)]
    for f in fit.design.factors:
        needed += [f"sd_{f.name}", f"r_{f.name}"] + ([f"cor_{f.name}"] if f.cor_pairs else [])
    missing = [v for v in needed if v not in post]
    if missing:
        raise FitError(f"loo(moment_match=True) needs the draws of every parameter, and this fit lacks {missing}.")


def joint_density(fit: FitResult) -> JointDensity:
    """The joint engine's log posterior of ``fit`` on a flat unbounded vector, and the fit's draws there.

    Raises
    ------
    FitError
        See `check_matchable`.
    """
    import pytensor
    import pytensor.tensor as pt

    from ..engines import joint
    from ..engines.plan import plan as make_plan
    from .bridge import _unbounded_draws

    check_matchable(fit)
    design = fit.design
    plan = make_plan(design, fit.priors)
    model, _ = joint.build_model(design, plan)
    values = model.value_vars
    start = model.initial_point()
    shapes = [tuple(int(s) for s in start[v.name].shape) for v in values]
    sizes = [int(np.prod(s)) for s in shapes]
    cuts = np.cumsum([0, *sizes])
    flat_in = pt.vector("x")
    replace = {v: flat_in[cuts[i]:cuts[i + 1]].reshape(shapes[i]) for i, v in enumerate(values)}
    outputs = [name for name in ["u_std", *(f"{k}__{f.name}" for k in ("Lcorr", "z") for f in design.factors)]
               if name in model.named_vars]
    # the engine's deterministics as functions of the value variables (PyMC's backward transforms applied)
    det = model.replace_rvs_by_values([model[name] for name in outputs])
    graphs = pytensor.graph.replace.graph_replace([model.logp(jacobian=True), *det], replace)
    compiled = pytensor.function([flat_in], graphs, on_unused_input="ignore")

    def evaluate(x: np.ndarray) -> list[np.ndarray]:
        return [np.asarray(v) for v in compiled(np.asarray(x, dtype=float))]

    upars = _unbounded_draws(fit, plan, model, shapes)
    names = tuple(f"{v.name}[{j}]" if sizes[i] > 1 else v.name for i, v in enumerate(values) for j in range(sizes[i]))
    return JointDensity(evaluate, tuple(outputs), upars, names, fit, plan)


def moment_match(fit: FitResult, tree: xr.DataTree, loo_orig: Any, *, k_threshold: float | None = None,
                 max_iters: int = 30, split: bool = True, cov: bool = True) -> Any:
    """arviz-stats's ``loo_moment_match`` on ``fit``'s joint posterior.

    Parameters
    ----------
    fit : Fit
    tree : DataTree
        The posterior and the fit's pointwise log-likelihood (``log_likelihood/y``).
    loo_orig : ELPDDataLOO
        PSIS-LOO of the same log-likelihood, pointwise.
    k_threshold, max_iters, split, cov
        As the loo package's ``loo_moment_match`` (arviz-stats's defaults).

    Returns
    -------
    ELPDDataLOO
        ``loo_orig`` with elpd_i, Pareto k and p_loo_i of the observations
        above the threshold replaced where moment matching lowered k.
    """
    from arviz_stats import loo_moment_match

    density = joint_density(fit)
    return loo_moment_match(tree, loo_orig, log_prob_upars_fn=density.log_prob, log_lik_i_upars_fn=density.log_lik_i,
                            upars=density.upars_array(), var_name="y", k_threshold=k_threshold, max_iters=max_iters,
                            split=split, cov=cov, pointwise=True)
