"""``edge-classifier run``: the daemon."""

from __future__ import annotations

import argparse
import sys

from edge_classifier.cli.common import add_config_option
from edge_classifier.config import load_config
from edge_classifier.daemon.app import Daemon
from edge_classifier.daemon.shutdown import settle_threads
from edge_classifier.errors import UsageError
from edge_classifier.service.logs import configure_logging

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="the daemon: capture, classify, publish until stopped")
    add_config_option(parser)
    parser.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    parser.add_argument("--stdout", action="store_true", help="also print each result as a JSON line")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.max_frames is not None and args.max_frames < 1:
        raise UsageError(f"--max-frames: must be >= 1, not {args.max_frames}")
    config, path = load_config(args.config)
    configure_logging("debug" if args.debug else config.device.log_level)
    daemon = Daemon(config, path, stdout=sys.stdout if args.stdout else None, max_frames=args.max_frames)
    code = daemon.run()
    settle_threads()  # none may be inside OpenCV or LiteRT when the interpreter finalizes
    return code
