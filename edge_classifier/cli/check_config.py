"""``edge-classifier check-config``: validate the configuration, report every problem."""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import sys
from pathlib import Path

from edge_classifier.cli.common import add_config_option
from edge_classifier.config import Config, load_config
from edge_classifier.errors import ConfigError

__all__ = ["add_parser", "file_problems", "run", "source_warnings"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("check-config", help="validate the configuration and list every problem")
    add_config_option(parser)
    parser.set_defaults(run=run)


def file_problems(config: Config) -> list[str]:
    """Problems with the files the configuration names (beyond the file's own syntax)."""
    problems = []
    model = Path(config.model.path)
    if not model.is_file():
        problems.append(f"model.path: {model}: model file not found")
    if not Path(config.model.dir).is_dir():
        problems.append(f"model.dir: {config.model.dir}: directory not found")
    if config.model.labels and not Path(config.model.labels).is_file():
        problems.append(f"model.labels: {config.model.labels}: labels file not found")
    tls = config.mqtt.tls
    for key, value in (("ca_file", tls.ca_file), ("cert_file", tls.cert_file), ("key_file", tls.key_file)):
        if value and not Path(value).is_file():
            problems.append(f"mqtt.tls.{key}: {value}: file not found")
    if config.mqtt.password_file and not Path(config.mqtt.password_file).is_file():
        problems.append(f"mqtt.password_file: {config.mqtt.password_file}: file not found")
    if config.web.enabled:
        problems.extend(_web_problems(config))
    return problems


def _web_problems(config: Config) -> list[str]:
    """As the daemon will check at start: not loopback needs a password. Run outside systemd,
    the file the unit hands over as the credential counts (it may be readable by root only)."""
    from edge_classifier.web.auth import UNIT_CREDENTIAL, open_gate

    environ = os.environ
    if not environ.get("CREDENTIALS_DIRECTORY") and not config.web.password_file and not config.web.password:
        try:
            if UNIT_CREDENTIAL.stat().st_size > 1:  # more than the unit's "\n" fallback
                return []
        except OSError:
            pass
    try:
        open_gate(config.web, environ)
    except ConfigError as exc:
        return list(exc.problems)
    return []


def source_warnings(config: Config) -> list[str]:
    """The source as it is now: not an error (the daemon waits for a camera to appear), but
    worth saying before the service starts and sits there waiting."""
    source = config.source
    kind, uri = source.kind, source.uri
    if kind == "images":
        if not glob.glob(uri) and not Path(uri).is_dir():
            return [f"source.uri: {uri}: no such folder or file (the service waits for images to appear)"]
        folder = Path(uri)
        if folder.is_dir() and not any(p.is_file() for p in folder.iterdir()):
            return [f"source.uri: {uri}: the folder is empty"]
    elif kind == "opencv":
        device = f"/dev/video{uri}" if uri.isdigit() else uri
        if device.startswith("/dev/") and not Path(device).exists():
            return [f"source.uri: {uri}: no such device {device} (the service waits for it; "
                    f"`edge-classifier probe` lists the cameras)"]
        if "://" not in uri and not uri.isdigit() and not device.startswith("/dev/") and not Path(uri).is_file():
            return [f"source.uri: {uri}: no such video file"]
    elif kind == "picamera2":
        if importlib.util.find_spec("picamera2") is None:
            return ["source.kind: picamera2 is not installed here (apt install python3-picamera2, then "
                    "systemd/install.sh --extras pi)"]
    elif kind == "auto":
        from edge_classifier.source.auto import video_devices

        if importlib.util.find_spec("picamera2") is None and not video_devices():
            return ["source.kind: auto: no camera now (no picamera2, no /dev/video*): "
                    "the service waits for one to appear"]
    return []


def run(args: argparse.Namespace) -> int:
    try:
        config, path = load_config(args.config)
    except ConfigError as exc:
        _report(exc.source or "configuration", exc.problems)
        return exc.exit_code
    where = str(path) if path else "built-in defaults (no config file found)"
    problems = file_problems(config)
    if problems:
        _report(where, problems)
        return ConfigError.exit_code
    warnings = source_warnings(config)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{where}: ok" + (f" ({len(warnings)} warning{'s' if len(warnings) != 1 else ''})" if warnings else ""))
    return 0


def _report(where: str, problems: tuple[str, ...] | list[str]) -> None:
    count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
    print(f"{where}: {count}", file=sys.stderr)
    for problem in problems:
        print(problem, file=sys.stderr)
