"""Durable file replacement: write beside the target, fsync, rename over it, fsync the folder.

A reader (or a power cut) sees the old file or the new one, never a half-written one. The
temporary files are hidden (leading dot) so a store listing never shows them, and their
writer holds an advisory lock (flock) on them while it writes: a temporary file nobody
holds a lock on was left by a writer that died, and :func:`sweep` removes it at start.
Files are created 0640 (owner read-write, group read): a model store is no one else's.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["FILE_MODE", "atomic_write_bytes", "file_sha256", "fsync_dir", "locked_temporary", "sweep",
           "temporary_beside"]

log = logging.getLogger(__name__)

FILE_MODE = 0o640
TEMPORARY_SUFFIXES = (".partial", ".tmp")


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


def temporary_beside(target: Path, suffix: str, mode: int = FILE_MODE) -> Path:
    """A new, empty, hidden file in ``target``'s folder: ``.<name>.<random><suffix>``, with ``mode``."""
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    return Path(name)


@contextlib.contextmanager
def locked_temporary(target: Path, suffix: str, mode: int = FILE_MODE) -> Iterator[tuple[Path, BinaryIO]]:
    """A new hidden temporary file beside ``target``, open for writing and flock-ed while the
    block runs (so :func:`sweep` leaves it alone); removed on error unless renamed away."""
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    path = Path(name)
    try:
        os.fchmod(fd, mode)
        handle = os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    with handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield path, handle
        except BaseException:
            path.unlink(missing_ok=True)
            raise


def atomic_write_bytes(target: Path, data: bytes) -> None:
    """Replace ``target`` with ``data`` atomically and durably; OSError when it cannot."""
    with locked_temporary(target, ".tmp") as (temporary, handle):
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
        os.replace(temporary, target)
    fsync_dir(target.parent)


def sweep(directory: Path, stale_after: float | None = None) -> list[Path]:
    """Remove the temporary files (``.*.partial``, ``.*.tmp``) a dead writer left in
    ``directory``: those no live writer holds the lock of; with ``stale_after`` (the
    quarantine), also any other file not modified for that many seconds (a verified
    download whose writer died before moving it). The removed paths."""
    removed: list[Path] = []
    now = time.time()
    try:
        entries = [p for p in directory.iterdir() if p.is_file() and not p.is_symlink()]
    except OSError:
        return removed
    candidates = [p for p in entries if p.name.startswith(".") and p.name.endswith(TEMPORARY_SUFFIXES)]
    if stale_after is not None:
        candidates += [p for p in entries if p not in candidates and now - p.stat().st_mtime > stale_after]
    for path in candidates:
        try:
            with path.open("rb") as handle:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live writer holds it
                path.unlink()
        except OSError as exc:
            log.warning("cannot remove the leftover %s: %s", path, exc.strerror or exc)
            continue
        removed.append(path)
    if removed:
        log.info("removed %d leftover temporary file(s) in %s: %s", len(removed), directory,
                 ", ".join(p.name for p in removed))
    return removed


def file_sha256(path: Path) -> str:
    """The file's sha256 (hex), read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
