"""The results layer: the posterior DataTree with brms names, the frozen fit result and its file format."""
