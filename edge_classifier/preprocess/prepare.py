"""A frame to one model's input tensor: fit (resize mode, RGB), then the model's quantization."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from edge_classifier.preprocess.quantize import InputSpec, input_table, to_input
from edge_classifier.preprocess.resize import fit

__all__ = ["Preparer"]


@dataclasses.dataclass(frozen=True, slots=True)
class Preparer:
    """Prepares frames for one model input; the quantization table is computed once."""

    spec: InputSpec
    resize: str = "stretch"
    table: np.ndarray | None = None

    @classmethod
    def for_tensor(cls, shape: Sequence[int], dtype: type, scale: float, zero_point: int, *,
                   resize: str = "stretch", mean: float = 128.0, std: float = 128.0) -> Preparer:
        """For an input tensor of ``shape`` [1, height, width, 3] and its quantization."""
        spec = InputSpec(height=shape[1], width=shape[2], dtype=dtype, scale=scale, zero_point=zero_point,
                         mean=mean, std=std)
        return cls(spec, resize, input_table(spec))

    def __call__(self, image: np.ndarray, rgb: bool = False) -> np.ndarray:
        """The input tensor for an image of any size (BGR unless ``rgb``)."""
        fitted = fit(image, self.spec.width, self.spec.height, self.resize, rgb=rgb)
        return to_input(fitted, self.table)
