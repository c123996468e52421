"""``edge-classifier init``: write a config that runs on this device.

Detects what is there and writes a small TOML file with absolute paths (never one relative
to /etc): the camera (the Pi camera when picamera2 sees one, else the first V4L2 capture
device, else ``kind = "auto"``, which takes the first camera that appears later), the
Edge TPU (an ``_edgetpu`` model is chosen when a Coral is present), the broker and the
model. ``--source``, ``--model`` and ``--mqtt-host`` override what was detected. The file
is checked with the same loader the daemon uses before it replaces anything, so ``init``
never leaves a config the service cannot start with.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_classifier.config.loader import load_config
from edge_classifier.engine.probe import pcie_corals, usb_corals
from edge_classifier.errors import ConfigError
from edge_classifier.source.auto import capture_devices

__all__ = ["Choice", "add_parser", "detect_source", "render", "run"]

DEFAULT_OUTPUT = "/etc/edge-classifier/config.toml"
DEFAULT_MODELS = "/var/lib/edge-classifier/models"
# A live camera's default frame-rate cap: enough for "what is in front of the camera",
# and leaves a Pi's CPU for everything else. Change `fps` for more.
CAMERA_FPS = 5.0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("init", help="detect the camera and Edge TPU and write a config that runs here")
    parser.add_argument("-o", "--output", default=DEFAULT_OUTPUT,
                        help=f"where to write the config, '-' for stdout (default: {DEFAULT_OUTPUT})")
    parser.add_argument("--source", help="the camera instead of detecting one: /dev/videoN, an index, rtsp:// or "
                        "http(s):// URL, a video file, a folder of images, picamera2, auto, or mqtt:TOPIC_FILTER")
    parser.add_argument("--model", help="a .tflite path, or a file name in --models-dir (default: detected there)")
    parser.add_argument("--models-dir", default=DEFAULT_MODELS, help=f"the model store (default: {DEFAULT_MODELS})")
    parser.add_argument("--mqtt-host", default="localhost", help="broker host (default: localhost)")
    parser.add_argument("--mqtt-port", type=int, default=1883, help="broker port (default: 1883)")
    parser.add_argument("--device-id", default="", help="this device's name in topics (default: the hostname)")
    parser.add_argument("--force", action="store_true", help="replace an existing config file")
    parser.set_defaults(run=run)


@dataclass(frozen=True, slots=True)
class Choice:
    """The ``[source]`` chosen and why (the why is printed for the user)."""

    kind: str
    uri: str = ""
    fps: float = 0.0
    note: str = ""
    loop: bool = False


@dataclass(frozen=True, slots=True)
class Detected:
    """What init found on this machine."""

    source: Choice
    edgetpu: list[str] = field(default_factory=list)


def _picamera2_cameras() -> int:
    """How many Pi (CSI) cameras libcamera lists; 0 when picamera2 is absent or fails to import.

    libcamera also lists USB webcams (its UVC handler, ``usb`` in the camera's Id): those
    are left to V4L2/OpenCV, which handles their MJPEG and YUYV modes directly.
    """
    try:
        from picamera2 import Picamera2
    except Exception:  # ImportError, or a numpy ABI mismatch inside its import
        return 0
    try:
        cameras = Picamera2.global_camera_info()
    except Exception:
        return 0
    return sum(1 for camera in cameras if "usb" not in str(camera.get("Id", "")).lower())


def source_from_flag(value: str) -> Choice:
    """``--source`` as the user wrote it."""
    if value in ("auto", "picamera2"):
        return Choice(value, fps=CAMERA_FPS, note="as given")
    if value.startswith("mqtt:"):
        topic = value[len("mqtt:"):]
        if not topic:
            raise ConfigError(["--source: mqtt: needs a topic filter, e.g. mqtt:frigate/+/snapshot"])
        return Choice("mqtt", topic, note="as given")
    if value.isdigit() or value.startswith("/dev/video") or re.match(r"^[a-z][a-z0-9+.-]*://", value):
        return Choice("opencv", value, fps=CAMERA_FPS, note="as given")
    path = Path(value).expanduser()
    if path.is_dir() or any(ch in value for ch in "*?["):
        return Choice("images", str(path.resolve()) if path.is_dir() else value, fps=1.0, loop=True, note="as given")
    if path.is_file():
        return Choice("opencv", str(path.resolve()), note="a video file, as given")
    raise ConfigError([f"--source: {value}: no such file, folder or device (and not a URL or mqtt:TOPIC)"])


def detect_source(picamera2_cameras: Callable[[], int] = _picamera2_cameras,
                  v4l2: Callable[[], list[Any]] = capture_devices) -> Choice:
    """The Pi camera, else the first V4L2 camera, else ``auto`` (waits for one to appear)."""
    if picamera2_cameras() > 0:
        return Choice("picamera2", fps=CAMERA_FPS, note="a camera found by picamera2 (libcamera)")
    cameras = v4l2()
    if cameras:
        first = cameras[0]
        return Choice("opencv", first.path, fps=CAMERA_FPS, note=f"V4L2 camera {first.card or first.driver}")
    return Choice("auto", fps=CAMERA_FPS, note="no camera found: the service waits and uses the first camera "
                  "that appears; or run init again with --source URL, /dev/videoN or mqtt:TOPIC")


def detect_edgetpu(sys_root: Path = Path("/sys"), dev_root: Path = Path("/dev")) -> list[str]:
    """Edge TPUs present (by bus, not by loading the runtime): ``usb 1a6e:089a``, ``pcie apex_0``."""
    found = [f"usb {coral['id']}" for coral in usb_corals(sys_root)]
    found += [f"pcie {coral['name']}" for coral in pcie_corals(sys_root, dev_root)]
    return found


def pick_model(models_dir: Path, wanted: str | None, edgetpu: bool) -> Path:
    """``--model``, else the store's Edge TPU model when a Coral is there, else its first model."""
    if wanted:
        path = Path(wanted).expanduser()
        if not path.is_absolute() and not path.exists():
            path = models_dir / wanted
        if not path.is_file():
            raise ConfigError([f"--model: {wanted}: model file not found (looked in {models_dir} too)"])
        return path.resolve()
    models = sorted(models_dir.glob("*.tflite"))
    if not models:
        raise ConfigError([f"--models-dir: {models_dir}: no .tflite model there; give --model PATH "
                           "or add one with: edge-classifier models pull NAME"])
    tpu = [m for m in models if m.stem.endswith("_edgetpu")]
    cpu = [m for m in models if not m.stem.endswith("_edgetpu")]
    if edgetpu and tpu:
        return tpu[0].resolve()
    return (cpu or tpu)[0].resolve()


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: JSON's escapes are valid TOML
    return repr(value)


def render(choice: Choice, model: Path, models_dir: Path, *, mqtt_host: str, mqtt_port: int,
           device_id: str, edgetpu: list[str]) -> str:
    """The config file's text: only what differs from the defaults, every line commented."""
    tpu = ", ".join(edgetpu) if edgetpu else "none found"
    lines = [
        "# Written by `edge-classifier init`; every key is described in the documented config.toml",
        "# (/opt/edge-classifier/docs, or the repository). Check changes with `edge-classifier check-config`.",
        "",
        "[device]",
        f"id = {_toml(device_id)}    # \"\" = the hostname",
        "",
        "[source]",
        f"# {choice.note}",
        f"kind = {_toml(choice.kind)}",
        f"uri = {_toml(choice.uri)}",
        f"fps = {_toml(choice.fps)}    # frame-rate cap; 0 = as fast as the model goes",
    ]
    if choice.loop:
        lines.append("loop = true")
    lines += [
        "",
        "[model]",
        f"# Edge TPU: {tpu}",
        f"path = {_toml(str(model))}",
        f"dir = {_toml(str(models_dir))}",
        'accelerator = "auto"    # the Edge TPU if it loads, else the CPU',
        "",
        "[mqtt]",
        f"host = {_toml(mqtt_host)}",
        f"port = {mqtt_port}",
        "",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    models_dir = Path(args.models_dir).expanduser().resolve()
    choice = source_from_flag(args.source) if args.source else detect_source()
    edgetpu = detect_edgetpu()
    model = pick_model(models_dir, args.model, bool(edgetpu))
    text = render(choice, model, models_dir, mqtt_host=args.mqtt_host, mqtt_port=args.mqtt_port,
                  device_id=args.device_id, edgetpu=edgetpu)
    if args.output == "-":
        _check(text)
        sys.stdout.write(text)
        return 0
    output = Path(args.output)
    if output.exists() and not args.force:
        raise ConfigError([f"{output}: exists; keeping it (--force replaces it)"])
    output.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed over it: a crash never leaves half a config.
    fd, temp = tempfile.mkstemp(prefix=".config-", suffix=".toml", dir=output.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temp, 0o640)
        load_config(temp)  # the daemon's own validation: raises ConfigError naming the key
        os.replace(temp, output)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    print(f"{output}: source {choice.kind} {choice.uri}".rstrip() + f" ({choice.note})")
    print(f"{output}: model {model}; Edge TPU: {', '.join(edgetpu) or 'none found'}; MQTT {args.mqtt_host}:"
          f"{args.mqtt_port}")
    return 0


def _check(text: str) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".toml", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        load_config(handle.name)
