"""The command line: the only place where errors become messages and exit codes."""

from edge_classifier.cli.main import main

__all__ = ["main"]
