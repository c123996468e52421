"""Fit a frame to the model's input size, as pure functions on numpy arrays.

``stretch`` is the default because it is what the TensorFlow Lite Task Library and
libcoral do: the whole frame, converted to RGB, resized with bilinear interpolation to
the model's width x height, aspect ratio ignored. Scores then match theirs.
``crop`` keeps the aspect ratio by cutting the largest centred region of the model's
aspect first; ``letterbox`` keeps the whole frame and pads the short side with black.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["RESIZE_MODES", "center_crop", "fit", "letterbox", "stretch"]

RESIZE_MODES = ("stretch", "crop", "letterbox")


def stretch(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """The whole image resized to width x height, bilinear (cv2.INTER_LINEAR)."""
    if image.shape[1] == width and image.shape[0] == height:
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)


def center_crop(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """The largest centred region with the target's aspect ratio, then resized."""
    rows, cols = image.shape[:2]
    # Compare aspect ratios without division: cols/rows vs width/height.
    if cols * height > width * rows:  # frame is wider: cut the sides
        keep = max(1, round(rows * width / height))
        left = (cols - keep) // 2
        image = image[:, left : left + keep]
    elif cols * height < width * rows:  # frame is taller: cut top and bottom
        keep = max(1, round(cols * height / width))
        top = (rows - keep) // 2
        image = image[top : top + keep, :]
    return stretch(image, width, height)


def letterbox(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """The whole image scaled to fit inside width x height, centred on black padding."""
    rows, cols = image.shape[:2]
    scale = min(width / cols, height / rows)
    new_w = max(1, min(width, round(cols * scale)))
    new_h = max(1, min(height, round(rows * scale)))
    resized = stretch(image, new_w, new_h)
    canvas = np.zeros((height, width, image.shape[2]), dtype=image.dtype)
    top = (height - new_h) // 2
    left = (width - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = resized
    return canvas


_MODES = {"stretch": stretch, "crop": center_crop, "letterbox": letterbox}


def fit(image: np.ndarray, width: int, height: int, mode: str = "stretch", rgb: bool = False) -> np.ndarray:
    """A uint8 RGB image of exactly height x width x 3, from any frame size.

    ``rgb`` says the channel order of ``image``; BGR frames (OpenCV's) are converted.
    Grayscale (H x W or H x W x 1) and BGRA/RGBA frames are accepted too.
    """
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        rgb = True
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2RGB if rgb else cv2.COLOR_BGRA2RGB)
        rgb = True
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 image, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    try:
        resize = _MODES[mode]
    except KeyError:
        raise ValueError(f"unknown resize mode {mode!r} (one of {', '.join(RESIZE_MODES)})") from None
    # Resize first, then convert colour: on the (usually much smaller) model-sized
    # image the conversion costs less, and the two steps commute exactly.
    resized = resize(image, width, height)
    if not rgb:
        resized = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
    return resized
