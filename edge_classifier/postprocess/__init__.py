"""Model output -> labelled scores, as pure numpy functions."""

from edge_classifier.postprocess.scores import (
    LabelFilter,
    dequantize,
    is_probability,
    quantized_probability,
    score_table,
    softmax,
    to_scores,
    top_k,
)

__all__ = [
    "LabelFilter",
    "dequantize",
    "is_probability",
    "quantized_probability",
    "score_table",
    "softmax",
    "to_scores",
    "top_k",
]
