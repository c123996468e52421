"""Several cameras feeding one pipeline: a :class:`CaptureGroup` runs one
:class:`~edge_classifier.source.capture.Capture` per configured source, all putting
into one shared :class:`~edge_classifier.source.handoff.Handoff`.

The handoff keeps one lane per frame source (newest-frame slot for live sources, a
small FIFO for files) and the pipeline takes the lanes round robin, so every camera
gets its fair share of the accelerator and a file source still gets every frame. The
group offers the pipeline what one capture does (``get``, ``ended``, ``error``) and
adds up the captures' counters; one :class:`~edge_classifier.source.tally.Tally` is
shared by all, keyed by the name each frame reports.

Sources are added and removed while the others run (``add``/``remove``: SIGHUP); a
removed capture is stopped and its frames still waiting are taken as usual.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from paho.mqtt.client import topic_matches_sub

from edge_classifier.config.schema import SourceConfig
from edge_classifier.errors import ConfigError
from edge_classifier.service.watchdog import Intake
from edge_classifier.source.base import Frame, Source
from edge_classifier.source.capture import Capture, EventCallback
from edge_classifier.source.handoff import Handoff
from edge_classifier.source.tally import Tally

__all__ = ["CaptureGroup"]


class _AllEnded:
    """``is_set()`` once every capture has ended (what ``Pipeline`` asks of ``ended``)."""

    def __init__(self, group: CaptureGroup) -> None:
        self._group = group

    def is_set(self) -> bool:
        captures = self._group.captures
        return not captures or all(c.ended.is_set() for c in captures.values())


class CaptureGroup:
    """Named captures behind one round-robin handoff."""

    def __init__(self, *, max_names: int = 256) -> None:
        self.tally = Tally(max_names)
        self.handoff = Handoff(overwrite=True)
        self.captures: dict[str, Capture] = {}
        """By configured source name; replaced whole (copy on write) so readers need no lock."""
        self.configs: dict[str, SourceConfig] = {}
        self.ended = _AllEnded(self)
        self.retired = 0
        """Frames handed over by captures removed since (kept in ``frames``)."""
        self._retired_dropped = 0
        self._retired_failures = 0
        self._lock = threading.Lock()

    # --- membership (main thread) --------------------------------------------------------

    def add(self, name: str, source: Source, config: SourceConfig, *,
            on_event: EventCallback | None = None) -> Capture:
        """Start a capture of ``source`` under ``name``."""
        use_tally = getattr(source, "use_tally", None)
        if callable(use_tally):
            use_tally(self.tally)
        capture = Capture(source, fps=config.fps, rotate=config.rotate, flip=config.flip, roi=config.roi,
                          retry_initial=config.retry_initial, retry_max=config.retry_max,
                          on_event=on_event, handoff=self.handoff, tally=self.tally)
        with self._lock:
            if name in self.captures:
                raise ValueError(f"Invalid source name: {name!r} is running already")
            self.captures = {**self.captures, name: capture}
            self.configs = {**self.configs, name: config}
        return capture.start()

    def remove(self, name: str) -> None:
        """Stop and close the capture named ``name`` (its waiting frames are still taken)."""
        with self._lock:
            capture = self.captures.get(name)
            if capture is None:
                return
            self.captures = {k: v for k, v in self.captures.items() if k != name}
            self.configs = {k: v for k, v in self.configs.items() if k != name}
        capture.close()
        self.retired += capture.frames
        self._retired_dropped += capture.dropped + int(getattr(capture.source, "dropped", 0))
        self._retired_failures += capture.failures

    def names(self) -> list[str]:
        return list(self.captures)

    def capture(self, name: str) -> Capture | None:
        return self.captures.get(name)

    # --- what the pipeline and the daemon use (any thread) --------------------------------

    def get(self, timeout: float) -> Frame | None:
        """The next frame, round robin over the cameras with one waiting."""
        # Crossing: frames come from every capture thread through the shared handoff.
        return self.handoff.get(timeout)

    def wait_frame(self, timeout: float, rank: int = 0) -> bool:
        """Wait (at most ``timeout``) until any camera's frame is there for ``get``; of several
        consumers waiting, a frame wakes the lowest ``rank`` (see ``Handoff.wait_frame``)."""
        return self.handoff.wait_frame(timeout, rank)

    def wake_consumers(self) -> None:
        """Wake the consumers waiting in ``wait_frame`` (a stop or an end to look at)."""
        self.handoff.wake()

    @property
    def intake(self) -> Intake:
        """What the watchdog needs: frames taken by the pipeline and when it last asked."""
        return self.handoff.intake

    def _waiting(self) -> tuple[str, str] | None:
        """(name, why) of a source without frames, if no source delivers any; else None."""
        captures = self.captures
        if not captures:
            return "none", "no source configured"
        waiting = [(name, c.waiting) for name, c in captures.items()]
        if any(why is None for _, why in waiting):
            return None
        name, why = waiting[0]
        assert why is not None
        return name, why

    @property
    def waiting(self) -> str | None:
        """Why no frames come (every source is opening or failing), None while one delivers."""
        found = self._waiting()
        return found[1] if found else None

    @property
    def waiting_name(self) -> str:
        found = self._waiting()
        return found[0] if found else ""

    @property
    def error(self) -> ConfigError | None:
        """A source that failed for good, once every source has ended (else None)."""
        if not self.ended.is_set():
            return None
        return next((c.error for c in self.captures.values() if c.error is not None), None)

    @property
    def last_frame(self) -> Frame | None:
        frames = [c.last_frame for c in self.captures.values() if c.last_frame is not None]
        return max(frames, key=lambda f: f.captured, default=None)

    def last_frame_of(self, name: str) -> Frame | None:
        """The newest frame of the source named ``name``, or of the camera (frame source) ``name``."""
        capture = self.captures.get(name)
        if capture is not None:
            return capture.last_frame
        frames = [c.last_frame for c in self.captures.values()
                  if c.last_frame is not None and c.last_frame.source == name]
        return frames[0] if frames else None

    def capture_for(self, name: str) -> Capture | None:
        """The capture of the source named ``name``, or whose newest frame is camera ``name``."""
        capture = self.captures.get(name)
        if capture is not None:
            return capture
        for capture in self.captures.values():
            frame = capture.last_camera or capture.last_frame
            if frame is not None and frame.source == name:
                return capture
        return None

    def frames_of(self, name: str) -> Callable[[str], bool] | None:
        """Which frames (by ``Frame.source``) are those of ``name``: a configured source's (an mqtt
        wildcard's: those of every topic it matches too) or camera ``name``'s as results report it;
        None when nothing runs or ran under that name."""
        config = self.configs.get(name)
        if config is not None and config.wildcard:
            uri = config.uri
            return lambda source: source == name or topic_matches_sub(uri, source)
        if config is not None or name in self.tally.names():
            return lambda source: source == name
        return None

    @property
    def sources(self) -> list[Source]:
        return [c.source for c in self.captures.values()]

    @property
    def frames(self) -> int:
        return self.retired + sum(c.frames for c in self.captures.values())

    @property
    def dropped(self) -> int:
        """Frames replaced in the newest-frame slots."""
        return self._retired_dropped + sum(c.dropped for c in self.captures.values())

    @property
    def failures(self) -> int:
        return self._retired_failures + sum(c.failures for c in self.captures.values())

    def set_fps(self, fps: float, names: Iterable[str] | None = None) -> None:
        for name, capture in self.captures.items():
            if names is None or name in names:
                capture.set_fps(fps)

    def wait_ready(self, timeout: float) -> bool:
        """True once every source that can tell (mqtt: subscribed) is ready, at most ``timeout``
        in all; a source that failed to open (it is retrying) does not hold the others up."""
        ok = True
        for capture in self.captures.values():
            wait = getattr(capture.source, "wait_subscribed", None)
            if callable(wait) and not wait(timeout) and capture.failures == 0:
                ok = False
        return ok

    def stop(self) -> None:
        for capture in self.captures.values():
            capture.stop()
        self.handoff.close()

    def close(self) -> None:
        for capture in self.captures.values():
            capture.close()
        self.handoff.close()
