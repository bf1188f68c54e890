"""``python -m lmmbayes`` runs the command line."""

from .app.cli import entry

entry()
