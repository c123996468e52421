"""Pure frame geometry: rotate, flip and crop to a region of interest, plus an fps limiter.

``apply`` composes them in the order the configuration documents: rotate first
(so ``roi`` is given in the rotated frame), then flip, then crop.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from edge_classifier.errors import ConfigError

__all__ = ["FpsLimiter", "apply", "crop", "flip", "rotate"]

_ROTATIONS = {
    90: cv2.ROTATE_90_CLOCKWISE,
    180: cv2.ROTATE_180,
    270: cv2.ROTATE_90_COUNTERCLOCKWISE,
}

# cv2.flip codes: 1 mirrors left-right (around the vertical axis), 0 top-bottom, -1 both.
_FLIPS = {"horizontal": 1, "vertical": 0, "both": -1}


def rotate(image: np.ndarray, degrees: int) -> np.ndarray:
    """``image`` turned clockwise by 0, 90, 180 or 270 degrees."""
    if degrees == 0:
        return image
    try:
        code = _ROTATIONS[degrees]
    except KeyError:
        raise ValueError(f"Invalid rotation: {degrees} (use 0, 90, 180 or 270)") from None
    return cv2.rotate(image, code)


def flip(image: np.ndarray, mode: str) -> np.ndarray:
    """``image`` mirrored: none, horizontal (left-right), vertical (top-bottom) or both."""
    if mode == "none":
        return image
    try:
        code = _FLIPS[mode]
    except KeyError:
        raise ValueError(f"Invalid flip: {mode!r} (use none, horizontal, vertical or both)") from None
    return cv2.flip(image, code)


def crop(image: np.ndarray, roi: tuple[int, ...]) -> np.ndarray:
    """The ``[x, y, width, height]`` region of ``image``, clipped to the frame.

    An empty ``roi`` is the whole frame. A region that misses the frame entirely
    is a configuration error naming the region and the frame size.
    """
    if not roi:
        return image
    x, y, w, h = roi
    height, width = image.shape[:2]
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, width), min(y + h, height)
    if x1 <= x0 or y1 <= y0:
        raise ConfigError([f"source.roi: {list(roi)} lies outside the {width}x{height} frame"])
    return image[y0:y1, x0:x1]


def apply(image: np.ndarray, *, degrees: int = 0, mode: str = "none",
          roi: tuple[int, ...] = ()) -> np.ndarray:
    """Rotate, then flip, then crop ``image``; contiguous when anything changed."""
    out = crop(flip(rotate(image, degrees), mode), roi)
    return out if out is image else np.ascontiguousarray(out)


@dataclasses.dataclass(slots=True)
class FpsLimiter:
    """Spaces frames ``1 / fps`` seconds apart; ``fps == 0`` never waits.

    Call :meth:`wait` with the current monotonic time to learn how long until the
    next frame is due, and :meth:`mark` when a frame is taken. The schedule advances
    by whole periods, so the average rate holds under jitter; after a stall it
    restarts from now instead of bursting to catch up.
    """

    fps: float
    _due: float = dataclasses.field(default=float("-inf"), init=False)

    def __post_init__(self) -> None:
        if self.fps < 0:
            raise ValueError(f"Invalid fps: {self.fps}")

    @property
    def period(self) -> float:
        return 1.0 / self.fps if self.fps > 0 else 0.0

    def wait(self, now: float) -> float:
        """Seconds from ``now`` until the next frame is due (0 if it is due)."""
        if self.fps <= 0:
            return 0.0
        return max(0.0, self._due - now)

    def mark(self, now: float) -> None:
        """Record that a frame was taken at ``now``."""
        if self.fps <= 0:
            return
        period = self.period
        # On schedule (taken less than a period late): keep the grid, so jitter
        # averages out. Later than that: start a new grid one period from now.
        self._due = self._due + period if now - self._due < period else now + period
