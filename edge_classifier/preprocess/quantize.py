"""Map uint8 RGB pixels to the model's input tensor, using the model's own quantization.

A model expects real-valued inputs ``real = (pixel - mean) / std`` (MobileNets: about
[-1, 1], mean = std = 128 as libcoral assumes). A quantized input stores
``q = round(real / scale) + zero_point``. Composing the two gives, for every one of the
256 possible pixel values, one quantized value, so the whole conversion is a 256-entry
lookup table computed once per model. When the table is the identity (the Coral models:
scale 1/128, zero point 128 with mean = std = 128) the pixels are fed as they are, with no
copy; otherwise (for example a (1/127.5, 127) model) each pixel is requantized.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["InputSpec", "input_table", "to_input"]

_SUPPORTED = (np.uint8, np.int8, np.float32)


@dataclasses.dataclass(frozen=True, slots=True)
class InputSpec:
    """What the model's input tensor wants."""

    height: int
    width: int
    dtype: type
    scale: float
    zero_point: int
    mean: float = 128.0
    std: float = 128.0

    def __post_init__(self) -> None:
        if self.dtype not in _SUPPORTED:
            raise ValueError(f"unsupported input dtype {np.dtype(self.dtype).name}: expected uint8, int8 or float32")
        if self.std <= 0:
            raise ValueError(f"input std must be > 0, not {self.std}")


def input_table(spec: InputSpec) -> np.ndarray | None:
    """The 256-entry pixel -> input value table, or None when pixels go in unchanged."""
    pixels = np.arange(256, dtype=np.float64)
    real = (pixels - spec.mean) / spec.std
    if spec.dtype == np.float32:
        return real.astype(np.float32)
    if spec.scale == 0:  # not quantized after all: an integer tensor fed raw pixels
        quantized = pixels
    else:
        quantized = np.round(real / spec.scale) + spec.zero_point
    info = np.iinfo(spec.dtype)
    table: np.ndarray = np.clip(quantized, info.min, info.max).astype(spec.dtype)
    if spec.dtype == np.uint8 and np.array_equal(table, pixels.astype(np.uint8)):
        return None
    return table


def to_input(rgb: np.ndarray, table: np.ndarray | None) -> np.ndarray:
    """An H x W x 3 uint8 RGB image as a 1 x H x W x 3 input tensor."""
    values = rgb if table is None else table[rgb]
    return values[np.newaxis, ...]
