"""Which libedgetpu build is installed, and whether it is one that works with the runtime.

The Edge TPU delegate is a shared library built against one TensorFlow Lite version.
Google's own builds (apt package ``libedgetpu1-std`` version ``16.0`` from the Coral
repository, unchanged since 2021) target TF Lite ~2.5 and crash inside newer runtimes
(after TF 2.11). Community rebuilds carry the TensorFlow version in the package version,
e.g. ``16.0tf2.19.1-1``; ``install.sh --coral`` installs :data:`PINNED_VERSION`.

Read from the file system only (dpkg's status file and the library folders): nothing is
loaded. Whether the delegate loads is :func:`edge_classifier.engine.probe.edgetpu_library`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["LIBRARY_DIRS", "PINNED_VERSION", "installed_build"]

PINNED_VERSION = "16.0tf2.19.1-1"
"""The build install.sh --coral installs (keep in step with LIBEDGETPU_VERSION there)."""

LIBRARY_DIRS = ("/usr/lib/aarch64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/usr/lib/arm-linux-gnueabihf",
                "/usr/local/lib", "/usr/lib", "/lib")
_PACKAGES = ("libedgetpu1-std", "libedgetpu1-max")
_TF = re.compile(r"tf(\d+\.\d+(?:\.\d+)?)")


def _dpkg_versions(status: Path) -> dict[str, str]:
    """Installed package -> version, for the libedgetpu packages in dpkg's status file."""
    try:
        text = status.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    found = {}
    for stanza in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line[0].isspace())
        if fields.get("Package") in _PACKAGES and fields.get("Status", "").endswith(" installed"):
            found[fields["Package"]] = fields.get("Version", "")
    return found


def _library(dirs: Iterable[str]) -> Path | None:
    for folder in dirs:
        candidate = Path(folder) / "libedgetpu.so.1"
        if candidate.exists():
            return candidate
    return None


def installed_build(runtime: dict[str, Any] | None, *, dpkg_status: str | Path = "/var/lib/dpkg/status",
                    library_dirs: Iterable[str] = LIBRARY_DIRS) -> dict[str, Any]:
    """``{path, package, version, built_for_tf, runtime, matches_runtime, note}``.

    ``runtime`` is the probe's entry for the runtime in use (``name``, ``version``), or None.
    ``matches_runtime``: True for the pinned build, or a build for exactly the TF version of
    tflite-runtime; False for Google's TF ~2.5 build; None when nobody checked the pairing.
    """
    library = _library(library_dirs)
    packages = _dpkg_versions(Path(dpkg_status))
    package, version = next(iter(sorted(packages.items())), (None, None))
    entry: dict[str, Any] = {
        "path": str(library) if library else None,
        "resolved": os.path.realpath(library) if library else None,
        "package": package,
        "version": version,
        "built_for_tf": None,
        "runtime": f"{runtime['name']} {runtime.get('version')}" if runtime else None,
        "matches_runtime": None,
        "note": "",
    }
    if library is None and version is None:
        entry["note"] = "libedgetpu is not installed (systemd/install.sh --coral)"
        return entry
    if version is None:
        entry["note"] = "libedgetpu.so.1 is not from a dpkg package: its build cannot be told"
        return entry
    match = _TF.search(version)
    if match is None:
        entry["matches_runtime"] = False
        entry["note"] = (f"{package} {version} is Google's build for TF Lite ~2.5, which crashes in runtimes after "
                         f"TF 2.11; install {PINNED_VERSION} (systemd/install.sh --coral)")
        return entry
    tf = entry["built_for_tf"] = match.group(1)
    if version == PINNED_VERSION:
        entry["matches_runtime"] = True
        entry["note"] = "the build install.sh --coral pins for this runtime"
    elif runtime and runtime["name"] == "tflite-runtime" and runtime.get("version"):
        same = runtime["version"].split(".")[:2] == tf.split(".")[:2]
        entry["matches_runtime"] = same
        entry["note"] = f"built for TF {tf}; tflite-runtime is {runtime['version']}" + ("" if same else ": mismatch")
    else:
        entry["note"] = f"built for TF {tf}; not the pinned {PINNED_VERSION}: the pairing is unchecked"
    return entry
