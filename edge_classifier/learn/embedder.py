"""Image -> L2-normalised embedding, with an embedding-extractor model (the network of a
classifier without its last layer, e.g. ``mobilenet_v1_1.0_224_quant_embedding_extractor``).

The image is prepared exactly as the classifier prepares it (``Classifier.prepare``):
the whole frame stretched to the model input, bilinear, RGB, then the model's own input
quantization. The uint8 output is dequantized (``real = scale * (q - zero_point)``) and
divided by its L2 norm, so the dot product of two embeddings is their cosine similarity.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edge_classifier.engine.interpreter import Engine, EngineLike, ModelInfo
from edge_classifier.preprocess.prepare import Preparer

__all__ = ["Embedder", "normalise", "to_embedding"]

log = logging.getLogger(__name__)

_EPSILON = 1e-12  # below this norm a vector counts as zero (and stays zero)


def normalise(vector: np.ndarray) -> np.ndarray:
    """``vector / ||vector||`` as float32; the zero vector stays zero."""
    values = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(values))
    if norm < _EPSILON:
        return np.zeros_like(values)
    return values / np.float32(norm)


def to_embedding(raw: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """A raw (quantized or float) extractor output as an L2-normalised float32 vector."""
    values = raw.reshape(-1).astype(np.float32)
    if scale:  # dequantize: real = scale * (q - zero_point)
        values = np.float32(scale) * (values - np.float32(zero_point))
    return normalise(values)


class Embedder:
    """One extractor interpreter. Not thread-safe: one caller at a time."""

    def __init__(self, engine: EngineLike, *, resize: str = "stretch", mean: float = 128.0, std: float = 128.0):
        self.engine = engine
        self.resize = resize
        tensor = engine.info.input
        # The same preparation as the classifier's (stretch, RGB, the model's quantization).
        self._prepare = Preparer.for_tensor(tensor.shape, tensor.dtype, tensor.scale, tensor.zero_point,
                                            resize=resize, mean=mean, std=std)
        self.input = self._prepare.spec

    @classmethod
    def open(cls, path: str | Path, threads: int = 1) -> Embedder:
        """The extractor at ``path`` on the CPU (InputMissingError / ModelError when unusable)."""
        engine = Engine.open(path, accelerator="cpu", threads=threads)
        log.debug("embedding extractor %s: %d values", engine.info.name, engine.info.classes)
        return cls(engine)

    @property
    def info(self) -> ModelInfo:
        return self.engine.info

    @property
    def size(self) -> int:
        """The embedding's length (1024 for MobileNet v1 1.0)."""
        return self.engine.info.classes

    def prepare(self, image: np.ndarray, rgb: bool = False) -> np.ndarray:
        """The input tensor for an image of any size (BGR unless ``rgb``)."""
        return self._prepare(image, rgb)

    def embed(self, image: np.ndarray, rgb: bool = False) -> np.ndarray:
        """The L2-normalised float32 embedding of an image (BGR unless ``rgb``)."""
        raw = self.engine.invoke(self.prepare(image, rgb))
        out = self.engine.info.output
        return to_embedding(raw, out.scale, out.zero_point)

    def close(self) -> None:
        """Release the interpreter; safe to call twice."""
        self.engine.close()

    def __enter__(self) -> Embedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
