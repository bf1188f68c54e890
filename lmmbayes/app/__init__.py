"""The command line (`.cli`) and the tutorial demo (`.demo`)."""
