"""The catalogue of bad inputs: each gets an lmmbayes error (or a documented
warning) whose message names the culprit and says what would be valid.

No case may end in a raw KeyError, IndexError, ValueError or a
PyMC/formulae/pytensor traceback: the assertions check the exception class
is an lmmbayes one, not merely that *something* was raised.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import lmmbayes as lb

RNG = np.random.default_rng(0)
N = 40
DATA = pd.DataFrame({
    "y": RNG.normal(size=N),
    "x": RNG.normal(size=N),
    "cat": RNG.choice(["a", "b"], size=N),
    "g": np.repeat(["g1", "g2", "g3", "g4"], N // 4),
    "word": ["w"] * N,
})


def with_col(**cols):
    return DATA.assign(**cols)


def fit(formula="y ~ x", data=DATA, priors=None, **kw):
    # Every case must fail before sampling; a tiny budget keeps a mistake cheap.
    kw.setdefault("chains", 1)
    kw.setdefault("draws", 5)
    kw.setdefault("tune", 5)
    kw.setdefault("progress", False)
    return lb.fit(formula, data, priors, **kw)


P = lb.prior
CASES = [
    # formulas
    ("syntax: trailing plus", lambda: fit("y ~ x +"), lb.FormulaError, ["position 7"]),
    ("syntax: double plus", lambda: fit("y ~ x + + g"), lb.FormulaError, ["position 8"]),
    ("syntax: unclosed paren", lambda: fit("y ~ x + (1 | g"), lb.FormulaError, ["Unclosed '('", "position 8"]),
    ("syntax: stray paren", lambda: fit("y ~ x)"), lb.FormulaError, ["Unmatched ')'", "position 5"]),
    ("syntax: two tildes", lambda: fit("y ~ x ~ g"), lb.FormulaError, ["exactly one '~'"]),
    ("formula not a string", lambda: fit(["y ~ x"]), lb.FormulaError, ["must be a string"]),
    ("unknown column", lambda: fit("y ~ x + nope"), lb.FormulaError, ["'nope'", "available columns"]),
    ("unknown grouping column", lambda: fit("y ~ x + (1 | nope)"), lb.FormulaError, ["'nope'"]),
    ("unknown function", lambda: fit("y ~ frob(x)"), lb.FormulaError, ["'frob'", "is not allowed", "log()"]),
    ("dotted function", lambda: fit("y ~ np.log(x)"), lb.FormulaError, ["'np.log'", "dotted name"]),
    ("attribute access", lambda: fit("y ~ I(x).to_csv('a')"), lb.FormulaError, ["attribute access"]),
    ("%in% operator", lambda: fit("y ~ x %in% g"), lb.FormulaError, ["%in%", "x:g"]),
    ("numeric term", lambda: fit("y ~ 1e-3"), lb.FormulaError, ["'1e-3'", "not a predictor"]),
    ("zero group term", lambda: fit("y ~ x + (0 | g)"), lb.FormulaError, ["(0 | g)", "no terms"]),
    ("one-level categorical predictor", lambda: fit("y ~ x + word"), lb.DataError, ["'word'", "single level"]),
    ("log of non-positive values", lambda: fit("y ~ log(x)"), lb.DataError, ["'log(x)'", "x > 0"]),
    ("sqrt of negatives in a group term", lambda: fit("y ~ 1 + (sqrt(x) | g)"), lb.DataError,
     ["'sqrt(x)'", "x >= 0"]),
    ("datetime predictor", lambda: fit("y ~ d", data=with_col(d=pd.date_range("2020-01-01", periods=N))),
     lb.DataError, ["'d'", "datetime64", "numeric, boolean, string or categorical"]),
    ("mixed object column", lambda: fit("y ~ m", data=with_col(m=[1, "a"] * (N // 2))), lb.DataError,
     ["'m'", "mixed Python objects"]),
    ("data is a Series", lambda: fit(data=DATA["x"]), lb.DataError, ["Series", "to_frame()"]),
    ("one row", lambda: fit(data=DATA.iloc[:1]), lb.DataError, ["1 complete row", "at least 2"]),
    ("constant response", lambda: fit(data=with_col(y=2.5)), lb.DataError, ["'y'", "constant"]),
    ("constant predictor with a flat prior", lambda: fit("y ~ x + k", data=with_col(k=1.0)), lb.DataError,
     ["'k'", "constant", "flat"]),
    ("custom prior returns a number", lambda: fit(priors=[P(lambda name, **kw: 3.0, coef="x")]), lb.PriorError,
     ["must return the PyMC random variable"]),
    ("custom prior ignores the name", lambda: fit(priors=[P(lambda name, **kw: __import__("pymc").Normal(
        "other", 0, 1, **kw), coef="x")]), lb.PriorError, ["must name its variable"]),
    ("custom prior ignores the shape", lambda: fit("y ~ x + cat", priors=[P(lambda name, **kw: __import__(
        "pymc").Normal(name, 0, 1), class_="b")]), lb.PriorError, ["shape=(2,)", "**kwargs"]),
    ("custom prior factory raises", lambda: fit(priors=[P(lambda name, **kw: 1 / 0, coef="x")]), lb.PriorError,
     ["factory failed", "ZeroDivisionError"]),
    ("tune zero with nutpie", lambda: fit(tune=0), lb.FitError, ["tune=0", "at least 1"]),
    ("sbc without simulations", lambda: lb.simulation_based_calibration("y ~ x", DATA, [P("normal(0, 1)")], n_sims=0),
     lb.FitError, ["n_sims", "positive integer"]),
    ("load None", lambda: lb.load(None), lb.FitFileError, ["needs the path"]),
    ("load a number", lambda: lb.load(123), lb.FitFileError, ["needs the path"]),
    ("unknown link", lambda: fit(family=lb.family("gaussian", link="logit")), lb.FitError,
     ["'logit'", "identity"]),
    ("no response", lambda: fit("~ x"), lb.FormulaError, ["no response"]),
    ("empty right-hand side", lambda: fit("y ~ "), lb.FormulaError, ["nothing after '~'"]),
    ("response not numeric", lambda: fit("word ~ x"), lb.DataError, ["'word'", "must be numeric"]),
    ("group term with no factor", lambda: fit("y ~ x + (1 | )"), lb.FormulaError, ["no grouping factor"]),
    ("group term with no terms", lambda: fit("y ~ x + ( | g)"), lb.FormulaError, ["nothing before '|'"]),
    ("bar outside parentheses", lambda: fit("y ~ x | g"), lb.FormulaError, ["own parentheses"]),
    ("grouping factor single level", lambda: fit("y ~ x + (1 | word)"), lb.DataError, ["'word'", "single level"]),
    ("term listed twice", lambda: fit("y ~ x + x"), lb.FormulaError, ["'x'", "listed twice"]),
    ("group term listed twice", lambda: fit("y ~ x + (1 | g) + (1 | g)"), lb.FormulaError, ["listed twice"]),
    ("subtracting a term", lambda: fit("y ~ x - cat"), lb.FormulaError, ["'cat'", "only '- 1'"]),
    ("Intercept keyword with intercept", lambda: fit("y ~ Intercept + x"), lb.FormulaError, ["0 + Intercept"]),
    ("grouping by expression", lambda: fit("y ~ x + (1 | log(g))"), lb.FormulaError, ["not a column name"]),
    # data
    ("data is a dict", lambda: fit(data=DATA.to_dict()), lb.DataError, ["dict", "pandas or polars"]),
    ("data is an array", lambda: fit(data=DATA.to_numpy()), lb.DataError, ["ndarray", "pandas or polars"]),
    ("data is None", lambda: fit(data=None), lb.DataError, ["NoneType", "pandas or polars"]),
    ("empty data", lambda: fit(data=DATA.iloc[:0]), lb.DataError, ["no rows"]),
    ("all rows missing", lambda: fit(data=with_col(x=np.nan)), lb.DataError, ["missing value", "'x'"]),
    ("infinite predictor", lambda: fit(data=with_col(x=np.r_[np.inf, DATA.x[1:]])), lb.DataError, ["'x'", "infinite"]),
    ("infinite response", lambda: fit(data=with_col(y=np.r_[-np.inf, DATA.y[1:]])), lb.DataError, ["'y'", "infinite"]),
    ("strings in the response", lambda: fit(data=with_col(y=DATA.y.astype(str))), lb.DataError, ["'y'", "numeric"]),
    ("duplicate column names", lambda: fit(data=pd.concat([DATA, DATA[["x"]]], axis=1)), lb.DataError, ["duplicate column", "'x'"]),
    # priors
    ("unknown distribution", lambda: P("gauss(0, 1)"), lb.PriorError, ["'gauss'", "Valid names"]),
    ("wrong arity", lambda: P("normal(0)"), lb.PriorError, ["normal(mu, sigma)", "1 were given"]),
    ("non-numeric argument", lambda: P("normal(0, big)"), lb.PriorError, ["'big'", "not a number"]),
    ("negative scale", lambda: P("normal(0, -2)"), lb.PriorError, ["sigma", "> 0", "-2"]),
    ("infinite argument", lambda: P("normal(0, inf)"), lb.PriorError, ["must be finite"]),
    ("lkj eta zero", lambda: P("lkj(0)", class_="cor"), lb.PriorError, ["eta", "> 0"]),
    ("unknown class", lambda: P("normal(0, 1)", class_="slope"), lb.PriorError, ["'slope'", "valid classes"]),
    ("coef matches nothing", lambda: fit(priors=[P("normal(0, 1)", coef="z")]), lb.PriorError,
     ["coef='z'", "can be set", "coef='x'"]),
    ("group matches nothing", lambda: fit("y ~ x + (1 | g)", priors=[P("normal(0, 1)", class_="sd", group="h")]),
     lb.PriorError, ["group='h'", "group='g'"]),
    ("sd prior without group terms", lambda: fit(priors=[P("normal(0, 1)", class_="sd")]), lb.PriorError,
     ["class='sd'", "matches no parameter"]),
    ("cor prior on uncorrelated factor", lambda: fit("y ~ x + (1 | g)", priors=[P("lkj(2)", class_="cor", group="g")]),
     lb.PriorError, ["'g' has no correlated terms"]),
    ("cor prior needs lkj", lambda: P("normal(0, 1)", class_="cor"), lb.PriorError, ["needs an LKJ prior"]),
    ("bounds contradict the distribution", lambda: P("exponential(1)", ub=-1), lb.PriorError, ["leave no mass"]),
    ("lb above ub", lambda: P("normal(0, 1)", lb=1, ub=0), lb.PriorError, ["lb (1.0) must be smaller than ub (0.0)"]),
    ("negative lb on sd", lambda: P("normal(0, 1)", class_="sd", lb=-1), lb.PriorError, ["lb must be >= 0"]),
    ("same target twice", lambda: fit(priors=[P("normal(0, 1)", coef="x"), P("normal(0, 5)", coef="x")]),
     lb.PriorError, ["Two different priors", "coef='x'"]),
    ("priors not prior objects", lambda: fit(priors=["normal(0, 1)"]), lb.PriorError, ["lmmbayes.prior"]),
    ("prior string not a string", lambda: P(5), lb.PriorError, ["must be a string"]),
    # fit options
    ("chains zero", lambda: fit(chains=0), lb.FitError, ["chains", "positive integer", "0"]),
    ("draws float", lambda: fit(draws=10.5), lb.FitError, ["draws", "positive integer"]),
    ("tune negative", lambda: fit(tune=-1), lb.FitError, ["tune", "non-negative integer"]),
    ("target_accept one", lambda: fit(target_accept=1), lb.FitError, ["target_accept", "between 0 and 1"]),
    ("target_accept string", lambda: fit(target_accept="high"), lb.FitError, ["target_accept"]),
    ("seed negative", lambda: fit(seed=-3), lb.FitError, ["seed", "non-negative integer"]),
    ("seed float", lambda: fit(seed=1.5), lb.FitError, ["seed"]),
    ("unknown family", lambda: fit(family="nosuch"), lb.FitError, ["'nosuch'", "gaussian"]),
    ("unknown method", lambda: fit(method="vi"), lb.FitError, ["'vi'", "joint"]),
    ("unknown sampler", lambda: fit(sampler="hmc"), lb.FitError, ["'hmc'", "nutpie"]),
    ("get_prior unknown family", lambda: lb.get_prior("y ~ x", DATA, family="nosuch"), lb.FitError, ["'nosuch'"]),
    # families: responses they cannot take, links they lack, addition terms
    ("bernoulli of three values", lambda: fit(data=with_col(y=np.resize(["a", "b", "c"], N)), family="bernoulli"),
     lb.DataError, ["'y'", "exactly two values", "cumulative"]),
    ("bernoulli of counts", lambda: fit(data=with_col(y=np.resize([0, 1, 2], N)), family="bernoulli"),
     lb.DataError, ["'y'", "must be 0 or 1"]),
    ("binomial above trials", lambda: fit("y | trials(5) ~ x", with_col(y=np.resize([1, 6], N)), family="binomial"),
     lb.DataError, ["'y'", "cannot exceed its trials"]),
    ("binomial negative", lambda: fit("y | trials(5) ~ x", with_col(y=np.resize([1, -1], N)), family="binomial"),
     lb.DataError, ["'y'", "whole numbers"]),
    ("binomial without trials", lambda: fit(data=with_col(y=np.resize([1, 2], N)), family="binomial"),
     lb.FitError, ["trials(n)", "max(y)"]),
    ("trials not whole", lambda: fit("y | trials(n) ~ x", with_col(y=1, n=np.resize([2.5, 3.0], N)),
                                     family="binomial"), lb.DataError, ["trials(n)", "positive integers"]),
    ("poisson of fractions", lambda: fit(data=with_col(y=np.resize([0.5, 1.0], N)), family="poisson"),
     lb.DataError, ["'y'", "non-negative integers"]),
    ("negbinomial negative", lambda: fit(data=with_col(y=np.resize([-1, 1], N)), family="negbinomial"),
     lb.DataError, ["'y'", "non-negative integers"]),
    ("beta at 1", lambda: fit(data=with_col(y=np.resize([0.5, 1.0], N)), family="beta"),
     lb.DataError, ["'y'", "strictly between 0 and 1", "zero-one-inflated"]),
    ("gamma at 0", lambda: fit(data=with_col(y=np.resize([0.0, 1.0], N)), family="gamma"),
     lb.DataError, ["'y'", "positive"]),
    ("lognormal negative", lambda: fit(data=with_col(y=np.resize([-1.0, 1.0], N)), family="lognormal"),
     lb.DataError, ["'y'", "positive"]),
    ("cumulative of unordered strings", lambda: fit(data=with_col(y=np.resize(["lo", "mid", "hi"], N)),
                                                    family="cumulative"),
     lb.DataError, ["'y'", "not ordered", "ordered=True", "1..K"]),
    ("cumulative of zero", lambda: fit(data=with_col(y=np.resize([0, 1, 2], N)), family="cumulative"),
     lb.DataError, ["'y'", "positive integers", "ordered pandas categorical"]),
    ("cumulative of fractions", lambda: fit(data=with_col(y=np.resize([1.5, 2.0], N)), family="cumulative"),
     lb.DataError, ["'y'", "positive integers"]),
    ("cumulative of one category", lambda: fit(data=with_col(y=1), family="cumulative"),
     lb.DataError, ["'y'", "one category", "at least two"]),
    ("cumulative without intercept", lambda: fit("y ~ 0 + x", with_col(y=np.resize([1, 2, 3], N)),
                                                 family="cumulative"), lb.FitError, ["thresholds", "'0 +'"]),
    ("cumulative with explicit Intercept", lambda: fit("y ~ 0 + Intercept + x", with_col(y=np.resize([1, 2, 3], N)),
                                                       family="cumulative"), lb.FitError, ["thresholds", "implicit"]),
    ("cumulative identity link", lambda: fit(family=lb.family("cumulative", link="identity")), lb.FitError,
     ["'identity'", "logit", "probit"]),
    ("bounded threshold prior", lambda: fit(data=with_col(y=np.resize([1, 2, 3], N)), family="cumulative",
                                            priors=[P("normal(0, 1)", class_="Intercept", lb=-5)]),
     lb.PriorError, ["Intercept[1]", "ordered and unbounded"]),
    ("threshold prior on a missing category", lambda: fit(data=with_col(y=np.resize([1, 2, 3], N)),
                                                          family="cumulative",
                                                          priors=[P("normal(0, 1)", class_="Intercept", coef="3")]),
     lb.PriorError, ["coef='3'", "matches no parameter", "coef='2'"]),
    ("link the family lacks", lambda: fit(family=lb.family("poisson", link="logit")), lb.FitError,
     ["'logit'", "log", "identity", "sqrt"]),
    ("negative weights", lambda: fit("y | weights(w) ~ x", with_col(w=np.resize([1.0, -1.0], N))), lb.DataError,
     ["weights(w)", "non-negative"]),
    ("weights column missing", lambda: fit("y | weights(nope) ~ x"), lb.FormulaError, ["'nope'"]),
    ("weights summing to zero", lambda: fit("y | weights(w) ~ x", with_col(w=0.0)), lb.DataError,
     ["weights (w)", "sum to zero"]),
    ("se not positive", lambda: fit("y | se(s) ~ x", with_col(s=np.resize([1.0, 0.0], N))), lb.DataError,
     ["se(s)", "positive"]),
    ("se for a poisson", lambda: fit("y | se(s) ~ x", with_col(y=1, s=1.0), family="poisson"), lb.FitError,
     ["se()", "poisson", "weights()"]),
    ("trials for a gaussian", lambda: fit("y | trials(5) ~ x"), lb.FitError, ["trials()", "gaussian", "se()"]),
]


_FITTED: dict[str, lb.Fit] = {}


def fitted() -> lb.Fit:
    """One small fit shared by the prediction cases (fitted on first use)."""
    if "fit" not in _FITTED:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _FITTED["fit"] = lb.fit("y ~ x + cat + (1 | g)", DATA, chains=1, draws=50, tune=50, seed=1,
                                    progress=False)
    return _FITTED["fit"]


CASES += [
    # prediction
    ("newdata missing a predictor", lambda: fitted().predict(pd.DataFrame({"cat": ["a"], "g": ["g1"]})),
     lb.DataError, ["['x']", "lacks the column"]),
    ("unseen group level", lambda: fitted().predict(pd.DataFrame({"x": [0.0], "cat": ["a"], "g": ["g9"]})),
     lb.DataError, ["'g'", "['g9']", "allow_new_levels=True"]),
    ("unseen categorical level", lambda: fitted().predict(pd.DataFrame({"x": [0.0], "cat": ["z"], "g": ["g1"]})),
     lb.DataError, ["['z']", "'cat'", "levels seen in training"]),
    ("newdata with infinite values", lambda: fitted().predict(pd.DataFrame({"x": [np.inf], "cat": ["a"], "g": ["g1"]})),
     lb.DataError, ["'x'", "infinite"]),
    ("newdata with missing values", lambda: fitted().predict(pd.DataFrame({"x": [np.nan], "cat": ["a"], "g": ["g1"]})),
     lb.DataError, ["['x']", "missing values"]),
    ("newdata not a frame", lambda: fitted().predict({"x": [0.0]}), lb.DataError, ["pandas or polars"]),
    ("bad sample_new_levels", lambda: fitted().predict(pd.DataFrame({"x": [0.0], "cat": ["a"], "g": ["g9"]}),
                                                       allow_new_levels=True, sample_new_levels="old_levels"),
     lb.LmmbayesError, ["sample_new_levels", "uncertainty"]),
    ("bad pp_check kind", lambda: fitted().pp_check("violin"), lb.LmmbayesError, ["'violin'", "dens_overlay"]),
    ("bad plot kind", lambda: fitted().plot("histogram"), lb.LmmbayesError, ["'histogram'", "trace"]),
    ("unknown sample_prior", lambda: fit(sample_prior="both"), lb.FitError, ["'both'", "yes", "only"]),
    ("load a missing file", lambda: lb.load("/nonexistent/fit.lmmb"), lb.FitError, ["Could not read"]),
]


@pytest.mark.parametrize(("label", "call", "error", "needles"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(label, call, error, needles):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lb.DataWarning)
        with pytest.raises(lb.LmmbayesError) as info:
            call()
    assert isinstance(info.value, error), f"{label}: got {type(info.value).__name__}: {info.value}"
    for needle in needles:
        assert needle in str(info.value), f"{label}: {needle!r} not in {info.value}"


def test_catalogue_is_large_enough():
    assert len(CASES) >= 90


DOCUMENTED_WARNINGS = [
    ("rows with missing values", lambda: lb.get_prior("y ~ x", with_col(x=np.r_[np.nan, DATA.x[1:]])),
     "Dropped 1 of 40 rows"),
    ("unused categories", lambda: lb.get_prior(
        "y ~ x + (1 | g)", with_col(g=pd.Categorical(DATA.g, categories=["g1", "g2", "g3", "g4", "g5"]))),
     "'g' has unused categories ['g5']"),
    ("collinear predictors", lambda: lb.get_prior("y ~ x + x2", with_col(x2=3 * DATA.x)),
     "['x', 'x2'] are exactly collinear"),
    ("constant predictor", lambda: lb.get_prior("y ~ x + k", with_col(k=1.0)), "['k']"),
    ("missing values counted once", lambda: lb.get_prior("y ~ x + cat", with_col(x=np.r_[np.nan, DATA.x[1:]],
                                                                                   cat=np.r_[None, DATA.cat[1:]])),
     "Dropped 1 of 40 rows"),
]


@pytest.mark.parametrize(("label", "call", "needle"), DOCUMENTED_WARNINGS, ids=[c[0] for c in DOCUMENTED_WARNINGS])
def test_documented_warnings(label, call, needle):
    with pytest.warns(lb.DataWarning) as record:
        call()
    assert any(needle in str(w.message) for w in record), [str(w.message) for w in record]
