"""The learned head on disk: a small versioned JSON file, replaced atomically.

    {"version": 1,
     "extractor": {"name": "mobilenet_v1_1.0_224_quant_embedding_extractor", "sha256": "f409…"},
     "embedding_size": 1024,
     "classes": [{"label": "cat", "count": 5, "threshold": null,
                  "sum": "<base64 of the little-endian float32 sum vector>"}]}

``sum`` is the unnormalised sum of the class's normalised example embeddings (so more
examples can be added later, exactly); ``threshold`` null means the configured default.
Embeddings only mean something to the extractor that made them: loading checks its
sha256. Every problem is a LearnError naming the file.

Writers (the ``learn`` command, the daemon's ``learn``/``forget`` commands) hold an
advisory lock on a hidden ``.<name>.lock`` beside the file for their read-modify-write;
readers need none, since the file is only ever replaced whole (tmp + fsync + rename +
folder fsync), so a daemon reloading it sees the old head or the new one.

``import`` merges by default (a label in both files gets both sets of examples); with
``replace`` the imported file's classes replace all the current ones.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import fcntl
import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edge_classifier.engine.interpreter import ModelInfo
from edge_classifier.errors import InputMissingError, LearnError
from edge_classifier.learn.head import DEFAULT_MAX_EXAMPLES, DEFAULT_THRESHOLD, LearnedClass, LearnedHead
from edge_classifier.store.files import atomic_write_bytes

__all__ = [
    "FORMAT_VERSION",
    "ExtractorId",
    "export_head",
    "import_head",
    "load_head",
    "load_or_empty",
    "locked",
    "read_head",
    "save_head",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_FLOAT = np.dtype("<f4")
_MAX_FILE_BYTES = 64 * 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class ExtractorId:
    """Which extractor model a head's embeddings come from."""

    name: str
    sha256: str
    size: int  # embedding length

    @classmethod
    def of(cls, info: ModelInfo, size: int | None = None) -> ExtractorId:
        """The model of ``info`` making ``size``-long embeddings (default: its output's length;
        a classifier's penultimate tensor is shorter than its scores)."""
        return cls(info.name, info.sha256, info.classes if size is None else size)


@dataclasses.dataclass(frozen=True, slots=True)
class _Limits:
    threshold: float = DEFAULT_THRESHOLD
    max_examples: int = DEFAULT_MAX_EXAMPLES


def read_head(path: Path, *, threshold: float = DEFAULT_THRESHOLD,
              max_examples: int = DEFAULT_MAX_EXAMPLES) -> tuple[LearnedHead, ExtractorId]:
    """Parse and validate a head file, whatever extractor made it.

    InputMissingError when absent; LearnError naming the file for anything else wrong.
    """
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_FILE_BYTES + 1)
    except FileNotFoundError as exc:
        raise InputMissingError(f"{path}: learned head file not found") from exc
    except OSError as exc:
        raise LearnError(f"{path}: cannot read learned head file: {exc.strerror or exc}") from exc
    if len(data) > _MAX_FILE_BYTES:
        raise LearnError(f"{path}: learned head file larger than {_MAX_FILE_BYTES} bytes")
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LearnError(f"{path}: not a learned head file (corrupt or truncated JSON: {exc})") from exc
    try:
        return _parse(document, _Limits(threshold, max_examples))
    except LearnError as exc:
        raise LearnError(f"{path}: {exc}") from exc


def load_head(path: Path, extractor: ExtractorId, *, threshold: float = DEFAULT_THRESHOLD,
              max_examples: int = DEFAULT_MAX_EXAMPLES) -> LearnedHead:
    """A head file made with ``extractor``; LearnError naming the file when it was not."""
    head, made_with = read_head(path, threshold=threshold, max_examples=max_examples)
    if made_with.size != extractor.size:
        raise LearnError(f"{path}: embeddings of {made_with.size} values from {made_with.name}, but "
                         f"{extractor.name} makes {extractor.size}; {_what_to_do(made_with)}")
    if made_with.sha256 != extractor.sha256:
        raise LearnError(f"{path}: learned with the extractor {made_with.name} (sha256 {made_with.sha256[:12]}…), "
                         f"not the configured {extractor.name} (sha256 {extractor.sha256[:12]}…); "
                         f"{_what_to_do(made_with)}")
    return head


def _what_to_do(made_with: ExtractorId) -> str:
    return (f"its classes must be taught again, or learn.extractor set back to what made them "
            f"({made_with.name}: its .tflite file, or 'model' when it is the classifier itself)")


def load_or_empty(path: Path, extractor: ExtractorId, *, threshold: float = DEFAULT_THRESHOLD,
                  max_examples: int = DEFAULT_MAX_EXAMPLES) -> LearnedHead:
    """``load_head``, or an empty head when the file does not exist yet."""
    if not path.exists():
        return LearnedHead(extractor.size, {}, threshold, max_examples)
    return load_head(path, extractor, threshold=threshold, max_examples=max_examples)


def save_head(path: Path, head: LearnedHead, extractor: ExtractorId) -> None:
    """Replace ``path`` with ``head`` atomically and durably."""
    if head.size != extractor.size:
        raise LearnError(f"{path}: a head of {head.size}-value embeddings cannot be saved for the extractor "
                         f"{extractor.name} ({extractor.size} values)")
    document = {
        "version": FORMAT_VERSION,
        "extractor": {"name": extractor.name, "sha256": extractor.sha256},
        "embedding_size": head.size,
        "classes": [
            {"label": entry.label, "count": entry.count, "threshold": entry.threshold,
             "sum": base64.b64encode(entry.total.astype(_FLOAT).tobytes()).decode("ascii")}
            for entry in sorted(head.entries.values(), key=lambda e: e.label)
        ],
    }
    data = (json.dumps(document, ensure_ascii=False, indent=1) + "\n").encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise LearnError(f"{path}: cannot write learned head file: {exc.strerror or exc}") from exc
    log.debug("saved %d learned classes to %s", len(head), path)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the writers' advisory lock of a head file (blocks while another writer has it)."""
    lock = path.with_name(f".{path.name}.lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = lock.open("a")
    except OSError as exc:
        raise LearnError(f"{lock}: cannot open the learned head's lock file: {exc.strerror or exc}") from exc
    with handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def export_head(path: Path, destination: Path) -> LearnedHead:
    """Copy a valid head file to ``destination`` (validated, rewritten atomically)."""
    head, extractor = read_head(path)
    save_head(destination, head, extractor)
    return head


def import_head(source: Path, path: Path, extractor: ExtractorId, *, replace: bool = False,
                threshold: float = DEFAULT_THRESHOLD, max_examples: int = DEFAULT_MAX_EXAMPLES) -> LearnedHead:
    """Merge (or with ``replace``, substitute) the classes of ``source`` into the head file
    ``path``; both must fit ``extractor``. Returns the new head."""
    incoming = load_head(source, extractor, threshold=threshold, max_examples=max_examples)
    with locked(path):
        current = load_or_empty(path, extractor, threshold=threshold, max_examples=max_examples)
        head = current.merged(incoming, replace=replace)
        save_head(path, head, extractor)
    return head


def _parse(document: Any, limits: _Limits) -> tuple[LearnedHead, ExtractorId]:
    if not isinstance(document, dict):
        raise LearnError("not a learned head file (expected a JSON object)")
    version = document.get("version")
    if version != FORMAT_VERSION:
        raise LearnError(f"unsupported learned head format version {version!r} (this program reads "
                         f"version {FORMAT_VERSION})")
    made_with = _field(document, "extractor", dict)
    size = _field(document, "embedding_size", int)
    if size < 1:
        raise LearnError(f"embedding_size must be >= 1, not {size}")
    extractor = ExtractorId(_field(made_with, "name", str, "extractor.name"),
                            _field(made_with, "sha256", str, "extractor.sha256"), size)
    entries: dict[str, LearnedClass] = {}
    for index, item in enumerate(_field(document, "classes", list)):
        where = f"classes[{index}]"
        if not isinstance(item, dict):
            raise LearnError(f"{where}: must be an object")
        label = _field(item, "label", str, f"{where}.label")
        if label in entries:
            raise LearnError(f"{where}: the label {label!r} appears twice")
        total = _vector(_field(item, "sum", str, f"{where}.sum"), size, f"{where}.sum")
        raw_threshold = item.get("threshold")
        if raw_threshold is not None and (isinstance(raw_threshold, bool)
                                          or not isinstance(raw_threshold, int | float)):
            raise LearnError(f"{where}.threshold: must be a number or null, not {raw_threshold!r}")
        class_threshold = None if raw_threshold is None else float(raw_threshold)
        try:
            entries[label] = LearnedClass(label, total, _field(item, "count", int, f"{where}.count"), class_threshold)
        except LearnError as exc:
            raise LearnError(f"{where}: {exc}") from exc
    return LearnedHead(size, entries, limits.threshold, limits.max_examples), extractor


def _field(table: Mapping[str, Any], key: str, kind: type, where: str = "") -> Any:
    value = table.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise LearnError(f"{where or key}: missing or not a {kind.__name__} ({value!r})")
    return value


def _vector(text: str, size: int, where: str) -> np.ndarray:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise LearnError(f"{where}: not base64 ({exc})") from exc
    if len(raw) != size * _FLOAT.itemsize:
        raise LearnError(f"{where}: {len(raw) // _FLOAT.itemsize} values, but embedding_size is {size}")
    vector = np.frombuffer(raw, dtype=_FLOAT).astype(np.float64)
    if not np.all(np.isfinite(vector)):
        raise LearnError(f"{where}: contains non-finite values")
    return vector
