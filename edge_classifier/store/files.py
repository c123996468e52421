"""Durable file replacement: write beside the target, fsync, rename over it, fsync the folder.

A reader (or a power cut) sees the old file or the new one, never a half-written one. The
temporary files are hidden (leading dot) so a store listing never shows them.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write_bytes", "fsync_dir", "temporary_beside"]


def fsync_dir(directory: Path) -> None:
    """Make a rename inside ``directory`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):  # some filesystems refuse fsync on a directory
            os.fsync(fd)
    finally:
        os.close(fd)


def temporary_beside(target: Path, suffix: str, mode: int = 0o644) -> Path:
    """A new, empty, hidden file in ``target``'s folder: ``.<name>.<random><suffix>``, with
    ``mode`` (mkstemp's 0600 would make a model or state file unreadable to other users)."""
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    return Path(name)


def atomic_write_bytes(target: Path, data: bytes) -> None:
    """Replace ``target`` with ``data`` atomically and durably; OSError when it cannot."""
    temporary = temporary_beside(target, ".tmp")
    try:
        with temporary.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)
