"""Few-shot learning in the field by weight imprinting.

    image --Embedder.embed()--> normalised embedding --LearnedHead.score()/best()--> (label, score)
                                                     --LearnedHead.with_examples()--> new head
                                                        --headfile.save_head()--> learned_head.json

``embedder``: the classifier's penultimate tensor (one invoke) or an extractor model
(preprocessing as the classifier's, dequantized, L2-normalised);
``head``: the learned classes as an immutable value, with the score calibration;
``headfile``: the versioned JSON file, its validation, atomic saves, export and import.
"""

from edge_classifier.learn.embedder import FROM_MODEL, Embedder, normalise, open_embedder, to_embedding
from edge_classifier.learn.head import (
    DEFAULT_MAX_EXAMPLES,
    DEFAULT_THRESHOLD,
    LearnedClass,
    LearnedHead,
    calibrate,
    check_label,
)
from edge_classifier.learn.headfile import (
    FORMAT_VERSION,
    ExtractorId,
    export_head,
    import_head,
    load_head,
    load_or_empty,
    locked,
    read_head,
    save_head,
)

__all__ = [
    "DEFAULT_MAX_EXAMPLES",
    "DEFAULT_THRESHOLD",
    "FORMAT_VERSION",
    "FROM_MODEL",
    "Embedder",
    "ExtractorId",
    "LearnedClass",
    "LearnedHead",
    "calibrate",
    "check_label",
    "export_head",
    "import_head",
    "load_head",
    "load_or_empty",
    "locked",
    "normalise",
    "open_embedder",
    "read_head",
    "save_head",
    "to_embedding",
]
