"""What a frame source hands out, and the small interface every source backend fulfils.

A source is a backend (camera, stream, files, MQTT) behind the :class:`Source`
protocol; ``registry.open_source`` picks one from the configuration and
``capture.Capture`` runs it in its own thread.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["Frame", "Source", "stamp"]


@dataclasses.dataclass(frozen=True, slots=True)
class Frame:
    """One captured image and where and when it was taken."""

    image: np.ndarray
    """H x W x 3 uint8 pixels."""
    rgb: bool
    """True if the channel order is RGB, False for BGR (OpenCV's order)."""
    source: str
    """The name results report: the source's name, or e.g. the MQTT topic the image came on."""
    index: int
    """Counts up per source from 1; reconnects never reset it."""
    captured: float
    """``time.monotonic()`` at capture: for latencies."""
    timestamp: float
    """``time.time()`` at capture: for the result's ``ts``."""

    def __post_init__(self) -> None:
        shape = self.image.shape
        if self.image.dtype != np.uint8 or len(shape) != 3 or shape[2] != 3:
            raise ValueError(f"Invalid frame image: {shape} {self.image.dtype}, want H x W x 3 uint8")
        if self.index < 1:
            raise ValueError(f"Invalid frame index: {self.index}")

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return int(self.image.shape[1]), int(self.image.shape[0])


def stamp(image: np.ndarray, *, rgb: bool, source: str, index: int) -> Frame:
    """A :class:`Frame` of ``image`` captured now."""
    return Frame(image=image, rgb=rgb, source=source, index=index,
                 captured=time.monotonic(), timestamp=time.time())


@runtime_checkable
class Source(Protocol):
    """A frame source backend.

    ``open``, ``read`` and ``close`` are called from one thread (the capture thread).
    """

    name: str
    """The name results report (the configured ``source.name``, else derived)."""
    live: bool
    """True for cameras, streams and MQTT (the latest frame wins); False for files,
    where every frame is delivered and a slow consumer applies backpressure."""

    def open(self) -> None:
        """Start delivering frames.

        Raises ``SourceError`` for a failure that may pass (retried) or
        ``ConfigError`` for one that will not.
        """
        ...

    def read(self) -> Frame | None:
        """The next frame, or None at the end of a finite source.

        Raises ``SourceError`` on failure; never blocks longer than the backend's read timeout.
        """
        ...

    def close(self) -> None:
        """Release the backend; idempotent, and safe after a failed ``open``."""
        ...
