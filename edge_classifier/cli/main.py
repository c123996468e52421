"""``edge-classifier``: parse the command line, run a command, map errors to exit codes."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence

from edge_classifier import __version__
from edge_classifier.cli import bench, check_config, classify, init, learn, models, probe, run
from edge_classifier.errors import EdgeClassifierError
from edge_classifier.service.logs import configure_logging

__all__ = ["build_parser", "main"]

Command = Callable[[argparse.Namespace], int]

# Each command module contributes `add_parser(subparsers)` and `run(args) -> exit code`.
COMMANDS = (run, classify, check_config, models, probe, bench, learn, init)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-classifier",
        description="Classify camera frames with TFLite models (CPU or Coral Edge TPU) and publish over MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="debug logging, and tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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
