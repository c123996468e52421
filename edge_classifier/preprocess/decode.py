"""The one way an image from outside becomes pixels: bounded before it is decoded.

Every path that decodes bytes it did not make (the ``mqtt`` and ``images`` sources, images
in a ``learn`` command, ``edge-classifier classify`` and ``learn add``) calls
:func:`decode_image`. It refuses, before the decoder allocates anything:

- more than ``max_bytes`` of encoded data;
- a format whose header :mod:`header` cannot read (only JPEG, PNG, WebP, BMP, TIFF and
  PNM are decoded: an image nobody can size is an image nobody can bound);
- a header that declares more than ``max_pixels`` (a 109 KB PNG can declare 30000x30000).

so memory stays bounded by the limits whatever arrives. With ``reduce_to`` (the model's
input size; the ``mqtt`` source with ``source.reduced_decode``), a JPEG is decoded at 1/2,
1/4 or 1/8 scale by libjpeg's DCT scaling (``IMREAD_REDUCED_COLOR_N``): the largest
reduction that keeps both sides at least the model input's larger side, read from the
header before decoding (:func:`jpeg_reduction`); every other format is decoded whole. As a second line, OpenCV's own
ceiling (``OPENCV_IO_MAX_IMAGE_PIXELS``, read when cv2 loads) is set to the highest limit
the configuration allows, in ``edge_classifier/__init__``. Each refusal is an
:class:`ImageRejected` with a short ``reason`` to count by; :class:`RejectLog` turns a flood
of them into one log line per reason per interval.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time

import cv2
import numpy as np

from edge_classifier.errors import ImageError
from edge_classifier.preprocess.header import ImageHeader, image_header

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_PIXELS", "HARD_MAX_PIXELS", "ImageLimits", "ImageRejected",
           "RejectLog", "decode_image", "jpeg_reduction"]

DEFAULT_MAX_PIXELS = 40_000_000  # 40 MP: any camera a Pi meets; 120 MB decoded
DEFAULT_MAX_BYTES = 16 * 1024 * 1024  # a 40 MP JPEG at high quality is about 12 MB
HARD_MAX_PIXELS = 250_000_000  # the most the configuration accepts (and OpenCV's own ceiling)
_REDUCED = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))


@dataclasses.dataclass(frozen=True, slots=True)
class ImageLimits:
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES

    def __post_init__(self) -> None:
        if not 1 <= self.max_pixels <= HARD_MAX_PIXELS:
            raise ValueError(f"Invalid max_pixels: {self.max_pixels} (1 to {HARD_MAX_PIXELS})")
        if self.max_bytes < 1:
            raise ValueError(f"Invalid max_bytes: {self.max_bytes}")


class ImageRejected(ImageError):
    """An image refused before or during decoding; ``reason`` is short and fixed, to count by."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def jpeg_reduction(header: ImageHeader, target: tuple[int, int] | None) -> tuple[int, int]:
    """(factor, imread flag) for decoding the image of ``header`` for a ``target`` (width, height)
    model input: the largest of 8, 4, 2 that keeps both decoded sides >= the target's larger
    side (so EXIF rotation and non-square inputs are covered too), else (1, IMREAD_COLOR).
    Only JPEG has the DCT scaling; other formats are always (1, IMREAD_COLOR)."""
    if target is not None and header.format == "jpeg":
        side = max(target)
        for factor, flag in _REDUCED:
            # libjpeg's scaled size is ceil(side / factor); floor is the safe side of it.
            if header.width // factor >= side and header.height // factor >= side:
                return factor, flag
    return 1, cv2.IMREAD_COLOR


def decode_image(data: bytes | bytearray | memoryview | np.ndarray, limits: ImageLimits, *,
                 what: str = "image", reduce_to: tuple[int, int] | None = None) -> np.ndarray:
    """A BGR uint8 image from encoded bytes, within ``limits``; ImageRejected naming ``what``
    and the reason otherwise (nothing is allocated for a refused image). ``reduce_to``: the
    model input (width, height) a JPEG may be decoded down to (see :func:`jpeg_reduction`)."""
    buffer = data if isinstance(data, np.ndarray) else np.frombuffer(data, np.uint8)
    size = int(buffer.size)
    if size == 0:
        raise ImageRejected(f"{what}: not a readable image (empty, 0 bytes)", "empty")
    if size > limits.max_bytes:
        raise ImageRejected(f"{what}: {size} bytes, over the limit of {limits.max_bytes} bytes", "too many bytes")
    header = image_header(buffer.data)  # a view, no copy
    if header is None:
        raise ImageRejected(f"{what}: not a readable image (not a JPEG, PNG, WebP, BMP, TIFF or PNM with a "
                            f"readable header; {size} bytes)", "unknown format")
    _check_pixels(header, limits, what)
    _, flag = jpeg_reduction(header, reduce_to)
    try:
        image = cv2.imdecode(buffer, flag)
    except cv2.error as exc:
        raise ImageRejected(f"{what}: not a readable image ({header.format} that cannot be decoded: "
                            f"{exc.msg or exc})", "undecodable") from exc
    if image is None:
        raise ImageRejected(f"{what}: not a readable image ({header.format} that cannot be decoded: "
                            f"truncated or corrupt, {size} bytes)", "undecodable")
    height, width = image.shape[:2]
    if width * height > limits.max_pixels:  # the decoder saw more than the header said
        raise ImageRejected(f"{what}: decoded to {width}x{height}, over the limit of {limits.max_pixels} "
                            "pixels", "too many pixels")
    return image


def _check_pixels(header: ImageHeader, limits: ImageLimits, what: str) -> None:
    if header.pixels > limits.max_pixels:
        raise ImageRejected(f"{what}: {header.format} header declares {header.width}x{header.height} "
                            f"= {header.pixels} pixels, over the limit of {limits.max_pixels} "
                            "(source.max_pixels)", "too many pixels")


class RejectLog:
    """At most one log line per reason per ``interval`` seconds, with how many were held back.

    Thread-safe (a lock around the counters); ``counts`` totals every rejection by reason.
    """

    def __init__(self, logger: logging.Logger, what: str, interval: float = 10.0) -> None:
        self._logger = logger
        self._what = what
        self._interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self.counts: dict[str, int] = {}

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())

    def rejected(self, exc: ImageRejected) -> None:
        now = time.monotonic()
        with self._lock:
            reason = exc.reason
            self.counts[reason] = self.counts.get(reason, 0) + 1
            last = self._last.get(reason)
            if last is not None and now - last < self._interval:
                self._held[reason] = self._held.get(reason, 0) + 1
                return
            held = self._held.pop(reason, 0)
            self._last[reason] = now
        more = f" (and {held} more rejected for this reason in the last {self._interval:g} s)" if held else ""
        self._logger.warning("%s: %s, ignored%s", self._what, exc, more)
