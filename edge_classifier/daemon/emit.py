"""Where a finished frame goes: the pipeline's ``emit`` hands each outcome to the publisher,
the per-source tally, the web view, the model control and the watchdog; and the one-line
status systemd shows, made from what was emitted.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from edge_classifier.daemon import report
from edge_classifier.daemon.pipeline import ModelSet, Outcome
from edge_classifier.publish.publisher import Publisher
from edge_classifier.service.watchdog import WatchdogGate
from edge_classifier.source.tally import Tally

if TYPE_CHECKING:
    from edge_classifier.daemon.modelctl import ModelControl
    from edge_classifier.source.group import CaptureGroup

__all__ = ["Emitter", "StatusLine"]


class Emitter:
    """The pipeline's emit callback (``Pipeline(..., emit)``)."""

    def __init__(self, publisher: Publisher, tally: Tally, watchdog: WatchdogGate, *,
                 web: Any = None, modelctl: ModelControl | None = None) -> None:
        self.publisher = publisher
        self.tally = tally
        self.watchdog = watchdog
        self.web = web  # edge_classifier.web.WebServer while [web] is enabled
        self.modelctl = modelctl
        self.classified = 0
        """Frames classified (written by the pipeline's workers, read by the main loop)."""

    def __call__(self, outcome: Outcome) -> None:
        # Crossing: called from a pipeline worker, in frame order; the publisher enqueues it, or
        # publishes it in this thread when nothing is queued (never waiting for its lock).
        self.publisher.submit(outcome)
        report.count_outcome(self.tally, outcome)
        if self.web is not None:
            self.web.observe(outcome)
        if self.modelctl is not None:
            self.modelctl.observe(outcome)
        if outcome.classification is not None:
            # Every classified frame counts for the watchdog, published or not (change mode).
            self.classified += 1
            self.watchdog.frame_done()


class StatusLine:
    """systemd's STATUS=: the rate since the previous line, the model, waiting or paused."""

    def __init__(self) -> None:
        self._last = (time.monotonic(), 0)

    def __call__(self, models: ModelSet | None, classified: int, *, paused: bool,
                 capture: CaptureGroup | None) -> str:
        if models is None:
            return "starting"
        info = models.info
        now = time.monotonic()
        then, before = self._last
        self._last = (now, classified)
        fps = (classified - before) / max(1e-6, now - then)
        pause = ", paused" if paused else ""
        waiting = capture.waiting if capture else None
        if waiting is not None:
            name = capture.waiting_name if capture else "?"
            return f"waiting for camera {name} ({waiting}), model {info.name} on {info.accelerator}{pause}"
        return f"{fps:.1f} fps, model {info.name} on {info.accelerator}, {classified} frames{pause}"
