"""Benchmark data sets, generated identically in every environment (numpy only).

Each case is a formula, a data generator and priors written once for
lmmbayes (brms syntax) and once for bambi, meaning the same distributions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def simulated(n: int, groups: int, seed: int = 20) -> pd.DataFrame:
    """y ~ x + (x | g): intercept 1, slope 2, sd (1, 0.5), cor 0.3, sigma 1."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, groups, size=n)
    x = rng.normal(size=n)
    cov = np.array([[1.0, 0.15], [0.15, 0.25]])
    r = rng.multivariate_normal([0.0, 0.0], cov, size=groups)
    y = 1.0 + 2.0 * x + r[g, 0] + r[g, 1] * x + rng.normal(size=n)
    return pd.DataFrame({"y": y, "x": x, "g": pd.Categorical([f"g{k:04d}" for k in g])})


def sleepstudy_shaped(seed: int = 18) -> pd.DataFrame:
    """180 rows, 18 subjects x 10 days, lme4's sleepstudy estimates as truth."""
    rng = np.random.default_rng(seed)
    subject = np.repeat(np.arange(18), 10)
    days = np.tile(np.arange(10.0), 18)
    cov = np.array([[24.7**2, 0.07 * 24.7 * 5.9], [0.07 * 24.7 * 5.9, 5.9**2]])
    r = rng.multivariate_normal([0.0, 0.0], cov, size=18)
    y = 251.4 + 10.5 * days + r[subject, 0] + r[subject, 1] * days + rng.normal(0, 25.6, 180)
    return pd.DataFrame({"Reaction": y, "Days": days, "Subject": [f"S{k:02d}" for k in subject]})


def crossed_small(seed: int = 19) -> pd.DataFrame:
    """180 rows, 18 subjects x 10 days crossed with a 3-level factor (sleepstudy-sized, crossed intercepts)."""
    rng = np.random.default_rng(seed)
    subject = np.repeat(np.arange(18), 10)
    caffeine = rng.integers(0, 3, 180)
    days = np.tile(np.arange(10.0), 18)
    y = (251.4 + 10.5 * days + rng.normal(0, 30, 18)[subject] + rng.normal(0, 15, 3)[caffeine]
         + rng.normal(0, 25.6, 180))
    return pd.DataFrame({"Reaction": y, "Days": days, "Subject": [f"S{k:02d}" for k in subject],
                         "Caffeine": [f"c{k}" for k in caffeine]})


def crossed_intercepts(subjects: int, items: int, seed: int = 21) -> pd.DataFrame:
    """Every subject answers every item once: y ~ x + (1 | subject) + (1 | item), sds 1 and 0.7, sigma 1."""
    rng = np.random.default_rng(seed)
    s, i = np.repeat(np.arange(subjects), items), np.tile(np.arange(items), subjects)
    x = rng.normal(size=s.size)
    y = 0.5 + 0.3 * x + rng.normal(0, 1, subjects)[s] + rng.normal(0, 0.7, items)[i] + rng.normal(size=s.size)
    return pd.DataFrame({"y": y, "x": x, "subject": [f"s{k:04d}" for k in s], "item": [f"i{k:04d}" for k in i]})


def maximal_2x2(subjects: int = 60, items: int = 40, seed: int = 23) -> pd.DataFrame:
    """A 2 x 2 within-subject, within-item design (issue 14): every subject answers every item once, the four
    conditions rotated over items by a Latin square; sum-coded a and b (±0.5); correlated intercepts and
    effects of a, b and a:b on both factors (q = 4), sigma 1."""
    rng = np.random.default_rng(seed)
    s, i = np.repeat(np.arange(subjects), items), np.tile(np.arange(items), subjects)
    cond = (s + i) % 4
    a, b = np.where(cond % 2 == 0, -0.5, 0.5), np.where(cond < 2, -0.5, 0.5)
    X = np.column_stack([np.ones(s.size), a, b, a * b])
    cor = np.full((4, 4), 0.3) + 0.7 * np.eye(4)
    subj = rng.multivariate_normal(np.zeros(4), cor * np.outer([1.0, 0.5, 0.5, 0.3], [1.0, 0.5, 0.5, 0.3]), subjects)
    item = rng.multivariate_normal(np.zeros(4), cor * np.outer([0.8, 0.4, 0.4, 0.2], [0.8, 0.4, 0.4, 0.2]), items)
    y = X @ [0.5, 0.4, 0.2, 0.1] + (X * subj[s]).sum(axis=1) + (X * item[i]).sum(axis=1) + rng.normal(size=s.size)
    return pd.DataFrame({"y": y, "a": a, "b": b, "subject": [f"s{k:03d}" for k in s], "item": [f"i{k:03d}" for k in i]})


def schools_classes(schools: int = 100, classes: int = 8, pupils: int = 25, seed: int = 25) -> pd.DataFrame:
    """Pupils within classes within schools (issue 14's nested factors; 20,000 rows by default): correlated
    intercepts and slopes of x on both levels, sds (0.8, 0.3) per school and (0.5, 0.2) per class, sigma 1."""
    rng = np.random.default_rng(seed)
    school = np.repeat(np.arange(schools), classes * pupils)
    cls = np.repeat(np.arange(schools * classes), pupils)
    x = rng.normal(size=cls.size)
    cor = np.array([[1.0, 0.4], [0.4, 1.0]])
    u = rng.multivariate_normal([0, 0], cor * np.outer([0.8, 0.3], [0.8, 0.3]), schools)
    v = rng.multivariate_normal([0, 0], cor * np.outer([0.5, 0.2], [0.5, 0.2]), schools * classes)
    y = 1.0 + 0.5 * x + u[school, 0] + u[school, 1] * x + v[cls, 0] + v[cls, 1] * x + rng.normal(size=cls.size)
    return pd.DataFrame({"y": y, "x": x, "school": [f"s{k:03d}" for k in school],
                         "class": [f"c{k % classes}" for k in cls]})


def users_items(users: int = 10_000, items: int = 1_000, per_user: int = 100, seed: int = 24) -> pd.DataFrame:
    """Ratings data (issue 14): every user rates ``per_user`` distinct random items (10^6 rows by default);
    y ~ x + (1 | user) + (1 | item) with sds 0.5 and 0.8, sigma 1."""
    rng = np.random.default_rng(seed)
    user = np.repeat(np.arange(users), per_user)
    item = np.argsort(rng.random((users, items)), axis=1)[:, :per_user].ravel()
    x = rng.normal(size=user.size)
    y = 3.0 + 0.2 * x + rng.normal(0, 0.5, users)[user] + rng.normal(0, 0.8, items)[item] + rng.normal(size=user.size)
    return pd.DataFrame({"y": y, "x": x, "user": pd.Categorical(user), "item": pd.Categorical(item)})


def penicillin() -> pd.DataFrame:
    """lme4's Penicillin (GPL: read from ../shared, never shipped): 24 plates x 6 samples, crossed."""
    from pathlib import Path

    return pd.read_csv(Path(__file__).resolve().parents[2] / "shared" / "data" / "lme4_brms" / "Penicillin.csv")


def insteval() -> pd.DataFrame:
    """lme4's InstEval (GPL: read from ../shared, never shipped): 73,421 ratings, students x lecturers."""
    from pathlib import Path

    df = pd.read_csv(Path(__file__).resolve().parents[2] / "shared" / "data" / "lme4_brms" / "InstEval.csv")
    return df.astype({"s": str, "d": str, "dept": str, "service": str})


def bounce() -> pd.DataFrame:
    from pathlib import Path

    here = Path(__file__).resolve().parent.parent / "lmmbayes" / "datasets" / "data" / "bounce_rates_sim.csv"
    df = pd.read_csv(here)
    df["std_age"] = (df["age"] - df["age"].mean()) / df["age"].std(ddof=1)
    return df


# name -> (formula, data factory, lmmbayes priors (dist, class, coef, group), bambi priors)
CASES = {
    "bounce": ("bounce_time ~ std_age + (1 + std_age | county)", bounce,
               [("normal(200, 1)", "Intercept", "", ""), ("normal(4, 1)", "b", "std_age", ""),
                ("normal(0, 100)", "sigma", "", ""), ("normal(0, 10)", "sd", "", "county")],
               {"Intercept": ("Normal", {"mu": 200, "sigma": 1}), "std_age": ("Normal", {"mu": 4, "sigma": 1}),
                "sigma": ("HalfNormal", {"sigma": 100}), "sd": 10}),
    "sleepstudy": ("Reaction ~ Days + (Days | Subject)", sleepstudy_shaped,
                   [("normal(250, 50)", "Intercept", "", ""), ("normal(0, 20)", "b", "", ""),
                    ("normal(0, 50)", "sigma", "", ""), ("normal(0, 30)", "sd", "", "Subject")],
                   {"Intercept": ("Normal", {"mu": 250, "sigma": 50}), "Days": ("Normal", {"mu": 0, "sigma": 20}),
                    "sigma": ("HalfNormal", {"sigma": 50}), "sd": 30}),
}
CASES["crossed_small"] = (
    "Reaction ~ Days + (1 | Subject) + (1 | Caffeine)", crossed_small,
    [("normal(250, 50)", "Intercept", "", ""), ("normal(0, 20)", "b", "", ""), ("normal(0, 50)", "sigma", "", ""),
     ("normal(0, 30)", "sd", "", "")],
    {"Intercept": ("Normal", {"mu": 250, "sigma": 50}), "Days": ("Normal", {"mu": 0, "sigma": 20}),
     "sigma": ("HalfNormal", {"sigma": 50}), "sd": 30})
CASES["penicillin"] = (
    "diameter ~ 1 + (1 | plate) + (1 | sample)", penicillin,
    [("normal(23, 5)", "Intercept", "", ""), ("normal(0, 5)", "sigma", "", ""), ("normal(0, 5)", "sd", "", "")],
    {"Intercept": ("Normal", {"mu": 23, "sigma": 5}), "sigma": ("HalfNormal", {"sigma": 5}), "sd": 5})
CASES["insteval"] = (
    "y ~ service + (1 | s) + (1 | d) + (1 | dept:service)", insteval,
    [("normal(3, 2)", "Intercept", "", ""), ("normal(0, 2)", "b", "", ""), ("normal(0, 2)", "sigma", "", ""),
     ("normal(0, 2)", "sd", "", "")],
    {"Intercept": ("Normal", {"mu": 3, "sigma": 2}), "service": ("Normal", {"mu": 0, "sigma": 2}),
     "sigma": ("HalfNormal", {"sigma": 2}), "sd": 2})


def wide_priors(*coefs: str) -> tuple[list, dict]:
    """normal(0, 5) on the intercept, every coefficient, sigma and the sds: brms's spelling, then bambi's for
    the named coefficients."""
    normal = ("Normal", {"mu": 0, "sigma": 5})
    return ([("normal(0, 5)", c, "", "") for c in ("Intercept", "b", "sigma", "sd")],
            {"Intercept": normal, **{c: normal for c in coefs}, "sigma": ("HalfNormal", {"sigma": 5}), "sd": 5})


CASES["maximal_2x2"] = ("y ~ a + b + a:b + (1 + a + b + a:b | subject) + (1 + a + b + a:b | item)", maximal_2x2,
                        *wide_priors("a", "b", "a:b"))
CASES["users_items"] = ("y ~ x + (1 | user) + (1 | item)", users_items, *wide_priors("x"))
# Written as school + school:class, which bambi's, brms's and lme4's formulas all read as the nesting school/class.
CASES["schools_classes"] = ("y ~ x + (1 + x | school) + (1 + x | school:class)", schools_classes,
                            *wide_priors("x"))
for n_s, n_i in [(40, 20), (100, 50), (200, 100)]:
    CASES[f"crossed_S{n_s}_I{n_i}"] = (
        "y ~ x + (1 | subject) + (1 | item)", (lambda a=n_s, b=n_i: crossed_intercepts(a, b)), *wide_priors("x"))
for n, g in [(10_000, 10), (10_000, 1000), (100_000, 10), (100_000, 1000), (1_000_000, 10), (1_000_000, 1000)]:
    CASES[f"sim_N{n}_G{g}"] = (
        "y ~ x + (x | g)", (lambda n=n, g=g: simulated(n, g)),
        [("normal(0, 5)", "Intercept", "", ""), ("normal(0, 5)", "b", "", ""),
         ("normal(0, 5)", "sigma", "", ""), ("normal(0, 5)", "sd", "", "g")],
        {"Intercept": ("Normal", {"mu": 0, "sigma": 5}), "x": ("Normal", {"mu": 0, "sigma": 5}),
         "sigma": ("HalfNormal", {"sigma": 5}), "sd": 5},
    )


# -- GLMMs (issue 13): the family of each case, and bambi's spelling of its formula where it differs ------------


def shared(name: str) -> pd.DataFrame:
    """A data set of lme4/brms (GPL: read from ../shared, never shipped)."""
    from pathlib import Path

    return pd.read_csv(Path(__file__).resolve().parents[2] / "shared" / "data" / "lme4_brms" / name)


def epilepsy() -> pd.DataFrame:
    # labels that no CSV reader takes for numbers, so that R fits the same factors
    df = shared("epilepsy.csv")
    return df.assign(Trt="t" + df["Trt"].astype(str), patient="p" + df["patient"].astype(str))


def cbpp() -> pd.DataFrame:
    df = shared("cbpp.csv")
    return df.assign(herd="h" + df["herd"].astype(str), period="p" + df["period"].astype(str))


def verbagg() -> pd.DataFrame:
    """lme4's VerbAgg: 316 persons x 24 items crossed, 7,584 bernoulli responses (r2)."""
    df = shared("VerbAgg.csv")
    return df.assign(id="p" + df["id"].astype(str))


def bernoulli_sim(n: int, groups: int, seed: int = 22) -> pd.DataFrame:
    """y ~ x + (1 + x | g), continuous x, correlated intercepts and slopes (SDs 1 and 0.5, correlation 0.3)."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, groups, n)
    x = rng.normal(size=n)
    L = np.linalg.cholesky(np.array([[1.0, 0.15], [0.15, 0.25]]))
    b = rng.normal(size=(groups, 2)) @ L.T
    eta = -0.5 + 0.8 * x + b[g, 0] + b[g, 1] * x
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(int)
    return pd.DataFrame({"y": y, "x": x, "g": g.astype(str)})


_GLMM_PRIORS = [("normal(0, 5)", "Intercept", "", ""), ("normal(0, 5)", "b", "", ""), ("normal(0, 2)", "sd", "", "")]
#: case -> (lmmbayes and brms family, bambi family, bambi formula or None for the same, lme4 formula or None)
FAMILIES: dict[str, tuple[str, str, str | None, str | None]] = {}
CASES["epilepsy"] = ("count ~ zAge + zBase * Trt + (1 | patient)", epilepsy, _GLMM_PRIORS,
                     {"Intercept": ("Normal", {"mu": 0, "sigma": 5}), "zAge": ("Normal", {"mu": 0, "sigma": 5}),
                      "zBase": ("Normal", {"mu": 0, "sigma": 5}), "Trt": ("Normal", {"mu": 0, "sigma": 5}),
                      "zBase:Trt": ("Normal", {"mu": 0, "sigma": 5}), "sd": 2})
FAMILIES["epilepsy"] = ("poisson", "poisson", None, None)
CASES["cbpp"] = ("incidence | trials(size) ~ period + (1 | herd)", cbpp, _GLMM_PRIORS,
                 {"Intercept": ("Normal", {"mu": 0, "sigma": 5}), "period": ("Normal", {"mu": 0, "sigma": 5}), "sd": 2})
FAMILIES["cbpp"] = ("binomial", "binomial", "p(incidence, size) ~ period + (1 | herd)",
                    "cbind(incidence, size - incidence) ~ period + (1 | herd)")
# Crossed persons x items: the joint engine fits it (crossed GLMMs are not collapsed).
CASES["verbagg"] = ("r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)", verbagg, _GLMM_PRIORS,
                    {"Intercept": ("Normal", {"mu": 0, "sigma": 5}),
                     **{c: ("Normal", {"mu": 0, "sigma": 5}) for c in ("Anger", "Gender", "btype", "situ")}, "sd": 2})
FAMILIES["verbagg"] = ("bernoulli", "bernoulli", None, None)
for n in (10_000, 100_000, 1_000_000):
    CASES[f"bern_N{n}_G1000"] = ("y ~ x + (1 + x | g)", (lambda n=n: bernoulli_sim(n, 1000)), _GLMM_PRIORS,
                                 {"Intercept": ("Normal", {"mu": 0, "sigma": 5}),
                                  "x": ("Normal", {"mu": 0, "sigma": 5}), "sd": 2})
    FAMILIES[f"bern_N{n}_G1000"] = ("bernoulli", "bernoulli", None, None)


def bernoulli_nested(schools: int = 100, classes: int = 8, pupils: int = 10, seed: int = 26) -> pd.DataFrame:
    """Pupils within classes within schools, a bernoulli response: y ~ x + (1 | school/class), continuous x,
    SDs 1 (schools) and 0.7 (classes); class labels repeat across schools, as in lme4's nested data."""
    rng = np.random.default_rng(seed)
    school = np.repeat(np.arange(schools), classes * pupils)
    klass = np.repeat(np.arange(schools * classes), pupils)
    x = rng.normal(size=school.size)
    eta = -0.3 + 0.6 * x + rng.normal(size=schools)[school] + 0.7 * rng.normal(size=schools * classes)[klass]
    y = (rng.random(school.size) < 1 / (1 + np.exp(-eta))).astype(int)
    return pd.DataFrame({"y": y, "x": x, "school": "s" + school.astype(str),
                         "class": "c" + (klass % classes).astype(str)})


# Nested factors on the collapsed engine's nested quadrature (8,000 rows by default).
CASES["bern_nested"] = ("y ~ x + (1 | school/class)", bernoulli_nested, _GLMM_PRIORS,
                        {"Intercept": ("Normal", {"mu": 0, "sigma": 5}), "x": ("Normal", {"mu": 0, "sigma": 5}),
                         "sd": 2})
FAMILIES["bern_nested"] = ("bernoulli", "bernoulli", "y ~ x + (1 | school) + (1 | school:class)", None)


def positive_sim(family: str, n: int = 4000, groups: int = 200, seed: int = 27) -> pd.DataFrame:
    """A positive response with correlated intercepts and slopes (SDs 0.5 and 0.25, correlation 0.3) on the log
    scale: gamma (shape 3, mean exp(eta)) or lognormal (log y ~ N(eta, 0.4)); ``log_y`` for the tools that fit
    lognormal as the normal model of log y (bambi has no lognormal family; lmer)."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, groups, n)
    x = rng.normal(size=n)
    L = np.linalg.cholesky(np.array([[0.25, 0.0375], [0.0375, 0.0625]]))
    b = rng.normal(size=(groups, 2)) @ L.T
    eta = 1.0 + 0.4 * x + b[g, 0] + b[g, 1] * x
    y = rng.gamma(3.0, np.exp(eta) / 3.0) if family == "gamma" else np.exp(eta + 0.4 * rng.normal(size=n))
    return pd.DataFrame({"y": y, "log_y": np.log(y), "x": x, "g": "g" + g.astype(str)})


# Positive responses (issue 13's "other families where it pays"): gamma on the collapsed GLMM quadrature, and
# lognormal on the exact Gaussian engine (normal on log y). The shape and sigma priors are set for every tool.
_BAMBI_POSITIVE = {"Intercept": ("Normal", {"mu": 0, "sigma": 5}), "x": ("Normal", {"mu": 0, "sigma": 5}), "sd": 2}
CASES["gamma_G200"] = ("y ~ x + (1 + x | g)", lambda: positive_sim("gamma"),
                       [*_GLMM_PRIORS, ("normal(0, 5)", "shape", "", "")],
                       {**_BAMBI_POSITIVE, "alpha": ("HalfNormal", {"sigma": 5})})
FAMILIES["gamma_G200"] = ("gamma", "gamma:log", None, None)
# 100 rows per group: the precomputed nodes (the shape rescales their weights), no pass over the rows per gradient
CASES["gamma_N100000_G1000"] = ("y ~ x + (1 + x | g)", lambda: positive_sim("gamma", 100_000, 1000),
                                [*_GLMM_PRIORS, ("normal(0, 5)", "shape", "", "")],
                                {**_BAMBI_POSITIVE, "alpha": ("HalfNormal", {"sigma": 5})})
FAMILIES["gamma_N100000_G1000"] = ("gamma", "gamma:log", None, None)
CASES["lognormal_G200"] = ("y ~ x + (1 + x | g)", lambda: positive_sim("lognormal"),
                           [*_GLMM_PRIORS, ("normal(0, 2)", "sigma", "", "")],
                           {**_BAMBI_POSITIVE, "sigma": ("HalfNormal", {"sigma": 2})})
FAMILIES["lognormal_G200"] = ("lognormal", "gaussian", "log_y ~ x + (1 + x | g)", "log_y ~ x + (1 + x | g)")


def poisson_nested_slopes(schools: int = 100, classes: int = 8, pupils: int = 10, seed: int = 28) -> pd.DataFrame:
    """Pupils within classes within schools, a count response with correlated intercepts and slopes at both
    levels: y ~ x + (1 + x | school/class), continuous x; SDs (0.5, 0.3) for schools and (0.4, 0.2) for classes,
    correlations 0.3; mean counts about e^1.5."""
    rng = np.random.default_rng(seed)
    school = np.repeat(np.arange(schools), classes * pupils)
    klass = np.repeat(np.arange(schools * classes), pupils)
    x = rng.normal(size=school.size)

    def effects(n: int, sd: tuple[float, float]) -> np.ndarray:
        cov = np.array([[sd[0] ** 2, 0.3 * sd[0] * sd[1]], [0.3 * sd[0] * sd[1], sd[1] ** 2]])
        return rng.normal(size=(n, 2)) @ np.linalg.cholesky(cov).T

    a, c = effects(schools, (0.5, 0.3)), effects(schools * classes, (0.4, 0.2))
    eta = 1.5 + 0.3 * x + a[school, 0] + a[school, 1] * x + c[klass, 0] + c[klass, 1] * x
    return pd.DataFrame({"y": rng.poisson(np.exp(eta)), "x": x, "school": "s" + school.astype(str),
                         "class": "c" + (klass % classes).astype(str)})


# Nested factors of two terms each: the collapsed engine's nested Laplace approximation (8,000 rows by default).
CASES["pois_nested_slopes"] = ("y ~ x + (1 + x | school/class)", poisson_nested_slopes, _GLMM_PRIORS,
                               {"Intercept": ("Normal", {"mu": 0, "sigma": 5}),
                                "x": ("Normal", {"mu": 0, "sigma": 5}), "sd": 2})
FAMILIES["pois_nested_slopes"] = ("poisson", "poisson", "y ~ x + (1 + x | school) + (1 + x | school:class)", None)
