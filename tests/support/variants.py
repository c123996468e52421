"""Variants of the test images for teaching classes: random crops, mirrors, brightness."""

from __future__ import annotations

import cv2
import numpy as np

from support.testdata import MODELS, image

EXTRACTOR = MODELS / "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"
CLASSES = {"cat": ("cat.bmp", "cat_720p.jpg"), "bird": ("bird.bmp",), "flower": ("sunflower.bmp",)}


def variant(picture: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random crop (60-100 % of each side), maybe mirrored, brightness x0.6-1.4."""
    rows, cols = picture.shape[:2]
    height, width = int(rows * rng.uniform(0.6, 1.0)), int(cols * rng.uniform(0.6, 1.0))
    top, left = rng.integers(0, rows - height + 1), rng.integers(0, cols - width + 1)
    out = picture[top : top + height, left : left + width]
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.clip(out.astype(np.float32) * rng.uniform(0.6, 1.4), 0, 255).astype(np.uint8)


def variants(label: str, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    files = CLASSES[label]
    return [variant(cv2.imread(str(image(files[k % len(files)]))), rng) for k in range(count)]
