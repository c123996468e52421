"""``edge-classifier classify IMAGE...``: one JSON line per image on stdout."""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edge_classifier.classifier import Classifier, resolve_labels
from edge_classifier.cli.common import add_config_option, config_from_args
from edge_classifier.config import Config
from edge_classifier.engine import Engine
from edge_classifier.errors import EdgeClassifierError, ImageError, InputMissingError, UsageError
from edge_classifier.preprocess.decode import ImageLimits, ImageRejected, decode_image
from edge_classifier.store.store import sidecar_labels

__all__ = ["IMAGE_SUFFIXES", "add_parser", "expand_images", "open_classifier", "read_image", "run"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pnm")
_GLOB_CHARS = set("*?[")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("classify", help="classify image files, one JSON line per image")
    add_config_option(parser)
    parser.add_argument("--model", metavar="M", help="model file (default: model.path from the config)")
    parser.add_argument("--labels", metavar="L", help="labels file (default: model.labels, else embedded labels)")
    parser.add_argument("--top-k", type=int, metavar="K", help="at most K labels per image")
    parser.add_argument("--threshold", type=float, metavar="T", help="only labels scoring at least T (0..1)")
    parser.add_argument("--accelerator", choices=("auto", "cpu", "edgetpu"), help="override model.accelerator")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files, directories or globs")
    parser.set_defaults(run=run)


def open_classifier(config: Config) -> Classifier:
    """A classifier for the configured model, with one interpreter of ``model.threads`` threads."""
    model = config.model
    engine = Engine.open(model.path, accelerator=model.accelerator, device=model.device, threads=model.threads)
    try:
        # As in the daemon: a labels file, else a sidecar beside the model, else embedded labels.
        labels, origin = resolve_labels(engine.info, model.labels or sidecar_labels(engine.info.requested))
        return Classifier.configured(engine, labels, origin, model, config.classify)
    except BaseException:
        engine.close()
        raise


def expand_images(arguments: list[str]) -> Iterator[str | EdgeClassifierError]:
    """Image paths (as given) from files, directories and globs, in order; an error for each that fails."""
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found = sorted(p.name for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                yield InputMissingError(f"{argument}: no images in this directory")
            yield from (os.path.join(argument, name) for name in found)
        elif path.exists():
            yield argument
        elif _GLOB_CHARS & set(argument):
            matches = sorted(glob.glob(argument))
            if not matches:
                yield InputMissingError(f"{argument}: no files match")
            yield from matches
        else:
            yield InputMissingError(f"{argument}: image file not found")


def read_image(path: str, limits: ImageLimits | None = None) -> np.ndarray:
    """A BGR uint8 image from a file, within ``limits`` (see preprocess.decode); ImageError
    naming the file when it cannot be decoded or is over the limits."""
    limits = limits or ImageLimits()
    try:
        size = os.stat(path).st_size
        if size > limits.max_bytes:
            raise ImageRejected(f"{path}: {size} bytes, over the limit of {limits.max_bytes} bytes "
                                "(source.max_bytes)", "too many bytes")
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError as exc:
        raise InputMissingError(f"{path}: image file not found") from exc
    except OSError as exc:
        raise ImageError(f"{path}: cannot read image: {exc.strerror or exc}") from exc
    if not data.size:
        raise ImageError(f"{path}: not a readable image (empty, 0 bytes)")
    return decode_image(data, limits, what=path)


def run(args: argparse.Namespace) -> int:
    config = _with_overrides(config_from_args(args), args)
    status = 0
    limits = ImageLimits(config.source.max_pixels, config.source.max_bytes)
    with open_classifier(config) as classifier:
        for item in expand_images(args.images):
            try:
                if isinstance(item, EdgeClassifierError):
                    raise item
                result = classifier.classify(read_image(item, limits))
            except (ImageError, InputMissingError) as exc:
                print(f"edge-classifier: {exc}", file=sys.stderr, flush=True)
                status = status or exc.exit_code
                continue
            line = {"image": item, **result.as_payload()}
            print(json.dumps(line, ensure_ascii=False), flush=True)
    return status


def _with_overrides(config: Config, args: argparse.Namespace) -> Config:
    if args.top_k is not None and args.top_k < 1:
        raise UsageError(f"--top-k: must be >= 1, not {args.top_k}")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise UsageError(f"--threshold: must be between 0 and 1, not {args.threshold}")
    model = config.model
    if args.model:
        given = Path(args.model)
        if not given.exists() and os.sep not in args.model:
            given = Path(model.dir) / args.model  # a bare name: a file in the model store
        model = dataclasses.replace(model, path=str(given))
    if args.labels:
        model = dataclasses.replace(model, labels=args.labels)
    if args.accelerator:
        model = dataclasses.replace(model, accelerator=args.accelerator)
    classify = config.classify
    if args.top_k is not None:
        classify = dataclasses.replace(classify, top_k=args.top_k)
    if args.threshold is not None:
        classify = dataclasses.replace(classify, threshold=args.threshold)
    return dataclasses.replace(config, model=model, classify=classify)
