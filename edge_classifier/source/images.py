"""Frames from image files: a directory or a glob, in name order, optionally looping.

Not live: every image is delivered, in order. A file that cannot be decoded is
skipped with a warning (once per file) and counted in ``skipped``; a file that
vanished between listing and reading is skipped quietly. The listing is taken
afresh at open and at every loop, so files added or removed meanwhile count.
"""

from __future__ import annotations

import glob
import logging
import os
import stat
import time

import numpy as np

from edge_classifier.errors import SourceError
from edge_classifier.preprocess.decode import ImageLimits, ImageRejected, decode_image
from edge_classifier.source.base import Frame, stamp

__all__ = ["IMAGE_SUFFIXES", "ImageSource"]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})


_CACHE_BYTES = 64 * 1024 * 1024  # decoded images kept for a looping folder, at most

class ImageSource:
    """Image files as frames (BGR, as OpenCV decodes them)."""

    live = False

    def __init__(self, pattern: str, *, name: str, loop: bool = False, limits: ImageLimits | None = None) -> None:
        self.pattern = pattern
        self.limits = limits or ImageLimits()
        self.name = name
        self.loop = loop
        self.skipped = 0
        """Unreadable files skipped so far (each time one is met)."""
        self.rejected = 0
        """Of those, images refused by the limits or the decoder (preprocess.decode)."""
        self._index = 0
        self._paths: list[str] = []
        self._next = 0
        self._delivered_this_pass = 0
        self._warned: set[str] = set()
        self._listed: tuple[int | None, float, list[str]] | None = None  # (dir mtime, when, paths)
        self._decoded: dict[str, tuple[tuple[int, int], np.ndarray]] = {}
        self._decoded_bytes = 0

    def _listing(self) -> list[str]:
        """The images, in name order. A directory is listed again only when its mtime
        changes (files added, removed or renamed) and at least every second; a glob at most
        once a second: a looping folder of one image would otherwise be listed every frame."""
        now = time.monotonic()
        try:
            # A directory's identity for the cache is its mtime; a glob has none (None). One
            # stat (not isdir and stat): a looping folder of one image comes here every frame.
            found = os.stat(self.pattern)
            key = found.st_mtime_ns if stat.S_ISDIR(found.st_mode) else None
        except OSError:
            key = None
        cached = self._listed
        fresh = cached is not None and now - cached[1] < 1.0 and cached[0] == key
        if fresh and (key is not None or glob.has_magic(self.pattern)):
            assert cached is not None
            return cached[2]
        paths = self._list_now()
        self._listed = (key, now, paths)
        return paths

    def _list_now(self) -> list[str]:
        if os.path.isdir(self.pattern):
            names = [os.path.join(self.pattern, n) for n in os.listdir(self.pattern)]
            paths = [p for p in names if os.path.splitext(p)[1].lower() in IMAGE_SUFFIXES]
        else:
            paths = glob.glob(self.pattern)
        return sorted(p for p in paths if os.path.isfile(p))

    def _start_pass(self) -> None:
        try:
            paths = self._listing()
        except OSError as exc:
            raise SourceError(f"cannot list images in {self.pattern}: {exc}") from exc
        if not paths:
            raise SourceError(f"no images in {self.pattern}")
        self._paths = paths
        self._next = 0
        self._delivered_this_pass = 0

    def open(self) -> None:
        self._start_pass()
        log.debug("images: %d files in %s", len(self._paths), self.pattern)

    def read(self) -> Frame | None:
        while True:
            if self._next >= len(self._paths):
                if not self.loop:
                    return None
                if self._delivered_this_pass == 0:
                    # A whole pass without one readable image: looping again would spin.
                    raise SourceError(f"no readable images in {self.pattern}")
                self._start_pass()
            path = self._paths[self._next]
            self._next += 1
            image = self._decode(path)
            if image is None:
                continue
            self._delivered_this_pass += 1
            self._index += 1
            return stamp(image, rgb=False, source=self.name, index=self._index)

    def _decode(self, path: str) -> np.ndarray | None:
        try:
            found = os.stat(path)
            # A looping folder shows the same files again and again: keep them decoded (as
            # read-only arrays, so no frame can change another) while size and mtime hold.
            key = (found.st_size, found.st_mtime_ns)
            cached = self._decoded.get(path)
            if cached is not None and cached[0] == key:
                return cached[1]
            if found.st_size > self.limits.max_bytes:
                self.rejected += 1
                self._skip(path, f"{found.st_size} bytes, over the limit of {self.limits.max_bytes} (source.max_bytes)")
                return None
            with open(path, "rb") as f:
                data = f.read(self.limits.max_bytes + 1)
        except FileNotFoundError:
            log.debug("images: %s vanished, skipped", path)
            return None
        except OSError as exc:
            self._skip(path, str(exc))
            return None
        try:
            image = decode_image(data, self.limits, what=path)
        except ImageRejected as exc:
            self.rejected += 1
            self._skip(path, str(exc).removeprefix(f"{path}: "))
            return None
        if self.loop:
            self._remember(path, key, image)
        return image

    def _remember(self, path: str, key: tuple[int, int], image: np.ndarray) -> None:
        old = self._decoded.pop(path, None)
        if old is not None:
            self._decoded_bytes -= old[1].nbytes
        if self._decoded_bytes + image.nbytes > _CACHE_BYTES:
            return  # a big folder is decoded as it goes, not kept
        image.flags.writeable = False
        self._decoded[path] = (key, image)
        self._decoded_bytes += image.nbytes

    def _skip(self, path: str, why: str) -> None:
        self.skipped += 1
        if path not in self._warned:
            self._warned.add(path)
            log.warning("images: skipping %s: %s", path, why)

    def close(self) -> None:
        self._paths = []
        self._next = 0
        self._decoded.clear()
        self._decoded_bytes = 0
