"""Helpers for tests of frame sources."""

from __future__ import annotations

from typing import Any


def read_all(source: Any, limit: int = 100) -> list[Any]:
    """Frames from ``source.read()`` until it returns None (at most ``limit``)."""
    frames = []
    for _ in range(limit):
        frame = source.read()
        if frame is None:
            break
        frames.append(frame)
    return frames
