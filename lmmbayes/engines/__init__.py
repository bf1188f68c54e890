"""Model engines: each turns a Design and resolved priors into a PyMC model."""
