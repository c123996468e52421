"""The inference engine: runtime discovery, model files, labels and the interpreter."""

from edge_classifier.engine.interpreter import Engine, ModelInfo, TensorInfo
from edge_classifier.engine.labels import embedded_labels, parse_labels, read_labels
from edge_classifier.engine.model import ModelFile
from edge_classifier.engine.runtime import Runtime, load_runtime

__all__ = [
    "Engine",
    "ModelFile",
    "ModelInfo",
    "Runtime",
    "TensorInfo",
    "embedded_labels",
    "load_runtime",
    "parse_labels",
    "read_labels",
]
