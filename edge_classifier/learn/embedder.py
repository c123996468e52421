"""Image -> L2-normalised embedding, from one of two places (``learn.extractor``):

- ``"model"`` (the default): the classifier's own penultimate tensor, exposed as a second
  output (``engine.penultimate``), so the daemon's one invoke per frame gives the scores
  and the embedding alike; the embedder opens the model's CPU file that way;
- a file: an embedding-extractor model (the network of a classifier without its last
  layer, e.g. ``mobilenet_v1_1.0_224_quant_embedding_extractor``), a second invoke per
  frame; on the Edge TPU its ``_edgetpu`` twin runs there when it is beside it.

The image is prepared exactly as the classifier prepares it (``Classifier.prepare``):
the whole frame stretched to the model input, bilinear, RGB, then the model's own input
quantization. The uint8 output is dequantized (``real = scale * (q - zero_point)``) and
divided by its L2 norm, so the dot product of two embeddings is their cosine similarity.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edge_classifier.config.schema import LearnConfig, ModelConfig
from edge_classifier.engine.interpreter import Engine, ModelInfo, TensorInfo
from edge_classifier.errors import ModelError
from edge_classifier.preprocess.prepare import Preparer

__all__ = ["FROM_MODEL", "Embedder", "normalise", "open_embedder", "to_embedding"]

FROM_MODEL = "model"  # learn.extractor: the classifier's penultimate tensor

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

    def __init__(self, engine: Engine, *, resize: str = "stretch", mean: float = 128.0, std: float = 128.0):
        self.engine = engine
        self.resize = resize
        # From a classifier: its penultimate tensor (output 1); from an extractor: its output.
        self.output: TensorInfo = engine.embedding_info or engine.info.output
        tensor = engine.info.input
        # The same preparation as the classifier's (stretch, RGB, the model's quantization).
        self._prepare = Preparer.for_tensor(tensor.shape, tensor.dtype, tensor.scale, tensor.zero_point,
                                            resize=resize, mean=mean, std=std)
        self.input = self._prepare.spec

    @classmethod
    def open(cls, path: str | Path, threads: int = 1, *, accelerator: str = "cpu", from_model: bool = False,
             resize: str = "stretch", mean: float = 128.0, std: float = 128.0) -> Embedder:
        """The extractor at ``path`` (``accelerator`` as for a model: ``auto`` runs its
        ``_edgetpu`` twin on the TPU when it can), or with ``from_model`` the classifier at
        ``path`` on the CPU with its penultimate tensor exposed. InputMissingError /
        ModelError when unusable."""
        if from_model:
            engine = Engine.open(path, accelerator="cpu", threads=threads, embedding=True)
            if engine.embedding_info is None:
                engine.close()
                raise ModelError(f"learn.extractor = 'model': {engine.embedding_refused}; set learn.extractor "
                                 "to an embedding extractor model file instead")
        else:
            engine = Engine.open(path, accelerator=accelerator, threads=threads)
        embedder = cls(engine, resize=resize, mean=mean, std=std)
        log.debug("embeddings from %s on %s: %d values", engine.info.name, engine.info.accelerator, embedder.size)
        return embedder

    @property
    def info(self) -> ModelInfo:
        return self.engine.info

    @property
    def size(self) -> int:
        """The embedding's length (1024 for MobileNet v1 1.0's extractor, 1280 for MobileNet v2)."""
        return int(np.prod(self.output.shape))

    @property
    def from_model(self) -> bool:
        """True when the embeddings are a classifier's penultimate tensor."""
        return self.engine.embedding_info is not None

    def vector(self, raw: np.ndarray) -> np.ndarray:
        """The normalised embedding from this embedder's raw output (or an engine's raw
        penultimate tensor of the same model)."""
        return to_embedding(raw, self.output.scale, self.output.zero_point)

    def prepare(self, image: np.ndarray, rgb: bool = False) -> np.ndarray:
        """The input tensor for an image of any size (BGR unless ``rgb``)."""
        return self._prepare(image, rgb)

    def embed(self, image: np.ndarray, rgb: bool = False) -> np.ndarray:
        """The L2-normalised float32 embedding of an image (BGR unless ``rgb``)."""
        raw = self.engine.invoke(self.prepare(image, rgb))
        if self.from_model:
            penultimate = self.engine.embedding()
            assert penultimate is not None  # from_model: the engine exposes it
            return self.vector(penultimate)
        return self.vector(raw)

    def close(self) -> None:
        """Release the interpreter; safe to call twice."""
        self.engine.close()

    def __enter__(self) -> Embedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_embedder(learn: LearnConfig, model: ModelConfig, threads: int = 1) -> Embedder:
    """The embedder ``learn.extractor`` names: ``"model"`` -> the classifier ``model.path`` (its
    CPU file, prepared as ``[model]`` says, as the classifier is), else the extractor file,
    on the TPU (its ``_edgetpu`` twin) unless ``model.accelerator = "cpu"``."""
    if learn.extractor == FROM_MODEL:
        return Embedder.open(model.path, threads, from_model=True, resize=model.resize, mean=model.input_mean,
                             std=model.input_std)
    return Embedder.open(learn.extractor, threads, accelerator="cpu" if model.accelerator == "cpu" else "auto")
