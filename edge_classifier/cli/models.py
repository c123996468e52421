"""``edge-classifier models list|validate|pull|keygen|sign|verify``: the model store from the
command line (signatures: ``store.signing``).

The active model shown by ``list`` is the one the daemon remembered in the store's
``state.json`` (see ``store.state``), else the configuration's ``model.path``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge_classifier.cli.common import add_config_option, config_from_args
from edge_classifier.engine.model import logical_name
from edge_classifier.errors import InputDataError, InputMissingError, UsageError
from edge_classifier.store import (
    CATALOG_FILE,
    DEFAULT_MAX_BYTES,
    ModelEntry,
    StateFile,
    ValidationReport,
    list_models,
    load_catalog,
    pull,
    sidecar_labels,
    state_path,
    validate_model,
)
from edge_classifier.store.signing import generate_key, parse_public_key, sign_model, verify_model

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="the model store: list, validate and pull models")
    actions = parser.add_subparsers(dest="models_command", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="the models in the store (model.dir) and which is active")
    add_config_option(listing)
    listing.add_argument("--json", action="store_true", help="one JSON object per model")
    listing.set_defaults(run=run_list)

    check = actions.add_parser("validate", help="check that a model file would load and classify")
    check.add_argument("path", metavar="PATH", help="the model file")
    check.add_argument("--labels", metavar="L", help="a labels file to check against the model's outputs")
    check.add_argument("--sha256", metavar="S", help="the expected sha256 of the file")
    check.add_argument("--max-bytes", type=int, metavar="N", help="refuse files larger than this")
    check.add_argument("--in-process", action="store_true",
                       help="load in this process instead of a child (faster; for trusted files)")
    check.add_argument("--json", action="store_true", help="the full report as JSON on stdout")
    check.set_defaults(run=run_validate)

    fetch = actions.add_parser("pull", help="download a catalog model into the store, verifying its sha256")
    fetch.add_argument("name", metavar="NAME", help="the model's name in the catalog")
    add_config_option(fetch)
    fetch.add_argument("--mirror", metavar="DIR_OR_URL", help="fetch from this folder or base URL instead")
    fetch.add_argument("--catalog", metavar="FILE", help=f"the catalog (default: {CATALOG_FILE} in model.dir)")
    fetch.add_argument("--force", action="store_true", help="replace a stored file whose sha256 differs")
    fetch.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES, metavar="N",
                       help=f"refuse downloads larger than this (default {DEFAULT_MAX_BYTES})")
    fetch.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS", help="network timeout")
    fetch.set_defaults(run=run_pull)

    keygen = actions.add_parser("keygen", help="make an ed25519 signing key; prints the public key to pin")
    keygen.add_argument("key", metavar="KEY", help="where to write the private key (PEM, 0600; never overwritten)")
    keygen.set_defaults(run=run_keygen)

    sign = actions.add_parser("sign", help="sign a model: writes MODEL.sig beside it")
    sign.add_argument("path", metavar="MODEL", help="the model file")
    sign.add_argument("--key", required=True, metavar="KEY", help="the private key (from models keygen)")
    sign.set_defaults(run=run_sign)

    verify = actions.add_parser("verify", help="check a model's signature (MODEL.sig) against pinned keys")
    verify.add_argument("path", metavar="MODEL", help="the model file")
    verify.add_argument("--key", action="append", metavar="PUBLIC", dest="keys",
                        help="a public key ed25519:... (repeatable; default: model.trusted_keys)")
    add_config_option(verify)
    verify.set_defaults(run=run_verify)


def run(args: argparse.Namespace) -> int:
    result: int = args.run(args)
    return result


def run_list(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    store = Path(config.model.dir)
    remembered = StateFile(state_path(store)).active_model()
    active = remembered[0] if remembered else Path(config.model.path)
    entries = list_models(store, active)
    if args.json:
        for entry in entries:
            print(json.dumps(entry.as_dict()))
    elif not entries:
        print(f"{store}: no models")
    else:
        _print_table(entries)
    return 0


def _print_table(entries: list[ModelEntry]) -> None:
    rows = [("", "NAME", "SIZE", "INPUT", "CLASSES", "LABELS", "RUNS ON", "TWIN", "SHA256", "ERROR")]
    for e in entries:
        shape = "x".join(str(d) for d in e.input_shape) + f" {e.input_dtype}" if e.input_shape else "-"
        rows.append(("*" if e.active else "", e.name, _size(e.size), shape,
                     str(e.classes) if e.classes is not None else "-", e.labels, e.accelerator,
                     "yes" if e.twin else "no", e.sha256[:12] or "-", e.error or ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])


def _size(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"


def run_validate(args: argparse.Namespace) -> int:
    if args.max_bytes is not None and args.max_bytes < 1:
        raise UsageError(f"--max-bytes: must be >= 1, not {args.max_bytes}")
    report = validate_model(args.path, labels=args.labels, max_bytes=args.max_bytes,
                            expected_sha256=args.sha256, in_process=args.in_process)
    if args.json:
        print(json.dumps(report.as_dict()))
    for problem in report.problems:
        print(f"edge-classifier: {problem}", file=sys.stderr)
    if report.missing:
        return InputMissingError.exit_code
    if not report.ok:
        return InputDataError.exit_code
    if not args.json:
        print(_summary(report))
        for note in report.notes:
            print(f"  note: {note}")
    return 0


def _summary(report: ValidationReport) -> str:
    shape = "x".join(str(d) for d in report.input_shape or ())
    smoke = f", one inference {report.smoke_ms:.1f} ms" if report.smoke_ms is not None else ""
    return (f"{report.path}: ok ({'edgetpu' if report.edgetpu else 'cpu'}, input {shape} {report.input_dtype}, "
            f"{report.classes} classes, labels {report.labels}{smoke}; sha256 {report.sha256})")


def run_keygen(args: argparse.Namespace) -> int:
    public = generate_key(Path(args.key))
    print(public)
    print(f"private key written to {args.key}; pin the public key in model.trusted_keys", file=sys.stderr)
    return 0


def run_sign(args: argparse.Namespace) -> int:
    model = Path(args.path)
    if not model.is_file():
        raise InputMissingError(f"{model}: model file not found")
    print(sign_model(model, Path(args.key)))
    return 0


def run_verify(args: argparse.Namespace) -> int:
    model = Path(args.path)
    if not model.is_file():
        raise InputMissingError(f"{model}: model file not found")
    keys = tuple(args.keys or config_from_args(args).model.trusted_keys)
    if not keys:
        raise UsageError("no public keys: give --key ed25519:... or set model.trusted_keys")
    try:
        for key in keys:
            parse_public_key(key)
    except ValueError as exc:
        raise UsageError(f"--key: {exc}") from None
    problem = verify_model(model, keys)
    if problem is not None:
        print(f"edge-classifier: {problem}", file=sys.stderr)
        return InputDataError.exit_code
    print(f"{model}: signed by a trusted key")
    return 0


def run_pull(args: argparse.Namespace) -> int:
    if args.max_bytes < 1:
        raise UsageError(f"--max-bytes: must be >= 1, not {args.max_bytes}")
    config = config_from_args(args)
    store = Path(config.model.dir)
    if not store.is_dir():
        raise InputMissingError(f"model.dir: {store}: directory not found")
    catalog = load_catalog(args.catalog or store / CATALOG_FILE)
    options = {"catalog": catalog, "mirror": args.mirror, "max_bytes": args.max_bytes, "timeout": args.timeout,
               "force": args.force, "trusted": config.model.trusted_keys}
    path = pull(args.name, store, **options)
    pulled = [path]
    twin = path.with_name(logical_name(path) + path.suffix)
    twin_entry = next((e for e in catalog.values() if e.file == twin.name), None)
    if twin != path and twin_entry is not None:  # an _edgetpu model: its CPU twin stands in without a TPU
        pulled.append(pull(twin_entry.name, store, **options))
    for each in pulled:
        labels = sidecar_labels(each)
        print(f"{each}" + (f" (labels {labels.name})" if labels else ""))
    return 0
