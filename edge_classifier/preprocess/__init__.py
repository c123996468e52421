"""Frame -> model input tensor: resize (pure functions) and quantize (pure functions)."""

from edge_classifier.preprocess.prepare import Preparer
from edge_classifier.preprocess.quantize import InputSpec, input_table, to_input
from edge_classifier.preprocess.resize import RESIZE_MODES, fit

__all__ = ["RESIZE_MODES", "InputSpec", "Preparer", "fit", "input_table", "to_input"]
