"""``edge-classifier learn add|forget|list|export|import``: teach the device new classes.

Every action works on the head file (``learn.head``) while a daemon runs: changes hold the
writers' lock and replace the file atomically, and the daemon reloads it. ``add`` needs
the extractor model (``learn.extractor``); the other actions only read and write the file.
An unreadable image fails the whole ``add`` (exit 65, naming the file; 66 when missing),
so a class never learns half a batch; forgetting a label that is not there is exit 65.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edge_classifier.cli.classify import expand_images, read_image
from edge_classifier.cli.common import add_config_option, config_from_args
from edge_classifier.config.schema import LearnConfig
from edge_classifier.errors import EdgeClassifierError, LearnError, UsageError
from edge_classifier.learn import (
    ExtractorId,
    LearnedHead,
    check_label,
    export_head,
    import_head,
    load_or_empty,
    locked,
    open_embedder,
    read_head,
    save_head,
)
from edge_classifier.preprocess.decode import ImageLimits

__all__ = ["add_parser", "run_add", "run_export", "run_forget", "run_import", "run_list"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("learn", help="teach new classes from a few example images")
    actions = parser.add_subparsers(dest="learn_command", required=True, metavar="ACTION")

    add = actions.add_parser("add", help="add example images to a class (created if new)")
    add.add_argument("label", metavar="LABEL")
    add.add_argument("images", nargs="+", metavar="IMAGE", help="image files, directories or globs")
    add.add_argument("--threshold", type=float, metavar="T", help="this class's own threshold (0..1)")
    add_config_option(add)
    add.set_defaults(run=run_add)

    forget = actions.add_parser("forget", help="remove a learned class")
    forget.add_argument("label", metavar="LABEL")
    add_config_option(forget)
    forget.set_defaults(run=run_forget)

    listing = actions.add_parser("list", help="the learned classes as JSON")
    add_config_option(listing)
    listing.set_defaults(run=run_list)

    export = actions.add_parser("export", help="copy the learned classes to a file")
    export.add_argument("file", metavar="FILE")
    add_config_option(export)
    export.set_defaults(run=run_export)

    imported = actions.add_parser("import", help="merge the classes of an exported file into this device's")
    imported.add_argument("file", metavar="FILE")
    imported.add_argument("--replace", action="store_true", help="replace all learned classes instead of merging")
    add_config_option(imported)
    imported.set_defaults(run=run_import)


def run_add(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    learn = config.learn
    limits = ImageLimits(config.source.max_pixels, config.source.max_bytes)
    label = check_label(args.label)
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise UsageError(f"--threshold: must be between 0 and 1, not {args.threshold}")
    paths = []
    for item in expand_images(args.images):
        if isinstance(item, EdgeClassifierError):
            raise item
        paths.append(item)
    with open_embedder(learn, config.model) as embedder:
        extractor = ExtractorId.of(embedder.info, embedder.size)
        # One image decoded at a time; all embedded before anything is learned.
        embeddings = [embedder.embed(read_image(path, limits)) for path in paths]
    head_path = Path(learn.head)
    with locked(head_path):
        head = _load(head_path, extractor, learn).with_examples(label, embeddings, args.threshold)
        save_head(head_path, head, extractor)
    _print({"label": label, "added": len(embeddings), "count": head.entries[label].count,
            "classes": dict(head.classes()), "head": str(head_path)})
    return 0


def run_forget(args: argparse.Namespace) -> int:
    learn = _learn_config(args)
    head_path = Path(learn.head)
    with locked(head_path):
        head, extractor = read_head(head_path, threshold=learn.threshold, max_examples=learn.max_examples)
        try:
            head = head.without(args.label)
        except LearnError as exc:
            raise LearnError(f"{head_path}: {exc}") from exc
        save_head(head_path, head, extractor)
    _print({"forgot": args.label, "classes": dict(head.classes()), "head": str(head_path)})
    return 0


def run_list(args: argparse.Namespace) -> int:
    learn = _learn_config(args)
    head_path = Path(learn.head)
    if not head_path.exists():
        _print({"head": str(head_path), "extractor": None, "threshold": learn.threshold, "classes": []})
        return 0
    head, extractor = read_head(head_path, threshold=learn.threshold, max_examples=learn.max_examples)
    classes = [{"label": label, "count": count, "threshold": head.threshold_of(label)}
               for label, count in head.classes()]
    _print({"head": str(head_path), "extractor": {"name": extractor.name, "sha256": extractor.sha256},
            "threshold": learn.threshold, "classes": classes})
    return 0


def run_export(args: argparse.Namespace) -> int:
    learn = _learn_config(args)
    head = export_head(Path(learn.head), Path(args.file))
    _print({"exported": args.file, "classes": dict(head.classes())})
    return 0


def run_import(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    learn = config.learn
    with open_embedder(learn, config.model) as embedder:
        extractor = ExtractorId.of(embedder.info, embedder.size)
    head = import_head(Path(args.file), Path(learn.head), extractor, replace=args.replace,
                       threshold=learn.threshold, max_examples=learn.max_examples)
    _print({"imported": args.file, "replace": args.replace, "classes": dict(head.classes())})
    return 0


def _learn_config(args: argparse.Namespace) -> LearnConfig:
    return config_from_args(args).learn


def _load(path: Path, extractor: ExtractorId, learn: LearnConfig) -> LearnedHead:
    return load_or_empty(path, extractor, threshold=learn.threshold, max_examples=learn.max_examples)


def _print(payload: object) -> None:
    print(json.dumps(payload, ensure_ascii=False), flush=True)
