"""After the sampler: prediction, log-likelihood, comparison, summaries, diagnostics, simulation, plots, reports.

Every module here takes a fit (`FitResult`)
and never imports `lmmbayes.api`, so the layers stay a straight line.
"""
