"""Scores from raw model outputs: dequantize, softmax when needed, filter, top-k.

The math, as in pycoral's classification adapter:

- dequantize: ``real = scale * (q - zero_point)``; a float output (scale 0) is already real;
- probabilities: a softmax classifier's outputs are already in [0, 1], so they are used as
  they are; anything else (logits) goes through a softmax. For a quantized output the
  quantization says it: a softmax quantized by the TFLite converter covers exactly [0, 1)
  (scale 1/256, zero point 0 for uint8 or -128 for int8). Its values do not sum to 1:
  the many tiny probabilities round down to 0 (0.78 is seen on real models), so the sum
  cannot decide. A float output is judged by its values: within [0, 1] and summing to 1;
- top-k: ``argpartition`` finds the k best in O(n), then only those k are sorted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

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

_SUM_TOLERANCE = 0.01  # float outputs only: float32 softmax sums to 1 far closer than this


def dequantize(raw: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Real values of a model output, as float32."""
    if scale == 0:
        return raw.astype(np.float32, copy=False)
    return (scale * (raw.astype(np.float32) - zero_point)).astype(np.float32, copy=False)


def quantized_probability(dtype: type, scale: float, zero_point: int) -> bool | None:
    """Whether an integer output's quantization covers exactly [0, 1]; None for float outputs."""
    if scale == 0 or not np.issubdtype(dtype, np.integer):
        return None
    info = np.iinfo(dtype)
    low = scale * (info.min - zero_point)
    high = scale * (info.max - zero_point)
    return abs(low) < 1e-9 and abs(high - 1.0) <= 2 * scale


def is_probability(values: np.ndarray) -> bool:
    """True when float ``values`` already look like a probability distribution."""
    if values.size == 0:
        return False
    return bool(values.min() >= -1e-6 and values.max() <= 1 + 1e-6 and abs(values.sum() - 1) <= _SUM_TOLERANCE)


def softmax(values: np.ndarray) -> np.ndarray:
    shifted = np.exp(values - values.max())
    return (shifted / shifted.sum()).astype(np.float32, copy=False)


def score_table(dtype: type, scale: float, zero_point: int) -> np.ndarray | None:
    """For an 8-bit quantized softmax output: the score of each of the 256 raw values (index by
    the raw bytes, ``raw.view(np.uint8)``), exactly what :func:`to_scores` gives, in one lookup
    instead of four array operations; None for any other output."""
    if np.dtype(dtype).itemsize != 1 or not quantized_probability(dtype, scale, zero_point):
        return None
    return dequantize(np.arange(256, dtype=np.uint8).view(dtype), scale, zero_point)


def to_scores(raw: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """One float32 score in [0, 1] per class, from a raw output of any shape."""
    values = dequantize(raw.reshape(-1), scale, zero_point)
    probability = quantized_probability(raw.dtype.type, scale, zero_point)
    if probability is None:
        probability = is_probability(values)
    return values if probability else softmax(values)


@dataclasses.dataclass(frozen=True, slots=True)
class LabelFilter:
    """Which class ids may be reported: an allow list (if any) minus a deny list, by label."""

    mask: np.ndarray | None  # bool per class, or None for "everything"

    @classmethod
    def build(cls, labels: Sequence[str], allow: Sequence[str] = (), deny: Sequence[str] = ()) -> LabelFilter:
        """A filter over ``labels``; unknown names in allow/deny raise ValueError naming them."""
        if not allow and not deny:
            return cls(None)
        known = set(labels)
        unknown = [name for name in (*allow, *deny) if name not in known]
        if unknown:
            raise ValueError(f"labels not in the model: {', '.join(repr(n) for n in unknown)}")
        names = np.asarray(labels, dtype=object)
        mask = np.isin(names, list(allow)) if allow else np.ones(len(labels), dtype=bool)
        if deny:
            mask &= ~np.isin(names, list(deny))
        return cls(mask)


def top_k(
    scores: np.ndarray, k: int, threshold: float = 0.0, allowed: LabelFilter | None = None
) -> list[tuple[int, float]]:
    """The ``k`` best (class id, score) pairs with score >= threshold, best first.

    Ties are broken by the lower class id, so results are deterministic.
    """
    candidates = scores
    if allowed is not None and allowed.mask is not None:
        candidates = np.where(allowed.mask, scores, -np.inf)
    k = min(k, candidates.size)
    if k <= 0:
        return []
    best = np.argpartition(-candidates, k - 1)[:k]
    edge = candidates[best].min()
    if edge == edge:  # (not NaN) the partition picks any of the classes tied with the k-th: take the lowest ids
        best = np.concatenate((np.flatnonzero(candidates > edge), np.flatnonzero(candidates == edge)))[:k]
    ordered = sorted(best.tolist(), key=lambda i: (-candidates[i], i))
    return [(i, float(scores[i])) for i in ordered if candidates[i] >= threshold]
