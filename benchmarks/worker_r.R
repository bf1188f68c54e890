# One lme4 or brms fit in a fresh R process; prints one JSON line of measurements.
#
# usage: Rscript worker_r.R DATA.csv FORMULA TOOL CHAINS DRAWS PRIORS.tsv [FAMILY]
#   TOOL: lme4 (lmer, REML, or glmer, Laplace, for other families: a point estimate, no posterior) or brms
#   (rstan's NUTS). FAMILY: gaussian (default), bernoulli, binomial, poisson, negbinomial, gamma (log link) or
#   lognormal (brms's names; lme4 fits lognormal as lmer of log y, the formula run.py passes).
#   PRIORS.tsv: brms priors, one per line as prior<TAB>class<TAB>coef<TAB>group (brms only).
# run.py writes the data and priors from benchmarks/cases.py, so every tool fits the same
# numbers. R is never a dependency of lmmbayes: this is only for side-by-side timings.

t_start <- proc.time()[["elapsed"]]
args <- commandArgs(trailingOnly = TRUE)
data_path <- args[1]; formula <- args[2]; tool <- args[3]
chains <- as.integer(args[4]); draws <- as.integer(args[5]); prior_path <- args[6]
family <- if (length(args) >= 7) args[7] else "gaussian"
suppressPackageStartupMessages({
  if (tool == "lme4") library(lme4) else library(brms)
})
import_s <- proc.time()[["elapsed"]] - t_start
data <- read.csv(data_path)

peak_mb <- function() {
  status <- readLines("/proc/self/status")
  as.numeric(gsub("[^0-9]", "", status[grepl("^VmHWM", status)])) / 1024
}
json <- function(x) {
  parts <- vapply(names(x), function(k) {
    v <- x[[k]]
    if (is.character(v)) sprintf('"%s": "%s"', k, v) else sprintf('"%s": %.6g', k, v)
  }, "")
  cat("{", paste(parts, collapse = ", "), "}\n", sep = "")
}

if (tool == "lme4") {
  t0 <- proc.time()[["elapsed"]]
  fit <- switch(family,
    gaussian = lmer(as.formula(formula), data = data, REML = TRUE),
    bernoulli = , binomial = glmer(as.formula(formula), data = data, family = binomial),
    poisson = glmer(as.formula(formula), data = data, family = poisson),
    negbinomial = glmer.nb(as.formula(formula), data = data),
    gamma = glmer(as.formula(formula), data = data, family = Gamma(link = "log")),
    lognormal = lmer(as.formula(formula), data = data, REML = TRUE))  # run.py passes the formula of log y
  text <- capture.output(print(summary(fit)))
  wall <- proc.time()[["elapsed"]] - t0
  json(list(tool = "lme4", rows = nrow(data), import_s = import_s, wall_s = wall, peak_mb = peak_mb(),
            lme4_version = as.character(packageVersion("lme4"))))
} else {
  spec <- read.delim(prior_path, header = FALSE, colClasses = "character", na.strings = NULL)
  priors <- do.call(c, lapply(seq_len(nrow(spec)), function(i)
    prior_string(spec[i, 1], class = spec[i, 2], coef = spec[i, 3], group = spec[i, 4])))
  t0 <- proc.time()[["elapsed"]]
  brms_family <- switch(family, gaussian = gaussian(), bernoulli = bernoulli(), binomial = binomial(),
                        poisson = poisson(), negbinomial = negbinomial(), gamma = Gamma(link = "log"),
                        lognormal = lognormal())
  fit <- brm(as.formula(formula), data = data, prior = priors, family = brms_family, chains = chains,
             iter = 2 * draws,
             warmup = draws, cores = min(chains, parallel::detectCores()), seed = 1, refresh = 0,
             silent = 2)
  text <- capture.output(print(summary(fit)))
  wall <- proc.time()[["elapsed"]] - t0
  elapsed <- rstan::get_elapsed_time(fit$fit)  # per chain: warmup, sample
  sample_s <- max(rowSums(elapsed))  # chains run in parallel
  draws_df <- posterior::as_draws_df(fit)
  keep <- grepl("^(b_|sd_|cor_|sigma|shape|r_)", names(draws_df))  # every parameter, as lmmbayes's worker
  ess <- posterior::summarise_draws(posterior::subset_draws(draws_df, variable = names(draws_df)[keep]),
                                    "ess_bulk")
  worst <- which.min(ess$ess_bulk)
  sampler <- rstan::get_sampler_params(fit$fit, inc_warmup = FALSE)
  divergences <- sum(vapply(sampler, function(s) sum(s[, "divergent__"]), 0))
  json(list(tool = "brms", rows = nrow(data), import_s = import_s, wall_s = wall,
            compile_s = wall - sample_s, sample_s = sample_s, min_ess = min(ess$ess_bulk),
            min_ess_param = ess$variable[worst], divergences = divergences, peak_mb = peak_mb(),
            brms_version = as.character(packageVersion("brms"))))
}
