"""An arm64 guest for the rig without running arm64 programs on the host, fast.

debootstrap's second stage (every maintainer script, the kernel's initramfs) ran for over
40 minutes under TCG and was not finished, so the arm64 guest does without it:
``debootstrap --foreign`` resolves and downloads the packages from Debian's archive and
unpacks the essential ones; ``build-image`` unpacks the rest with ``dpkg-deb`` (no
maintainer scripts). Nothing there needs configuring for what the guest does: Python
3.13, its venv and apt's numpy. The VM boots this file's small initramfs (the target's own
busybox-static and the kernel modules for virtio, ext4 and 9p, taken from the downloaded
.debs) instead of systemd: it mounts the disk and the 9p share, runs ``guest/run`` in a
chroot (``classify`` mode: the aarch64 wheels, ``classify``, a short ``run``), prints the
report on the console and powers off. The amd64 guests keep the full systemd checks.

    python3 tests/field/foreign.py ROOT WORK       (called by build-image)

writes WORK/{vmlinuz,initrd.img,python-version,numpy-version}.
"""

from __future__ import annotations

import lzma
import re
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["cpio_newc", "main", "versions"]

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
# What udev would add to /dev: bash's process substitution needs /dev/fd.
ln -s /proc/self/fd /dev/fd; ln -s fd/0 /dev/stdin; ln -s fd/1 /dev/stdout; ln -s fd/2 /dev/stderr
for m in $(cat /modules.order); do insmod /modules/$m.ko || echo "insmod $m failed"; done
sleep 1
mount -t ext4 /dev/vda /target || { echo FIELD-GUEST-RC=mount; poweroff -f; }
mount -t proc proc /target/proc; mount -t sysfs sys /target/sys; mount -o bind /dev /target/dev
mount -t tmpfs tmpfs /target/tmp; mount -t tmpfs tmpfs /target/run
mkdir -p /target/mnt/shared
mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 shared /target/mnt/shared \\
    || { echo FIELD-GUEST-RC=9p; poweroff -f; }
hostname field
# No ldconfig ran at unpacking: the dynamic linker's cache, once.
chroot /target /sbin/ldconfig
echo "field-init: running guest/run"
chroot /target /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/usr/sbin HOME=/root LANG=C.UTF-8 \\
    /bin/bash /mnt/shared/guest/run
echo FIELD-GUEST-RC=$?
cat /target/mnt/shared/results/report.txt
umount /target/mnt/shared; umount /target/tmp /target/run /target/dev /target/proc /target/sys; umount /target; sync
poweroff -f
"""

def cpio_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """An initramfs archive: (name, mode, data) in the kernel's ``newc`` cpio format."""
    out = bytearray()

    def pad() -> None:
        out.extend(b"\0" * (-len(out) % 4))

    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        encoded = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
        out.extend(b"070701" + b"".join(f"{value:08x}".encode() for value in fields))
        out.extend(encoded)
        pad()
        out.extend(data)
        pad()
    return bytes(out)


def _deb(root: Path, pattern: str) -> Path:
    found = sorted((root / "var/cache/apt/archives").glob(pattern))
    if not found:
        raise SystemExit(f"foreign: no {pattern} among the downloaded packages")
    return found[-1]


def _module_file(modules: Path, name: str) -> Path | None:
    for candidate in modules.rglob(f"{name}.ko*"):
        return candidate
    alt = name.replace("_", "-") if "_" in name else name.replace("-", "_")
    for candidate in modules.rglob(f"{alt}.ko*"):
        return candidate
    return None


def _read_module(path: Path) -> bytes:
    data = path.read_bytes()
    return lzma.decompress(data) if path.suffix == ".xz" else data


def _depends(data: bytes) -> list[str]:
    match = re.search(rb"depends=([^\0]*)\0", data)
    return [d for d in match.group(1).decode().split(",") if d] if match else []


def modules_for(modules: Path, wanted: list[str]) -> list[tuple[str, bytes]]:
    """The modules (dependencies first) of ``wanted`` that this kernel builds as modules."""
    order: list[tuple[str, bytes]] = []
    seen: set[str] = set()

    def add(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        path = _module_file(modules, name)
        if path is None:
            return  # built in
        data = _read_module(path)
        for dep in _depends(data):
            add(dep)
        order.append((path.name.split(".ko")[0], data))

    for name in wanted:
        add(name)
    return order


def versions(archives: Path) -> tuple[str, str]:
    """The guest's Python and apt numpy versions, from the downloaded packages' names
    (arm64 programs cannot run here): ("Python 3.13.5", "2.2.4")."""
    python = re.compile(r"python3\.\d+-minimal_([0-9.]+)-")
    numpy = re.compile(r"python3-numpy_(?:\d+%3a)?([0-9.]+)")
    found_python = [m.group(1) for d in archives.glob("python3.*-minimal_*.deb") if (m := python.match(d.name))]
    found_numpy = [m.group(1) for d in archives.glob("python3-numpy_*.deb") if (m := numpy.match(d.name))]
    if not found_python or not found_numpy:
        raise SystemExit(f"foreign: no python3.X-minimal or python3-numpy package in {archives}")
    return f"Python {found_python[0]}", found_numpy[0]


def main(argv: list[str]) -> int:
    root, work = Path(argv[0]), Path(argv[1])
    archives = root / "var/cache/apt/archives"
    kernel_deb = _deb(root, "linux-image-[0-9]*-arm64_*.deb")
    kdir, bdir = work / "kernel", work / "busybox"
    for deb, target in ((kernel_deb, kdir), (_deb(root, "busybox-static_*.deb"), bdir)):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(target)], check=True)
    vmlinuz = next((kdir / "boot").glob("vmlinuz-*"))
    version = vmlinuz.name[len("vmlinuz-"):]
    modules = next(p for p in (kdir / "usr/lib/modules" / version, kdir / "lib/modules" / version) if p.exists())
    wanted = ["virtio_mmio", "virtio_pci", "virtio_blk", "crc32c_generic", "ext4", "9pnet_virtio", "9p"]
    mods = modules_for(modules, wanted)
    busybox = next(p for p in (bdir / "bin/busybox", bdir / "usr/bin/busybox") if p.exists())
    entries: list[tuple[str, int, bytes]] = [(d, 0o40755, b"") for d in ("bin", "proc", "sys", "dev", "target",
                                                                      "modules")]
    entries += [("bin/busybox", 0o100755, busybox.read_bytes()), ("init", 0o100755, INIT.encode()),
                ("modules.order", 0o100644, "\n".join(name for name, _ in mods).encode() + b"\n")]
    entries += [(f"modules/{name}.ko", 0o100644, data) for name, data in mods]
    (work / "initrd.img").write_bytes(cpio_newc(entries))
    shutil.copy2(vmlinuz, work / "vmlinuz")
    shutil.rmtree(kdir)
    shutil.rmtree(bdir)
    python, numpy = versions(archives)
    (work / "python-version").write_text(python + "\n")
    (work / "numpy-version").write_text(numpy + "\n")
    print(f"foreign: kernel {version}, {python}, numpy {numpy}, initramfs modules: "
          f"{' '.join(name for name, _ in mods) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
