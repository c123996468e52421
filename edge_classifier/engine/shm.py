"""Tensors in POSIX shared memory: how frames cross to the engine worker process.

The parent ``create``s one segment per tensor (named ``ec-worker-...`` in ``/dev/shm``)
and is the only one to ``unlink`` it; the child ``attach``es to it by name. Both sides
see the same bytes through a numpy view, so a frame crosses with one ``memcpy`` and no
pickling.

On Python < 3.13 attaching also registers the segment with the resource tracker. A
``spawn`` child shares its parent's tracker, which keeps one entry per name, so the
parent's ``unlink`` (which unregisters it) leaves nothing behind even when the child was
killed without closing its mapping.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from multiprocessing import shared_memory

import numpy as np

__all__ = ["SHM_PREFIX", "SharedTensor"]

SHM_PREFIX = "ec-worker-"  # what the segments are called in /dev/shm


class SharedTensor:
    """One shared memory segment holding one tensor, with ``array`` as its numpy view."""

    def __init__(self, segment: shared_memory.SharedMemory, shape: tuple[int, ...], dtype: type, owner: bool) -> None:
        self._segment: shared_memory.SharedMemory | None = segment
        self._owner = owner
        self.name = segment.name
        self.shape = shape
        self.dtype = np.dtype(dtype)
        self.array: np.ndarray = np.ndarray(shape, dtype=self.dtype, buffer=segment.buf)

    @classmethod
    def create(cls, shape: tuple[int, ...], dtype: type, role: str) -> SharedTensor:
        """A new zeroed segment sized for ``shape``/``dtype``; this side owns (unlinks) it."""
        size = max(1, int(np.prod(shape)) * np.dtype(dtype).itemsize)
        name = f"{SHM_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{role}"
        segment = shared_memory.SharedMemory(name=name, create=True, size=size)
        return cls(segment, shape, dtype, owner=True)

    @classmethod
    def attach(cls, name: str, shape: tuple[int, ...], dtype: type) -> SharedTensor:
        """The segment another process created; closing it here never unlinks it."""
        return cls(shared_memory.SharedMemory(name=name), shape, dtype, owner=False)

    @property
    def closed(self) -> bool:
        return self._segment is None

    def close(self) -> None:
        """Unmap the segment (and unlink it when this side created it). Idempotent."""
        segment, self._segment = self._segment, None
        if segment is None:
            return
        # The numpy view exports the mapping's buffer: drop it first, or the unmap fails.
        self.array = np.empty(0, dtype=self.dtype)
        try:
            segment.close()
        finally:
            if self._owner:
                with contextlib.suppress(FileNotFoundError):  # someone else removed it
                    segment.unlink()

    def __enter__(self) -> SharedTensor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
