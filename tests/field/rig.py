"""The field rig: the installed service on a real systemd, a real V4L2 camera, in a VM.

    python3 tests/field/rig.py [--suite bookworm] [--arch amd64] [--mode full|classify]

1. host packages (``install-deps``: qemu, debootstrap), idempotent;
2. a Debian image built once with debootstrap (``build-image``), cached in ``--cache``
   (default /var/cache/edge-classifier-field), never in the repository;
3. wheels for the guest's Python built on the host (``pip download`` for its version and
   platform, numpy pinned to the guest's apt numpy, plus this checkout as a wheel), cached
   per guest and requirement set; the guest has no network at all;
4. a share (9p) with the repository, the wheels and ``guest/run``; a throwaway qcow2 overlay
   over the cached image, so every run starts from the same clean system;
5. qemu (TCG, ``-smp 2``) boots the image's own kernel and initrd with systemd as PID 1;
   ``field-test.service`` runs ``guest/run``, which writes ``results/`` and powers off;
6. the report: every PASS/FAIL line, the figures, and the exit status (0 = all passed).

Bounded: qemu gets ``--timeout`` seconds (default 1200), then it is killed and the run
fails. Nothing here sends traffic anywhere but Debian's archive and PyPI (host side).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CACHE = Path(os.environ.get("EDGE_CLASSIFIER_FIELD_CACHE", "/var/cache/edge-classifier-field"))

# What each guest is: its Python, glibc (for the manylinux tags pip may take) and qemu.
GUESTS = {
    ("bookworm", "amd64"): {"python": "3.11", "glibc": 36},
    ("trixie", "amd64"): {"python": "3.13", "glibc": 41},
    ("bookworm", "arm64"): {"python": "3.11", "glibc": 36},
    ("trixie", "arm64"): {"python": "3.13", "glibc": 41},
}
MACHINE = {"amd64": "x86_64", "arm64": "aarch64"}


@dataclass(frozen=True, slots=True)
class Report:
    passed: list[str]
    failed: list[str]
    figures: dict[str, str]
    seconds: dict[str, float]

    @property
    def ok(self) -> bool:
        return bool(self.passed) and not self.failed


def step(name: str) -> None:
    print(f"== field: {name}", flush=True)


def ensure_host() -> None:
    subprocess.run(["bash", str(HERE / "install-deps")], check=True)


def ensure_image(suite: str, arch: str, cache: Path) -> Path:
    subprocess.run(["bash", str(HERE / "build-image"), suite, arch, str(cache)], check=True)
    return cache / f"{suite}-{arch}"


def _requirements() -> list[str]:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return list(project["dependencies"])


def wheel_cache(image: Path, suite: str, arch: str, cache: Path) -> Path:
    """Where the guest's dependency wheels are cached: per guest, apt numpy and requirements."""
    numpy = (image / "numpy-version").read_text().strip()
    key = hashlib.sha256(json.dumps([suite, arch, GUESTS[(suite, arch)], numpy, _requirements()]).encode())
    return cache / "wheels" / f"{suite}-{arch}-{key.hexdigest()[:16]}"


def build_wheels(image: Path, suite: str, arch: str, cache: Path, out: Path) -> None:
    """The guest's wheels into ``out``: dependencies (cached) and this checkout (fresh)."""
    guest = GUESTS[(suite, arch)]
    numpy = (image / "numpy-version").read_text().strip()
    requirements = _requirements()
    deps = wheel_cache(image, suite, arch, cache)
    if not (deps / "complete").exists():
        shutil.rmtree(deps, ignore_errors=True)
        deps.mkdir(parents=True)
        constraints = deps / "constraints.txt"
        # The guest keeps apt's numpy (install.sh pins it with system site packages), so the
        # other wheels must be ones that work with it; numpy's own wheel is there for venvs
        # without system site packages.
        constraints.write_text(f"numpy=={numpy}\n")
        machine = MACHINE[arch]
        platforms = [f"manylinux_2_{minor}_{machine}" for minor in range(17, guest["glibc"] + 1)]
        platforms += [f"manylinux2014_{machine}"]
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                   "--only-binary=:all:", "--python-version", guest["python"], "--implementation", "cp",
                   "--dest", str(deps), "--constraint", str(constraints)]
        for platform in platforms:
            command += ["--platform", platform]
        subprocess.run([*command, *requirements, "setuptools", "wheel"], check=True)
        (deps / "complete").touch()
    out.mkdir(parents=True, exist_ok=True)
    for wheel in deps.glob("*.whl"):
        shutil.copy2(wheel, out / wheel.name)
    # This checkout as a wheel (pure Python: one build serves every guest), built from a
    # copy so setuptools' build/ and egg-info never land in the working tree.
    with tempfile.TemporaryDirectory(prefix="field-build-") as build:
        copy_checkout(Path(build))
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps",
                        "--wheel-dir", str(out), build], check=True, stdout=subprocess.DEVNULL)


def copy_checkout(out: Path) -> None:
    """The files git knows (tracked, and new ones not ignored): what a fresh clone would have."""
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            target = out / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def qemu_command(image: Path, arch: str, disk: Path, share: Path, console: Path) -> list[str]:
    common = ["-smp", "2", "-m", "2048", "-display", "none", "-monitor", "none", "-no-reboot",
              "-serial", f"file:{console}", "-nic", "none",
              "-kernel", str(image / "vmlinuz"), "-initrd", str(image / "initrd.img"),
              "-drive", f"file={disk},if=virtio,format=qcow2",
              "-virtfs", f"local,path={share},mount_tag=shared,security_model=none,id=shared"]
    if arch == "amd64":
        return ["qemu-system-x86_64", "-machine", "q35", "-accel", "tcg,thread=multi", "-cpu", "max",
                "-append", "root=/dev/vda rw console=ttyS0 quiet", *common]
    # cortex-a72 (a Pi 4's core), not `max`: emulating `max`'s pointer authentication is slow.
    # The arm64 image has no systemd: foreign.py's initramfs runs guest/run (rdinit=/init).
    return ["qemu-system-aarch64", "-machine", "virt", "-accel", "tcg,thread=multi", "-cpu", "cortex-a72",
            "-append", "rdinit=/init console=ttyAMA0", *common]


def boot(command: list[str], timeout: float) -> float:
    """Run the VM until it powers off; returns the seconds it took. Killed after ``timeout``."""
    start = time.monotonic()
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"the VM did not finish within {timeout:.0f} s (killed)") from None
    return time.monotonic() - start


def read_report(results: Path, seconds: dict[str, float]) -> Report:
    lines = (results / "report.txt").read_text().splitlines() if (results / "report.txt").exists() else []
    figures = {}
    if (results / "figures.txt").exists():
        for line in (results / "figures.txt").read_text().splitlines():
            name, _, value = line.partition(" ")
            figures[name] = value
    return Report([line[5:] for line in lines if line.startswith("PASS ")],
                  [line[5:] for line in lines if line.startswith("FAIL ")], figures, seconds)


def run(suite: str, arch: str, mode: str, cache: Path, timeout: float, keep: Path | None) -> Report:
    seconds: dict[str, float] = {}
    t = time.monotonic()
    step("host packages")
    ensure_host()
    step(f"image {suite} {arch}")
    image = ensure_image(suite, arch, cache)
    seconds["image"] = time.monotonic() - t
    work = Path(tempfile.mkdtemp(prefix=f"field-{suite}-{arch}-"))
    try:
        share = work / "share"
        (share / "results").mkdir(parents=True)
        t = time.monotonic()
        step("wheels")
        build_wheels(image, suite, arch, cache, share / "wheels")
        copy_checkout(share / "src")
        shutil.copytree(HERE / "guest", share / "guest")
        (share / "mode").write_text(mode + "\n")
        seconds["wheels"] = time.monotonic() - t
        disk = work / "disk.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image / "rootfs.raw"), "-F", "raw",
                        str(disk)], check=True)
        step(f"boot {suite} {arch} ({mode}); console: {work / 'console.log'}")
        load = os.getloadavg()[0]
        seconds["vm"] = boot(qemu_command(image, arch, disk, share, work / "console.log"), timeout)
        report = read_report(share / "results", seconds)
        # The guest's times are the host's to give: say how busy it was.
        report.figures["host_load_1min_at_boot_and_end"] = f"{load:.1f} {os.getloadavg()[0]:.1f}"
        if keep is not None:
            shutil.rmtree(keep, ignore_errors=True)
            shutil.copytree(share / "results", keep)
            shutil.copy2(work / "console.log", keep / "console.log")
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="bookworm", choices=sorted({s for s, _ in GUESTS}))
    parser.add_argument("--arch", default="amd64", choices=sorted({a for _, a in GUESTS}))
    parser.add_argument("--mode", default=None, choices=("full", "classify"),
                        help="full: the service checks (default on amd64); classify: classify + a short run")
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds the VM may run (default 1200)")
    parser.add_argument("--keep", type=Path, help="copy the guest's results and the console log here")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("field: needs root (debootstrap, and apt for the host packages)", file=sys.stderr)
        return 77
    mode = args.mode or ("full" if args.arch == "amd64" else "classify")
    started = time.monotonic()
    try:
        report = run(args.suite, args.arch, mode, args.cache, args.timeout, args.keep)
    except (subprocess.CalledProcessError, RuntimeError) as exc:
        print(f"field: FAILED: {exc}", file=sys.stderr)
        return 1
    for line in report.passed:
        print(f"PASS {line}")
    for line in report.failed:
        print(f"FAIL {line}")
    for name, value in report.figures.items():
        print(f"figure {name} {value}")
    phases = ", ".join(f"{name} {value:.0f} s" for name, value in report.seconds.items())
    print(f"field: {args.suite} {args.arch} {mode}: {len(report.passed)} passed, {len(report.failed)} failed "
          f"in {time.monotonic() - started:.0f} s ({phases})")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
