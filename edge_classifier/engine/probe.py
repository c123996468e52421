"""What this machine has for classifying: TFLite runtimes, Edge TPUs and cameras.

Everything is read from sysfs and /dev (never opened as a device), except two tries that
say what the daemon would meet: loading the Edge TPU delegate and importing picamera2.

- USB Coral: it enumerates as ``1a6e:089a`` (Global Unichip) until the runtime uploads its
  firmware on first use, then re-enumerates as ``18d1:9302`` (Google). Its ``speed`` tells
  USB 2 (480) from USB 3 (5000): a USB 2 port costs the Coral several times its speed.
- PCIe / M.2 Coral: the ``apex`` driver makes ``/dev/apex_N`` and ``/sys/class/apex/apex_N``.
- Cameras: V4L2 nodes ``/dev/videoN`` named in ``/sys/class/video4linux/videoN/name``
  (a Pi's ISP and codec show up here too), and whether picamera2 (libcamera) imports.

The roots are parameters so tests can point them at a fake tree.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from edge_classifier.engine.edgetpu import EDGETPU_LIBRARY, AcceleratorUnavailable, load_edgetpu_delegate
from edge_classifier.engine.libedgetpu import installed_build
from edge_classifier.engine.runtime import RUNTIMES, load_runtime
from edge_classifier.errors import RuntimeMissingError

__all__ = ["CORAL_USB_IDS", "probe"]

# (vendor, product) -> state of a USB Coral.
CORAL_USB_IDS = {
    ("1a6e", "089a"): "firmware not loaded (Global Unichip; the runtime uploads it on first use)",
    ("18d1", "9302"): "ready (Google; firmware loaded)",
}

_NUMBER = re.compile(r"(\d+)")


def probe(
    sys_root: str | Path = "/sys",
    dev_root: str | Path = "/dev",
    *,
    try_delegate: Callable[[], dict[str, Any]] | None = None,
    try_import: Callable[[str], Any] = importlib.import_module,
    build_paths: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``probe`` command's JSON: ``runtimes``, ``edgetpu`` and ``cameras``.

    ``build_paths`` (tests): ``dpkg_status`` and ``library_dirs`` for :func:`installed_build`.
    """
    sys_root, dev_root = Path(sys_root), Path(dev_root)
    found = runtimes(try_import)
    in_use = next((r for r in found if r["available"]), None)
    return {
        "runtimes": found,
        "edgetpu": {
            "usb": usb_corals(sys_root),
            "pcie": pcie_corals(sys_root, dev_root),
            "library": (try_delegate or edgetpu_library)(),
            # Which build, and whether it suits the runtime in use (libedgetpu.py).
            "build": installed_build(in_use, **(build_paths or {})),
        },
        "cameras": {"v4l2": v4l2_cameras(sys_root, dev_root), "picamera2": _importable("picamera2", try_import)},
    }


def runtimes(try_import: Callable[[str], Any] = importlib.import_module) -> list[dict[str, Any]]:
    """Each TFLite runtime the engine knows, in order of preference, and whether it imports."""
    found = []
    for distribution, module in RUNTIMES:
        entry: dict[str, Any] = {"name": distribution, "module": module, **_importable(module, try_import)}
        if entry["available"]:
            entry["version"] = _distribution_version(distribution)
        found.append(entry)
    return found


def usb_corals(sys_root: Path) -> list[dict[str, Any]]:
    """USB devices with a Coral's vendor:product id, from ``<sys>/bus/usb/devices/*``."""
    corals = []
    for device in _natural(sys_root.glob("bus/usb/devices/*")):
        ids = (_read(device / "idVendor").lower(), _read(device / "idProduct").lower())
        if ids not in CORAL_USB_IDS:
            continue
        speed = _read(device / "speed")
        corals.append({
            "id": ":".join(ids),
            "state": CORAL_USB_IDS[ids],
            "sysfs": str(device),
            "bus": _int_or_none(_read(device / "busnum")),
            "address": _int_or_none(_read(device / "devnum")),
            "speed_mbps": _int_or_none(speed),
            "usb3": speed.isdigit() and int(speed) >= 5000,
        })
    return corals


def pcie_corals(sys_root: Path, dev_root: Path) -> list[dict[str, Any]]:
    """PCIe/M.2 Corals: ``<dev>/apex_N`` nodes and ``<sys>/class/apex/apex_N`` entries, by name."""
    names = {path.name for path in dev_root.glob("apex_*")} | {path.name for path in sys_root.glob("class/apex/apex_*")}
    return [
        {
            "name": name,
            "device": str(dev_root / name) if (dev_root / name).exists() else None,
            "sysfs": str(sys_root / "class" / "apex" / name) if (sys_root / "class" / "apex" / name).exists() else None,
        }
        for name in _natural_names(names)
    ]


def edgetpu_library() -> dict[str, Any]:
    """Whether the Edge TPU delegate loads, and why not when it does not."""
    entry: dict[str, Any] = {"name": EDGETPU_LIBRARY}
    try:
        runtime = load_runtime()
    except RuntimeMissingError as exc:
        return {**entry, "loadable": False, "reason": str(exc)}
    try:
        delegate = load_edgetpu_delegate(runtime)
    except AcceleratorUnavailable as exc:
        return {**entry, "loadable": False, "reason": str(exc)}
    del delegate  # loaded means a device answered; let it go at once
    return {**entry, "loadable": True, "reason": None}


def v4l2_cameras(sys_root: Path, dev_root: Path) -> list[dict[str, Any]]:
    """``<dev>/videoN`` nodes with their driver-given names."""
    return [
        {"device": str(node), "name": _read(sys_root / "class" / "video4linux" / node.name / "name") or None}
        for node in _natural(dev_root.glob("video*"))
        if node.name[len("video"):].isdigit()
    ]


def _importable(module: str, try_import: Callable[[str], Any]) -> dict[str, Any]:
    try:
        try_import(module)
    except Exception as exc:  # ImportError, or a module that breaks while importing (numpy ABI)
        return {"available": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"available": True}


def _distribution_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""


def _int_or_none(text: str) -> int | None:
    try:
        return int(float(text))
    except ValueError:
        return None


def _natural_key(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in _NUMBER.split(name)]


def _natural(paths: Any) -> list[Path]:
    return sorted(paths, key=lambda path: _natural_key(path.name))


def _natural_names(names: set[str]) -> list[str]:
    return sorted(names, key=_natural_key)
