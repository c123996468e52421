"""``kind = "auto"``: the Pi camera if picamera2 is there and finds one, else the
first ``/dev/video*`` device that opens and yields a frame, else a clear error.

Every probe is bounded (picamera2 fails fast without a camera; V4L2 opens are
quick and reads time out), so ``open`` never hangs. The choice is made again at
each open, so a camera plugged in later is found by the capture loop's retries.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import logging
import re
from collections.abc import Callable

from edge_classifier.errors import ConfigError, SourceError
from edge_classifier.source.base import Frame, Source
from edge_classifier.source.opencv import OpenCVSource
from edge_classifier.source.picamera2 import Picamera2Source

__all__ = ["AutoSource", "video_devices"]

log = logging.getLogger(__name__)


def video_devices(pattern: str = "/dev/video*") -> list[str]:
    """The V4L2 device nodes, in number order (video2 before video10)."""
    def number(path: str) -> int:
        match = re.search(r"(\d+)$", path)
        return int(match.group(1)) if match else -1
    return sorted(glob.glob(pattern), key=number)


class AutoSource:
    """Whichever camera is there; live."""

    live = True

    def __init__(self, *, name: str, width: int = 0, height: int = 0, fps: float = 0.0,
                 lores_size: tuple[int, int] | None = None, devices: Callable[[], list[str]] = video_devices,
                 has_picamera2: Callable[[], bool] | None = None) -> None:
        self.name = name
        self.width = width
        self.height = height
        self.fps = fps
        self.lores_size = lores_size
        self._devices = devices
        self._has_picamera2 = has_picamera2 or (lambda: importlib.util.find_spec("picamera2") is not None)
        self.chosen: Source | None = None
        self._first: Frame | None = None
        self._index = 0  # ours, so a reopen (maybe of another camera) never resets it

    def _candidates(self) -> list[Source]:
        found: list[Source] = []
        if self._has_picamera2():
            found.append(Picamera2Source(name=self.name, width=self.width, height=self.height,
                                         fps=self.fps, lores_size=self.lores_size))
        for path in self._devices():
            found.append(OpenCVSource(path, name=self.name, width=self.width, height=self.height,
                                      fps=self.fps))
        return found

    def open(self) -> None:
        self.close()
        tried: list[str] = []
        for candidate in self._candidates():
            label = getattr(candidate, "uri", "picamera2")
            try:
                candidate.open()
                first = candidate.read()
            except (SourceError, ConfigError) as exc:
                candidate.close()
                tried.append(f"{label}: {exc}")
                continue
            if first is None:
                candidate.close()
                continue
            log.info("auto source: using %s", label)
            self.chosen, self._first = candidate, first
            return
        picamera = "picamera2 is installed" if self._has_picamera2() else "picamera2 is not installed"
        detail = "; ".join(tried) if tried else "no /dev/video* devices"
        raise SourceError(f"no camera found ({picamera}; {detail})")

    def read(self) -> Frame | None:
        if self.chosen is None:
            raise SourceError(f"{self.name}: read before open")
        frame: Frame | None
        if self._first is not None:
            frame, self._first = self._first, None
        else:
            frame = self.chosen.read()
        if frame is None:
            return None
        self._index += 1
        return dataclasses.replace(frame, index=self._index)

    def close(self) -> None:
        chosen, self.chosen = self.chosen, None
        self._first = None
        if chosen is not None:
            chosen.close()
