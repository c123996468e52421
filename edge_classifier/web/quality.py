"""A rough quality figure per learned class, from what the head keeps (pure numpy).

The head keeps, per class, the sum ``S`` of its ``n`` unit-length example embeddings, not
the examples. That still tells how well the examples agree: each example's dot product
with the *other* examples' sum averages ``(|S|^2 - n) / n`` exactly, and the other
examples' sum ``S - x_i`` has a squared length averaging ``|S|^2 (1 - 2/n) + 1``. Their
ratio estimates the held-out (leave-one-out) cosine: the cosine an example would have with
a class taught from the rest. Calibrated as the head calibrates (``2 cos - 1``), it is the
score a new frame like the examples can expect; near or under the threshold means the
examples disagree (mixed views, or a different thing among them). The nearest other class
(cosine of the two class vectors, calibrated) says which class it could be confused with.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edge_classifier.learn import LearnedHead
from edge_classifier.learn.head import calibrate

__all__ = ["class_quality", "held_out_cosine"]


def held_out_cosine(total: np.ndarray, count: int) -> float | None:
    """The estimated leave-one-out cosine of a class's examples; None below two examples."""
    if count < 2:
        return None
    squared = float(np.dot(total, total))
    dot = (squared - count) / count
    rest = squared * (1.0 - 2.0 / count) + 1.0
    return max(-1.0, min(1.0, dot / math.sqrt(max(rest, 1e-12))))


def _score(cosine: float) -> float:
    return float(calibrate(np.array([cosine], dtype=np.float32))[0])


def class_quality(head: LearnedHead) -> list[dict[str, Any]]:
    """Per class, by label: examples, threshold, estimated held-out score, nearest other class."""
    labels = sorted(head.entries)
    means = {label: head.entries[label].mean for label in labels}
    rows = []
    for label in labels:
        entry = head.entries[label]
        cosine = held_out_cosine(entry.total, entry.count)
        score = None if cosine is None else round(_score(cosine), 3)
        nearest, nearest_score = None, None
        for other in labels:
            if other != label:
                value = _score(float(np.dot(means[label], means[other])))
                if nearest_score is None or value > nearest_score:
                    nearest, nearest_score = other, round(value, 3)
        threshold = head.threshold_of(label)
        rows.append({"label": label, "examples": entry.count, "threshold": threshold, "held_out": score,
                     "agrees": None if score is None else score >= threshold,
                     "nearest": nearest, "nearest_score": nearest_score})
    return rows
