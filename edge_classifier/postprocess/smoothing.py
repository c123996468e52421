"""Score smoothing: the mean score vector over the last N frames of one source and model."""

from __future__ import annotations

import collections

import numpy as np

__all__ = ["ScoreWindow"]


class ScoreWindow:
    """A running mean over the last ``size`` score vectors, kept per key (source, model).

    A new key (another source, or a swapped model) starts its own window, so scores of
    different models are never mixed.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"Invalid smoothing window: {size}")
        self.size = size
        self._windows: dict[tuple[str, str], collections.deque[np.ndarray]] = {}
        self._sums: dict[tuple[str, str], np.ndarray] = {}

    def add(self, key: tuple[str, str], scores: np.ndarray) -> np.ndarray:
        """Add one frame's scores; returns the mean of the window including it."""
        window = self._windows.get(key)
        if window is None or self._sums[key].shape != scores.shape:
            window = self._windows[key] = collections.deque()
            self._sums[key] = np.zeros(scores.shape, np.float64)
        window.append(scores)
        self._sums[key] += scores
        if len(window) > self.size:
            self._sums[key] -= window.popleft()
        return (self._sums[key] / len(window)).astype(np.float32)
