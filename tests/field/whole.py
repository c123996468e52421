"""The whole field rig, as ``scripts/test`` runs it after pytest: every guest, one at a time.

    python3 tests/field/whole.py [--cache DIR] [--keep DIR]

Bookworm amd64 and Trixie amd64 (the full service checks), then Trixie arm64 (the aarch64
wheels, ``classify`` and a short ``run``). One VM at a time: the host may have 2 cores.

Exit status: 0 every check of every guest passed; 1 something failed (a check, a VM that
did not finish in time, an image or wheel that could not be built); 77 the rig cannot run
here, with the reason on one line: not root, no qemu and none installable, or a cold cache
(an image or the wheels not built yet) and Debian's archive or PyPI unreachable. 77 is
never a pass: ``scripts/test`` says so plainly.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import rig

# (suite, arch, --timeout): generous, several times the measured run (README of the guide).
GUESTS = (("bookworm", "amd64", 1200.0), ("trixie", "amd64", 1200.0), ("trixie", "arm64", 1200.0))
REGISTRIES = (("deb.debian.org", 80), ("pypi.org", 443))
CANNOT_RUN = 77


def cold(cache: Path) -> list[str]:
    """What is not built yet in ``cache`` (each needs the network to build)."""
    missing = []
    for suite, arch, _ in GUESTS:
        image = cache / f"{suite}-{arch}"
        if not (image / "built").exists():
            missing.append(f"image {suite}-{arch}")
        elif not (rig.wheel_cache(image, suite, arch, cache) / "complete").exists():
            missing.append(f"wheels {suite}-{arch}")
    return missing


def unreachable() -> list[str]:
    down = []
    for host, port in REGISTRIES:
        try:
            socket.create_connection((host, port), timeout=10).close()
        except OSError as exc:
            down.append(f"{host}:{port} ({exc.strerror or exc})")
    return down


def cannot_run(cache: Path) -> str | None:
    """Why the rig cannot run here; None when it can."""
    if os.geteuid() != 0:
        return "needs root (debootstrap, apt for qemu)"
    missing = cold(cache)
    if missing and (down := unreachable()):
        return f"cache cold ({', '.join(missing)}) and no network to build it: {', '.join(down)}"
    try:
        rig.ensure_host()
    except subprocess.CalledProcessError:
        return "qemu/debootstrap are missing and could not be installed (tests/field/install-deps)"
    if not (shutil.which("qemu-system-x86_64") and shutil.which("qemu-system-aarch64")):
        return "qemu-system-x86_64/qemu-system-aarch64 not found after install-deps"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=rig.CACHE)
    parser.add_argument("--keep", type=Path, help="keep each guest's results in DIR/SUITE-ARCH")
    args = parser.parse_args(argv)
    reason = cannot_run(args.cache)
    if reason is not None:
        print(f"field rig: NOT RUN: {reason}", file=sys.stderr)
        return CANNOT_RUN
    started = time.monotonic()
    summary = []
    for suite, arch, timeout in GUESTS:
        t = time.monotonic()
        keep = ["--keep", str(args.keep / f"{suite}-{arch}")] if args.keep else []
        code = subprocess.run([sys.executable, str(rig.HERE / "rig.py"), "--suite", suite, "--arch", arch,
                               "--cache", str(args.cache), "--timeout", str(timeout), *keep], check=False).returncode
        summary.append((f"{suite} {arch}", code, time.monotonic() - t))
    failed = [name for name, code, _ in summary if code != 0]
    for name, code, seconds in summary:
        print(f"field rig: {name}: {'passed' if code == 0 else f'FAILED (exit {code})'} in {seconds:.0f} s")
    print(f"field rig: {len(summary) - len(failed)} of {len(summary)} guests passed "
          f"in {time.monotonic() - started:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
