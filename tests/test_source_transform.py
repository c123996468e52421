"""Pure frame geometry: rotation direction, flips, roi clipping, the fps limiter."""

from __future__ import annotations

import numpy as np
import pytest

from edge_classifier.errors import ConfigError
from edge_classifier.source import transform

# A 2x3 single-channel image, all values distinct, so every transform is visible:
#   1 2 3
#   4 5 6
GRID = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8)


def test_rotate_90_is_clockwise() -> None:
    # Turning clockwise brings the left column to the top, read bottom-up.
    assert transform.rotate(GRID, 90).tolist() == [[4, 1], [5, 2], [6, 3]]


def test_rotate_270_is_counterclockwise() -> None:
    assert transform.rotate(GRID, 270).tolist() == [[3, 6], [2, 5], [1, 4]]


def test_rotate_180_and_0() -> None:
    assert transform.rotate(GRID, 180).tolist() == [[6, 5, 4], [3, 2, 1]]
    assert transform.rotate(GRID, 0) is GRID


def test_rotate_rejects_other_angles() -> None:
    with pytest.raises(ValueError, match="45"):
        transform.rotate(GRID, 45)


def test_flips() -> None:
    assert transform.flip(GRID, "horizontal").tolist() == [[3, 2, 1], [6, 5, 4]]
    assert transform.flip(GRID, "vertical").tolist() == [[4, 5, 6], [1, 2, 3]]
    assert transform.flip(GRID, "both").tolist() == [[6, 5, 4], [3, 2, 1]]
    assert transform.flip(GRID, "none") is GRID


def test_roi_inside_and_clipped() -> None:
    image = np.arange(100, dtype=np.uint8).reshape(10, 10)
    assert transform.crop(image, (2, 3, 4, 2)).tolist() == [[32, 33, 34, 35], [42, 43, 44, 45]]
    clipped = transform.crop(image, (8, 8, 50, 50))
    assert clipped.shape == (2, 2)
    assert clipped.tolist() == [[88, 89], [98, 99]]


def test_roi_outside_names_roi_and_frame() -> None:
    image = np.zeros((48, 64, 3), np.uint8)
    with pytest.raises(ConfigError, match=r"\[100, 10, 5, 5\].*64x48"):
        transform.crop(image, (100, 10, 5, 5))


def test_apply_order_rotate_flip_roi() -> None:
    # rotate 90: [[4,1],[5,2],[6,3]] -> flip horizontal: [[1,4],[2,5],[3,6]] -> roi rows 1..2, col 1
    out = transform.apply(GRID, degrees=90, mode="horizontal", roi=(1, 1, 1, 2))
    assert out.tolist() == [[5], [6]]
    assert out.flags.c_contiguous


def test_fps_limiter_spacing() -> None:
    limiter = transform.FpsLimiter(10)
    assert limiter.wait(100.0) == 0
    limiter.mark(100.0)
    assert limiter.wait(100.04) == pytest.approx(0.06)
    limiter.mark(100.1)
    assert limiter.wait(100.15) == pytest.approx(0.05)
    # after a stall, a new grid starts from now: no burst
    limiter.mark(105.0)
    assert limiter.wait(105.0) == pytest.approx(0.1)


def test_fps_limiter_zero_never_waits() -> None:
    limiter = transform.FpsLimiter(0)
    limiter.mark(1.0)
    assert limiter.wait(1.0) == 0
