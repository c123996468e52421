"""What a file in the model store is for: only a classifier may become the running model.

The store holds files of several roles: classifiers (``.tflite``), their labels (``.txt``),
the learned head (``learned_head.json``), the learning extractor (a ``.tflite`` too, by
default ``mobilenet_v1_1.0_224_quant_embedding_extractor.tflite``), ``catalog.toml`` and
``state.json``. Names already keep the non-models out (``store.resolve_name`` takes only
``.tflite``); :func:`not_a_classifier` catches the extractor, which would load as a model
and answer with its embedding's indices as labels: by the configured ``learn.extractor``
path, by its sha256 (a copy under another name), and by the ``*_embedding_extractor``
naming convention.
"""

from __future__ import annotations

import functools
from pathlib import Path

from edge_classifier.config.schema import Config
from edge_classifier.store.files import file_sha256

__all__ = ["EXTRACTOR_SUFFIX", "not_a_classifier"]

EXTRACTOR_SUFFIX = "_embedding_extractor.tflite"


def not_a_classifier(path: Path, config: Config, sha256: str | None = None) -> str | None:
    """Why ``path`` must not become the classifier (its role), or None when it may."""
    path = Path(path)
    extractor = Path(config.learn.extractor)
    reason = (f"{path.name} is the learning extractor (learn.extractor), not a classifier: it is never "
              "used as the model")
    if path.name.endswith(EXTRACTOR_SUFFIX):
        return f"{path.name} is an embedding extractor (named *{EXTRACTOR_SUFFIX}), not a classifier: it is " \
               "never used as the model"
    try:
        if extractor.is_file() and path.resolve() == extractor.resolve():
            return reason
        if extractor.is_file() and path.is_file() and path.stat().st_size == extractor.stat().st_size:
            stat = extractor.stat()
            extractor_sha256 = _cached_sha256(str(extractor.resolve()), stat.st_size, stat.st_mtime_ns)
            if (sha256 or file_sha256(path)) == extractor_sha256:
                return f"{path.name} has the same contents as the learning extractor {extractor.name} " \
                       "(learn.extractor), not a classifier: it is never used as the model"
    except OSError:
        return None
    return None


@functools.lru_cache(maxsize=8)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    """The extractor's sum, once per version of the file (size and mtime are the key)."""
    return file_sha256(Path(path))
