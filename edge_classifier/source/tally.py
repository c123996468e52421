"""Per-camera counters: what happened to the frames of each ``Frame.source``.

One :class:`Tally` per capture, keyed by the name a frame reports (the source's name,
or for an ``mqtt`` wildcard the topic its image came on). Every stage that counts a
frame counts it here, so ``{prefix}/stats`` can say for each camera where its frames
went: ``received`` (images that arrived, mqtt), ``frames`` (handed to the pipeline),
``dropped`` (replaced by a newer one before they were taken: in the mqtt source or the
newest-frame slot), ``rejected`` (not an image within the limits), ``classified``,
``failed``, latency percentiles and the age of the last frame.

The table is bounded (``max_names``): the name idle the longest is evicted, and its
counts move into ``evicted`` totals, so a wildcard over thousands of topics never
grows it without limit and no count is lost. Thread-safe: the capture thread, paho's
network thread and the pipeline's workers all write to it (one lock).
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from typing import Any

from edge_classifier.daemon import telemetry

__all__ = ["Counts", "Tally"]

_LATENCIES = 256  # per name: enough for p50/p95 since the last stats message


@dataclasses.dataclass(slots=True)
class Counts:
    """One name's counters (mutable: updated under the tally's lock)."""

    received: int = 0
    frames: int = 0
    dropped: int = 0
    rejected: int = 0
    classified: int = 0
    failed: int = 0
    last_frame: float = 0.0  # time.monotonic() of the last frame handed over
    index: int = 0  # the last frame number given out (Frame.index counts per source)
    latencies: collections.deque[float] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=_LATENCIES))

    def add(self, other: Counts) -> None:
        for name in ("received", "frames", "dropped", "rejected", "classified", "failed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


class Tally:
    """Counters per frame source name, bounded to ``max_names`` names (idle ones evicted)."""

    def __init__(self, max_names: int = 64) -> None:
        if max_names < 1:
            raise ValueError(f"Invalid tally size: {max_names}")
        self.max_names = max_names
        self.evicted = 0
        """Names evicted to keep the table bounded (their counts are in ``evicted_counts``)."""
        self.evicted_counts = Counts()
        self._names: collections.OrderedDict[str, Counts] = collections.OrderedDict()
        self._lock = threading.Lock()

    def _counts(self, name: str) -> Counts:
        """Caller holds the lock. The name's counts, most recently active last."""
        counts = self._names.get(name)
        if counts is None:
            if len(self._names) >= self.max_names:
                _, idle = self._names.popitem(last=False)
                self.evicted += 1
                self.evicted_counts.add(idle)
            counts = self._names[name] = Counts()
        else:
            self._names.move_to_end(name)
        return counts

    def count(self, name: str, field: str, n: int = 1) -> None:
        """Add ``n`` to one counter (``received``, ``dropped``, ``rejected``, ``failed``)."""
        with self._lock:
            counts = self._counts(name)
            setattr(counts, field, getattr(counts, field) + n)

    def next_index(self, name: str) -> int:
        """The next frame number of ``name``, from 1 (a source's reader; an evicted name starts over)."""
        with self._lock:
            counts = self._counts(name)
            counts.index += 1
            return counts.index

    def frame(self, name: str) -> None:
        """A frame of ``name`` was handed to the pipeline (capture thread)."""
        with self._lock:
            counts = self._counts(name)
            counts.frames += 1
            counts.last_frame = time.monotonic()

    def classified(self, name: str, total_ms: float) -> None:
        """A frame of ``name`` was classified in ``total_ms`` (a pipeline worker)."""
        with self._lock:
            counts = self._counts(name)
            counts.classified += 1
            counts.latencies.append(total_ms)

    def names(self) -> list[str]:
        with self._lock:
            return list(self._names)

    def get(self, name: str) -> Counts:
        """A copy of ``name``'s counts (zeros if unknown)."""
        with self._lock:
            counts = self._names.get(name)
            if counts is None:
                return Counts()
            copy = dataclasses.replace(counts, latencies=collections.deque(counts.latencies, maxlen=_LATENCIES))
            return copy

    def totals(self) -> Counts:
        """Every name's counts added up, evicted ones included."""
        with self._lock:
            total = Counts()
            total.add(self.evicted_counts)
            for counts in self._names.values():
                total.add(counts)
            return total

    def report(self, now: float | None = None) -> dict[str, dict[str, Any]]:
        """Per name: the counters, latency p50/p95 (ms) and the age of the last frame (s)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            items = [(name, dataclasses.replace(c, latencies=collections.deque(c.latencies)))
                     for name, c in self._names.items()]
        out: dict[str, dict[str, Any]] = {}
        for name, c in items:
            latencies = list(c.latencies)
            out[name] = {
                "received": c.received, "frames": c.frames, "dropped": c.dropped, "rejected": c.rejected,
                "classified": c.classified, "failed": c.failed,
                "latency_ms_p50": telemetry.percentile(latencies, 50),
                "latency_ms_p95": telemetry.percentile(latencies, 95),
                "last_frame_age_s": round(now - c.last_frame, 3) if c.last_frame else None,
            }
        return out
