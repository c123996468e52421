"""``edge-classifier probe``: what this machine has (runtimes, Edge TPUs, cameras) as JSON."""

from __future__ import annotations

import argparse
import json

from edge_classifier.engine.probe import probe

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("probe", help="JSON: runtimes found, Edge TPU devices, cameras")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    print(json.dumps(probe(), indent=2, ensure_ascii=False), flush=True)
    return 0
