"""The live side of the web view: the newest classified frame per source, and the stream.

``observe`` runs in the pipeline worker that emits each outcome (in frame order), so it
does almost nothing: it keeps a *reference* to the outcome (no copy, no encoding) as the
newest of its source; only while someone watches does it wake the viewers and hand the
result payload to the stream's followers.
A preview JPEG is encoded in the request thread of a viewer that asks for it, scaled down
to ``preview_width``, once per frame however many viewers ask (the last one is cached).
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from typing import Any

import cv2
import numpy as np

from edge_classifier.daemon.pipeline import Outcome
from edge_classifier.publish.payload import result_payload

__all__ = ["LiveView", "Preview", "Subscription"]

MAX_SOURCES = 32  # newest frames kept at most (an MQTT source names frames by topic)
_QUEUE = 256  # stream items kept per subscriber before the oldest are dropped


@dataclasses.dataclass(frozen=True, slots=True)
class Preview:
    """One encoded preview image and the result of the frame it shows."""

    jpeg: bytes
    result: dict[str, Any]
    width: int
    height: int
    scale: float  # preview pixels per frame pixel


class Subscription:
    """One follower of the stream (an open ``/api/stream`` request): event payloads, and
    result payloads if it asked for them."""

    def __init__(self, results: bool = True) -> None:
        self.results = results
        self.items: collections.deque[tuple[str, Any]] = collections.deque(maxlen=_QUEUE)


class LiveView:
    def __init__(self, device: str, preview_width: int) -> None:
        self.device = device
        self.preview_width = preview_width
        self._latest: dict[str, Outcome] = {}
        self._changed = threading.Condition()
        self._subscribers: list[Subscription] = []  # open streams
        self._viewers = 0  # requests waiting for a newer frame
        self._want_results = False  # some stream follows results (the page follows events only)
        self._cached: tuple[Outcome, int, Preview] | None = None  # (outcome, width, its preview)
        self._encode_lock = threading.Lock()
        self.closed = False

    # --- pipeline and publish threads -------------------------------------------------------

    def observe(self, outcome: Outcome) -> None:
        """A classified (or failed) frame, in frame order (pipeline worker thread)."""
        if outcome.classification is None:
            return
        source = outcome.frame.source
        if source in self._latest or len(self._latest) < MAX_SOURCES:
            self._latest[source] = outcome  # one reference: the frame is not copied
        if self._viewers or self._want_results:
            # Only while someone watches: the payload is built here (a few microseconds), so
            # the followers' queues never hold frames.
            payload = self.payload(outcome) if self._want_results else None
            self._push("result", payload)

    def event(self, payload: dict[str, Any]) -> None:
        """An event the publisher sent (publish thread)."""
        if self._subscribers:
            self._push("event", payload)

    def _push(self, kind: str, item: Any) -> None:
        # Crossing: from the pipeline/publish threads to the request threads waiting in
        # next_items / wait_newer.
        with self._changed:
            if item is not None:
                for subscription in self._subscribers:
                    if kind != "result" or subscription.results:
                        subscription.items.append((kind, item))
            self._changed.notify_all()

    # --- request threads --------------------------------------------------------------------

    def sources(self) -> list[str]:
        return sorted(self._latest)

    def latest(self, source: str) -> Outcome | None:
        return self._latest.get(source)

    def wait_newer(self, source: str, after: int, timeout: float) -> Outcome | None:
        """The newest outcome of ``source`` unless its frame index is ``after``, waiting up
        to ``timeout`` for another; None if none came (or the view closed)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            self._viewers += 1
            try:
                while not self.closed:
                    outcome = self._latest.get(source)
                    if outcome is not None and outcome.frame.index != after:
                        return outcome
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    self._changed.wait(left)
                return None
            finally:
                self._viewers -= 1

    def subscribe(self, results: bool = True) -> Subscription:
        subscription = Subscription(results)
        with self._changed:
            self._subscribers.append(subscription)
            self._want_results = any(s.results for s in self._subscribers)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._changed:
            if subscription in self._subscribers:
                self._subscribers.remove(subscription)
            self._want_results = any(s.results for s in self._subscribers)

    def next_items(self, subscription: Subscription, timeout: float) -> list[tuple[str, Any]]:
        """What came for ``subscription`` since the last call, waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            # Woken for every frame while someone views; wait on until something is for us.
            while not subscription.items and not self.closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            items = list(subscription.items)
            subscription.items.clear()
        return items

    def payload(self, outcome: Outcome) -> dict[str, Any]:
        """The result payload of ``outcome``, as MQTT's ``{prefix}/result`` carries it."""
        assert outcome.classification is not None
        return result_payload(self.device, outcome.frame, outcome.classification)

    def preview(self, outcome: Outcome, width: int | None = None) -> Preview:
        """``outcome``'s frame as a JPEG at most ``width`` (default ``preview_width``) wide."""
        width = min(width or self.preview_width, self.preview_width)
        with self._encode_lock:
            cached = self._cached
            if cached is not None and cached[0] is outcome and cached[1] == width:
                return cached[2]
            preview = self.encode(outcome.frame.image, outcome.frame.rgb, width, self.payload(outcome))
            self._cached = (outcome, width, preview)
            return preview

    def encode(self, image: np.ndarray, rgb: bool, width: int | None, result: dict[str, Any]) -> Preview:
        """``image`` as a JPEG at most ``width`` (and ``preview_width``) wide."""
        width = min(width or self.preview_width, self.preview_width)
        height, full = image.shape[0], image.shape[1]
        scale = min(1.0, width / full)
        if scale < 1.0:
            size = (max(1, round(full * scale)), max(1, round(height * scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        if rgb:
            image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 75])
        if not ok:
            raise ValueError(f"could not encode a {full}x{height} image as JPEG")
        return Preview(data.tobytes(), result, int(image.shape[1]), int(image.shape[0]), scale)

    def close(self) -> None:
        with self._changed:
            self.closed = True
            self._changed.notify_all()
