"""Finish a foreign-architecture debootstrap (arm64 on an amd64 host) without binfmt_misc.

``debootstrap --foreign`` only unpacks; its second stage must run arm64 programs. Here
they run inside the target VM itself: a tiny initramfs (the target's own busybox-static
and the kernel modules for a virtio disk and ext4, taken from the downloaded .debs) mounts
the disk, runs ``debootstrap --second-stage`` in a chroot, applies the rig's settings, and
powers off. The kernel and the initramfs the target then generated for itself are read out
of the disk image with ``debugfs`` (no loop mount).

    python3 tests/field/foreign.py ROOT WORK       (called by build-image)
"""

from __future__ import annotations

import lzma
import re
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["cpio_newc", "main"]

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do insmod /modules/$m.ko || echo "insmod $m failed"; done
sleep 1
mount -t ext4 /dev/vda /target || { echo FIELD-STAGE2-RC=mount; poweroff -f; }
mount -t proc proc /target/proc; mount -t sysfs sys /target/sys; mount -o bind /dev /target/dev
chroot /target /debootstrap/debootstrap --second-stage > /target/root/second-stage.log 2>&1
rc=$?
tail -n 5 /target/root/second-stage.log
if [ $rc -eq 0 ]; then
    cp -a /target/root/field-config/. /target/
    chroot /target /bin/sh -c 'passwd -d root; systemctl enable field-test.service; systemctl enable mosquitto.service;
        rm -f /etc/resolv.conf; python3 --version > /root/python-version;
        python3 -c "import numpy; print(numpy.__version__)" > /root/numpy-version;
        rm -rf /var/cache/apt/archives/*.deb /var/lib/apt/lists/*'
    rc=$?
fi
echo FIELD-STAGE2-RC=$rc
umount /target/dev /target/proc /target/sys; umount /target; sync
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


def main(argv: list[str]) -> int:
    root, work = Path(argv[0]), Path(argv[1])
    kernel_deb = _deb(root, "linux-image-[0-9]*-arm64_*.deb")
    kdir, bdir = work / "kernel", work / "busybox"
    for deb, target in ((kernel_deb, kdir), (_deb(root, "busybox-static_*.deb"), bdir)):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(target)], check=True)
    vmlinuz = next((kdir / "boot").glob("vmlinuz-*"))
    version = vmlinuz.name[len("vmlinuz-"):]
    modules = next(p for p in (kdir / "usr/lib/modules" / version, kdir / "lib/modules" / version) if p.exists())
    wanted = ["virtio_mmio", "virtio_pci", "virtio_blk", "crc32c_generic", "ext4"]
    mods = modules_for(modules, wanted)
    busybox = next(p for p in (bdir / "bin/busybox", bdir / "usr/bin/busybox") if p.exists())
    entries: list[tuple[str, int, bytes]] = [(d, 0o40755, b"") for d in ("bin", "proc", "sys", "dev", "target",
                                                                      "modules")]
    entries += [("bin/busybox", 0o100755, busybox.read_bytes()), ("init", 0o100755, INIT.encode()),
                ("modules.order", 0o100644, "\n".join(name for name, _ in mods).encode() + b"\n")]
    entries += [(f"modules/{name}.ko", 0o100644, data) for name, data in mods]
    (work / "stage2-initrd").write_bytes(cpio_newc(entries))
    shutil.copy2(vmlinuz, work / "stage2-vmlinuz")
    print(f"foreign: kernel {version}, initramfs modules: {' '.join(name for name, _ in mods) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
