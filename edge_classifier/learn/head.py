"""The learned head: few-shot classes by weight imprinting, as a value (pure numpy).

A class is the L2-normalised mean of its examples' L2-normalised embeddings. The head keeps
the *unnormalised sum* and the count per class, so adding examples later updates the mean
exactly as if they had all come at once. A new head is returned by every change: a reader
(the daemon's frame loop) holding the old one never sees a half-updated head.

Calibration. The extractor's embeddings come after a ReLU6, so every component is >= 0
and the cosine of two of them lies in [0, 1], not [-1, 1]. Measured with MobileNet v1 1.0
224 on the shared test images (crops of 60-100 %, flips, brightness x0.6-1.4): the
held-out variants of a learned class have cosine 0.87-0.99 with its mean, while other
classes and unrelated photos (Grace Hopper, a parrot against cat/bird/flower) sit at
0.40-0.64, and flat or synthetic images (noise, gradients, grey) at 0.10-0.30. So

    score = clip(2 * cos - 1, 0, 1)

puts "unrelated" at 0-0.28, "the same thing" at 0.74-0.98. ``DEFAULT_THRESHOLD = 0.5`` (a
cosine of 0.75) lies in the middle of that gap.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping

import numpy as np

from edge_classifier.errors import LearnError
from edge_classifier.learn.embedder import normalise

__all__ = ["DEFAULT_MAX_EXAMPLES", "DEFAULT_THRESHOLD", "LearnedClass", "LearnedHead", "calibrate", "check_label"]

DEFAULT_THRESHOLD = 0.5
DEFAULT_MAX_EXAMPLES = 50
MAX_LABEL_LENGTH = 64


def calibrate(cosine: np.ndarray) -> np.ndarray:
    """Cosine similarity -> score in [0, 1]: ``clip(2 * cos - 1, 0, 1)`` (see the module docstring)."""
    return np.clip(2.0 * np.asarray(cosine, dtype=np.float32) - 1.0, 0.0, 1.0)


def check_label(label: str) -> str:
    """The label if usable (1-64 printable characters, no surrounding blanks), else LearnError."""
    if not isinstance(label, str) or not label or label != label.strip() or len(label) > MAX_LABEL_LENGTH \
            or not label.isprintable():
        raise LearnError(f"invalid label {label!r}: use 1-{MAX_LABEL_LENGTH} printable characters, "
                         "without leading or trailing blanks")
    return label


def _check_threshold(threshold: float | None, what: str) -> None:
    if threshold is not None and not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise LearnError(f"{what}: threshold must be between 0 and 1, not {threshold!r}")


@dataclasses.dataclass(frozen=True, slots=True)
class LearnedClass:
    """One learned class: the sum of its normalised example embeddings and their count."""

    label: str
    total: np.ndarray  # float64, unnormalised sum (its direction is the class mean)
    count: int
    threshold: float | None = None  # None: the head's default threshold

    def __post_init__(self) -> None:
        check_label(self.label)
        if self.count < 1:
            raise LearnError(f"class {self.label!r}: count must be >= 1, not {self.count}")
        if self.total.ndim != 1 or not np.all(np.isfinite(self.total)):
            raise LearnError(f"class {self.label!r}: the sum vector must be one row of finite numbers")
        _check_threshold(self.threshold, f"class {self.label!r}")

    @property
    def mean(self) -> np.ndarray:
        """The class vector: the L2-normalised mean of its examples."""
        return normalise(self.total)


@dataclasses.dataclass(frozen=True, slots=True)
class LearnedHead:
    """The learned classes for one extractor (``size``-long embeddings); immutable by use:
    ``with_examples`` and ``without`` return new heads."""

    size: int
    entries: Mapping[str, LearnedClass] = dataclasses.field(default_factory=dict)
    threshold: float = DEFAULT_THRESHOLD
    max_examples: int = DEFAULT_MAX_EXAMPLES
    _labels: tuple[str, ...] = dataclasses.field(init=False, repr=False, compare=False)
    _matrix: np.ndarray = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.size < 1:
            raise LearnError(f"embedding size must be >= 1, not {self.size}")
        if self.max_examples < 1:
            raise LearnError(f"max_examples must be >= 1, not {self.max_examples}")
        _check_threshold(self.threshold, "learned head")
        for label, entry in self.entries.items():
            if label != entry.label or entry.total.shape != (self.size,):
                raise LearnError(f"class {label!r}: expected a {self.size}-long sum vector named {label!r}")
        labels = tuple(self.entries)
        matrix = np.stack([entry.mean for entry in self.entries.values()]) if labels else \
            np.zeros((0, self.size), dtype=np.float32)
        # Derived once per head (frozen: set through object.__setattr__), so scoring a
        # frame is one matrix-vector product.
        object.__setattr__(self, "_labels", labels)
        object.__setattr__(self, "_matrix", matrix.astype(np.float32))

    def with_examples(self, label: str, embeddings: Iterable[np.ndarray] | np.ndarray,
                      threshold: float | None = None) -> LearnedHead:
        """A head with ``embeddings`` (each re-normalised) added to ``label``, created if new.

        Up to ``max_examples`` the class vector is the exact mean of all examples. Beyond
        it the count stays at ``max_examples`` and the old sum is scaled down to that many
        examples' weight before each new one is added: a moving average, so a class taught
        over months follows the latest examples instead of freezing. ``threshold`` (if not
        None) sets the class's own threshold; else an existing one is kept.
        """
        check_label(label)
        _check_threshold(threshold, f"class {label!r}")
        rows = [np.asarray(e, dtype=np.float32).reshape(-1) for e in embeddings]
        if not rows:
            raise LearnError(f"class {label!r}: no examples given")
        for row in rows:
            if row.shape != (self.size,) or not np.all(np.isfinite(row)):
                raise LearnError(f"class {label!r}: an example embedding has {row.size} values or non-finite "
                                 f"ones; this head needs {self.size} finite values")
        old = self.entries.get(label)
        total = old.total.copy() if old else np.zeros(self.size, dtype=np.float64)
        count = old.count if old else 0
        kept = threshold if threshold is not None else (old.threshold if old else None)
        for row in rows:
            if count >= self.max_examples:
                total *= (self.max_examples - 1) / count
                count = self.max_examples - 1
            total += normalise(row)
            count += 1
        entries = dict(self.entries)
        entries[label] = LearnedClass(label, total, count, kept)
        return dataclasses.replace(self, entries=entries)

    def without(self, label: str) -> LearnedHead:
        """A head without ``label``; LearnError when it has no such class."""
        if label not in self.entries:
            known = ", ".join(sorted(self.entries)) or "none"
            raise LearnError(f"no learned class {label!r} (learned: {known})")
        return dataclasses.replace(self, entries={k: v for k, v in self.entries.items() if k != label})

    def merged(self, other: LearnedHead, replace: bool = False) -> LearnedHead:
        """``other``'s classes added to these: a label in both gets both sums and counts
        (and ``other``'s threshold when set). With ``replace`` the result is ``other``'s
        classes only. The sizes must match."""
        if other.size != self.size:
            raise LearnError(f"cannot merge a head of {other.size}-value embeddings into one of {self.size}")
        entries = {} if replace else dict(self.entries)
        for label, entry in other.entries.items():
            mine = entries.get(label)
            if mine is not None:
                threshold = entry.threshold if entry.threshold is not None else mine.threshold
                count = min(mine.count + entry.count, max(self.max_examples, mine.count, entry.count))
                total = (mine.total + entry.total) * (count / (mine.count + entry.count))
                entry = LearnedClass(label, total, count, threshold)
            entries[label] = entry
        return dataclasses.replace(self, entries=entries)

    def classes(self) -> list[tuple[str, int]]:
        """(label, example count) per class, by label."""
        return sorted((label, entry.count) for label, entry in self.entries.items())

    def threshold_of(self, label: str) -> float:
        """The threshold ``best`` applies to ``label``: its own, else the head's default."""
        own = self.entries[label].threshold
        return self.threshold if own is None else own

    def cosines(self, embedding: np.ndarray) -> np.ndarray:
        """The raw cosine of ``embedding`` (re-normalised) with each class, in ``entries`` order."""
        vector = normalise(embedding)
        if vector.shape != (self.size,):
            raise LearnError(f"an embedding of {vector.size} values given to a head of {self.size}")
        result: np.ndarray = self._matrix @ vector
        return result

    def score(self, embedding: np.ndarray) -> list[tuple[str, float]]:
        """(label, calibrated score) for every class, highest first (ties by label)."""
        scores = calibrate(self.cosines(embedding))
        pairs = [(label, float(s)) for label, s in zip(self._labels, scores, strict=True)]
        return sorted(pairs, key=lambda pair: (-pair[1], pair[0]))

    def best(self, embedding: np.ndarray) -> tuple[str, float] | None:
        """The highest-scoring class whose score reaches its threshold, or None ("unknown")."""
        for label, value in self.score(embedding):
            if value >= self.threshold_of(label):
                return label, value
        return None

    def __len__(self) -> int:
        return len(self.entries)
