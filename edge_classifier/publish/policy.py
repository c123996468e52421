"""Which results go out: ``every`` or on ``change``, at most one per ``min_interval``.

``change`` publishes a result when its top label differs from the last published one and
leads it by at least ``hysteresis`` (the new label's score minus the old label's score in
the same result, 0 when the old label is not in it), so two labels scoring about the same
do not flap. An empty top (nothing above the threshold) is a label of its own. While the
label stays, the result is republished every ``heartbeat`` seconds (0: never), so a
consumer sees the device is alive and the current scores.

Pure logic with the clock passed in; the publisher thread is its only user.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from edge_classifier.results import Prediction

__all__ = ["PublishPolicy"]


@dataclasses.dataclass(slots=True)
class PublishPolicy:
    mode: str = "every"
    hysteresis: float = 0.05
    min_interval: float = 0.0
    heartbeat: float = 60.0
    _label: str | None = None
    _last: float | None = None
    suppressed: int = 0  # results not published by design (change mode, min_interval)

    def __post_init__(self) -> None:
        if self.mode not in ("every", "change"):
            raise ValueError(f"Invalid publish mode: {self.mode!r}")

    def decide(self, top: Sequence[Prediction], now: float) -> bool:
        """True when this result should be published; records it as published if so."""
        if self._last is not None and now - self._last < self.min_interval:
            self.suppressed += 1
            return False
        label = top[0].label if top else None
        publish = self.mode == "every" or self._last is None
        if not publish and label != self._label:
            old_score = next((p.score for p in top if p.label == self._label), 0.0)
            new_score = top[0].score if top else 0.0
            publish = label is None or new_score - old_score >= self.hysteresis
        if not publish and self.heartbeat and now - self._last >= self.heartbeat:  # type: ignore[operator]
            publish = True
        if publish:
            self._label = label
            self._last = now
        else:
            self.suppressed += 1
        return publish
