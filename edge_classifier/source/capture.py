"""The capture loop: runs a :class:`~edge_classifier.source.base.Source` in its own
thread and hands frames to the pipeline.

Per frame: read and fps cap (for a file, the other way round), rotate/flip/roi, hand
over. Live sources go through a latest-frame-wins slot (a slow consumer sees fresh
frames and the overwritten ones are counted in ``dropped``); files go through a small
blocking queue (backpressure, nothing dropped). See ``handoff.py``.

The fps cap differs by kind for the same reason: a live source keeps being read
and frames that come before the next one is due are discarded (``skipped``), so the
frame that is delivered is fresh rather than one that sat in a driver or TCP
buffer; a file source instead waits until the next frame is due, then reads it.

Failures: a ``SourceError`` from ``open`` or ``read`` closes the source, reports
``source_lost`` once, and the source is reopened after a backoff that starts at
``retry_initial`` and doubles up to ``retry_max``; the first good frame reports
``source_back`` with the downtime. The wait is on an Event, so ``stop()`` ends it
at once. A failing source never ends the capture; only a ``ConfigError``
(permanent: e.g. a missing package, an roi outside the frame) does, reported as
``source_failed`` and kept in ``error``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from edge_classifier.config.schema import SourceConfig
from edge_classifier.errors import ConfigError, SourceError
from edge_classifier.service.watchdog import Intake
from edge_classifier.source import transform
from edge_classifier.source.base import Frame, Source
from edge_classifier.source.handoff import Handoff
from edge_classifier.source.tally import Tally

__all__ = ["Capture", "EventCallback"]

log = logging.getLogger(__name__)

EventCallback = Callable[[str, dict[str, Any]], None]
"""``on_event(name, details)``: called from the capture thread, so it must be quick
and thread-safe (e.g. put onto a queue). Names: ``source_lost`` {source, reason},
``source_back`` {source, downtime_s, attempts}, ``source_failed`` {source, reason}.
``downtime_s`` is the time without frames: from the last frame read before the loss (a stall
is only noticed after the source's stall timeout) to the first one after."""


def _ignore(name: str, details: dict[str, Any]) -> None:
    pass


class Capture:
    """Runs ``source`` in a thread named ``capture``; the consumer calls :meth:`get`."""

    def __init__(self, source: Source, *, fps: float = 0.0, rotate: int = 0, flip: str = "none",
                 roi: tuple[int, ...] = (), retry_initial: float = 0.5, retry_max: float = 30.0,
                 on_event: EventCallback | None = None, capacity: int = 2,
                 join_timeout: float = 5.0, handoff: Handoff | None = None,
                 tally: Tally | None = None) -> None:
        """``handoff``: a hand-over shared with other captures (``CaptureGroup``); the
        capture then never closes it. Each frame goes into its own source's lane."""
        if retry_initial <= 0 or retry_max < retry_initial:
            raise ValueError(f"Invalid retry backoff: {retry_initial}..{retry_max}")
        self.source = source
        self.rotate = rotate
        self.flip = flip
        self.roi = tuple(roi)
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.join_timeout = join_timeout
        self._on_event = on_event or _ignore
        self._limiter = transform.FpsLimiter(fps)
        own = getattr(source, "tally", None)
        self.tally: Tally = tally if tally is not None else own if isinstance(own, Tally) else Tally()
        """Counters per frame source name (the mqtt source's own, with its per-topic counts)."""
        self._owns_handoff = handoff is None
        self._handoff = handoff if handoff is not None else Handoff(overwrite=source.live, capacity=capacity)
        self.dropped = 0
        """Live frames overwritten before the consumer took them."""
        self._stop = threading.Event()
        self.ended = threading.Event()
        """Set when no more frames will come: the source is exhausted, failed for good
        (see ``error``) or capture stopped. Frames already handed over can still be taken."""
        self.error: ConfigError | None = None
        self.frames = 0
        """Frames handed to the consumer side."""
        self.skipped = 0
        """Live frames discarded by the fps cap."""
        self.failures = 0
        """Failed opens and reads."""
        self.paused = False
        """Set by the main thread (the pause command naming this source): frames are read,
        so the camera stays open and fresh, but not handed over."""
        self.last_frame: Frame | None = None
        """The latest frame handed over (for snapshots); read from any thread."""
        self.last_camera: Frame | None = None
        """The latest frame as the source gave it, before rotate/flip/roi (a reference: the web
        view shows the ROI on it); read from any thread."""
        self.waiting: str | None = "opening"
        """Why no frames come now (``opening``, the last open/read error), None while they flow;
        written by the capture thread, read by the main loop for the status line."""
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._started = False
        self._closed = False

    @classmethod
    def from_config(cls, source: Source, config: SourceConfig, *,
                    on_event: EventCallback | None = None) -> Capture:
        """A capture of ``source`` with ``[source]``'s fps, transforms and backoff."""
        return cls(source, fps=config.fps, rotate=config.rotate, flip=config.flip, roi=config.roi,
                   retry_initial=config.retry_initial, retry_max=config.retry_max, on_event=on_event)

    def set_fps(self, fps: float) -> None:
        """Change the frame-rate cap (0 = none); the capture thread picks it up at its next frame."""
        self._limiter = transform.FpsLimiter(fps)  # one attribute store: atomic for the reader

    @property
    def fps(self) -> float:
        return self._limiter.fps

    def start(self) -> Capture:
        if not self._started:
            self._started = True
            self._thread.start()
        return self

    def get(self, timeout: float) -> Frame | None:
        """The next frame for the consumer; None on timeout or once ended and drained."""
        # Crossing: frames come from the capture thread through the handoff.
        return self._handoff.get(timeout)

    def wait_frame(self, timeout: float, rank: int = 0) -> bool:
        """Wait (at most ``timeout``) until a frame is there for ``get``; of several consumers
        waiting, a frame wakes the lowest ``rank`` (see ``Handoff.wait_frame``)."""
        return self._handoff.wait_frame(timeout, rank)

    def wake_consumers(self) -> None:
        """Wake the consumers waiting in ``wait_frame`` (a stop or an end to look at)."""
        self._handoff.wake()

    @property
    def intake(self) -> Intake:
        """What the watchdog needs: frames taken by the consumer and when it last asked."""
        return self._handoff.intake

    def stop(self) -> None:
        """Ask the capture thread to end and wait for it, at most ``join_timeout``.

        A source blocked in ``read`` is not interrupted: the thread then ends (and
        closes the source) when the read returns, bounded by the source's timeout.
        Idempotent.
        """
        # Crossing: the Event wakes a backoff wait, closing the handoff a blocked put,
        # and a source that can be woken (MQTT) ends a read that waits for a message.
        self._stop.set()
        if self._owns_handoff:
            self._handoff.close()
        wake = getattr(self.source, "wake", None)
        if callable(wake):
            wake()
        if self._started and self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(self.join_timeout)
            if self._thread.is_alive():
                log.warning("capture: %s still blocked after %.1fs; it ends when its read returns",
                            self.source.name, self.join_timeout)
        if not self._started:
            self.ended.set()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.stop()
            if not self._started:
                self.source.close()

    def __enter__(self) -> Capture:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # --- the capture thread -------------------------------------------------------------

    def _emit(self, name: str, details: dict[str, Any]) -> None:
        try:
            self._on_event(name, details)
        except Exception:
            log.exception("capture: on_event(%r) failed", name)

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self.source.close()
            if self._owns_handoff:
                self._handoff.close()
            self.ended.set()

    def _loop(self) -> None:
        source = self.source
        is_open = False
        backoff = self.retry_initial
        lost_since: float | None = None
        last_frame_at: float | None = None  # downtime counts from here: a stall is noticed late
        attempts = 0
        while not self._stop.is_set():
            # A file frame waits for its turn under the fps cap before it is read, so it is
            # stamped (ts, latency_ms.total) when it is due and needs no second stamp.
            if not source.live and not self._wait_turn():
                return
            try:
                if not is_open:
                    source.open()
                    is_open = True
                frame = source.read()
            except ConfigError as exc:
                self.error = exc
                log.error("capture: %s cannot run: %s", source.name, exc)
                self._emit("source_failed", {"source": source.name, "reason": str(exc)})
                return
            except Exception as exc:
                if self._stop.is_set():
                    return
                # SourceError is the expected kind; anything else from a backend is
                # treated the same way, so a flaky driver never ends the daemon.
                is_open = False
                source.close()
                self.failures += 1
                attempts += 1
                reason = str(exc) if isinstance(exc, SourceError) else repr(exc)
                self.waiting = reason
                if lost_since is None:
                    lost_since = last_frame_at if last_frame_at is not None else time.monotonic()
                    log.warning("capture: %s lost: %s (retrying in %.1fs)", source.name, reason, backoff)
                    self._emit("source_lost", {"source": source.name, "reason": reason})
                else:
                    log.debug("capture: %s still down: %s (retrying in %.1fs)", source.name, reason, backoff)
                if self._stop.wait(backoff):
                    return
                backoff = min(backoff * 2, self.retry_max)
                continue
            if frame is None:
                if not self._stop.is_set():
                    log.info("capture: %s ended", source.name)
                return
            backoff = self.retry_initial
            last_frame_at = time.monotonic()
            self.waiting = None
            if lost_since is not None:
                downtime = time.monotonic() - lost_since
                log.warning("capture: %s back after %.1fs", source.name, downtime)
                self._emit("source_back", {"source": source.name, "downtime_s": round(downtime, 3),
                                           "attempts": attempts})
                lost_since, attempts = None, 0
            if source.live and self._skip_live():
                continue
            self._limiter.mark(time.monotonic())
            try:
                frame = self._transform(frame)
            except ConfigError as exc:
                self.error = exc
                log.error("capture: %s: %s", source.name, exc)
                self._emit("source_failed", {"source": source.name, "reason": str(exc)})
                return
            self.last_frame = frame
            if self.paused:
                continue
            # Crossing: hand the frame to the consumer thread (blocks only for files).
            if not self._handoff.put(frame, self._stop, overwrite=source.live, on_drop=self._dropped):
                return
            self.frames += 1
            self.tally.frame(frame.source)

    def _dropped(self, frame: Frame) -> None:
        # Capture thread (the producer that replaced it).
        self.dropped += 1
        self.tally.count(frame.source, "dropped")

    def _skip_live(self) -> bool:
        """The fps cap for a live source: True to discard this frame (it came before its turn)."""
        if self._limiter.wait(time.monotonic()) > 0:
            self.skipped += 1
            return True
        return False

    def _wait_turn(self) -> bool:
        """The fps cap for a file source: wait until the next frame is due; False when stopped."""
        wait = self._limiter.wait(time.monotonic())
        return wait <= 0 or not self._stop.wait(wait)

    def _transform(self, frame: Frame) -> Frame:
        self.last_camera = frame
        if self.rotate == 0 and self.flip == "none" and not self.roi:
            return frame
        image = transform.apply(frame.image, degrees=self.rotate, mode=self.flip, roi=self.roi)
        return dataclasses.replace(frame, image=image)
