"""Helpers shared by the commands: config loading with command-line overrides."""

from __future__ import annotations

import argparse

from edge_classifier.config import Config, load_config

__all__ = ["add_config_option", "config_from_args"]


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config", metavar="CONFIG",
        help="config file (default: $EDGE_CLASSIFIER_CONFIG, ./config.toml, /etc/edge-classifier/config.toml)",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    config, _ = load_config(args.config)
    return config
