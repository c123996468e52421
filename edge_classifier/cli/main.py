"""``edge-classifier``: parse the command line, run a command, map errors to exit codes."""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Callable, Sequence

from edge_classifier import __version__
from edge_classifier.errors import EdgeClassifierError
from edge_classifier.service.logs import configure_logging

__all__ = ["build_parser", "main"]

Command = Callable[[argparse.Namespace], int]

# Each command module contributes `add_parser(subparsers)` and `run(args) -> exit code`.
# Only the command given is imported: the others' imports (the model store, signing,
# learning, benchmarks) would only slow the daemon's start-up (READY within 10 s on a Pi
# 3 or under emulation).
COMMANDS = {"run": "run", "classify": "classify", "check-config": "check_config", "models": "models",
            "probe": "probe", "bench": "bench", "learn": "learn", "init": "init"}


def _command(argv: Sequence[str]) -> str | None:
    """The command named in ``argv``; None for none, an unknown one or a top-level --help."""
    for arg in argv:
        if arg in ("-h", "--help"):
            return None
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole parser, or for ``argv`` naming a command, one where only that command is
    complete (the others are names, never reached by that parse)."""
    chosen = _command(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="edge-classifier",
        description="Classify camera frames with TFLite models (CPU or Coral Edge TPU) and publish over MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="debug logging, and tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        if chosen in (None, name):
            importlib.import_module(f"edge_classifier.cli.{module}").add_parser(subparsers)
        else:
            subparsers.add_parser(name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    configure_logging("debug" if args.debug else "warning")
    run: Command = args.run
    try:
        return run(args)
    except EdgeClassifierError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"edge-classifier: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
