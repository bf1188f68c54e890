"""Engines: each turns a Design and its parameter plan into posterior draws on the user's scale.

- `.joint`: every random effect sampled by NUTS (any family, any structure);
- `.collapsed`: random effects integrated out exactly (Gaussian), then drawn exactly;
- `.prior`: independent draws from the prior (``sample_prior="only"``).

`.plan` owns the standardisation every engine samples on, and
`.sampling` is the one place that runs a sampler.
"""

ENGINES = ("joint", "collapsed")
