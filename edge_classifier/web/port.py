"""What the web side may see of the daemon and do to it: one small interface.

The web view is one more consumer of the state the MQTT side reads (``daemon.report``,
the learned head, the model store) and sends commands through the same path as MQTT: a
:class:`Request` on the daemon's control queue, carried out by the main loop's
``CommandChannel.answer`` and ``CommandHandler``, whose reply comes back through the
request's ``answer`` callback instead of going to the broker. There is no second way in.

Everything here runs in the web server's request threads; reads of the daemon's state are
single attribute reads of objects the other threads replace whole (the model set, the
learned head), as the status command's are.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_classifier.control.requests import Request
from edge_classifier.daemon import report
from edge_classifier.source import transform

if TYPE_CHECKING:
    from edge_classifier.control.device import Device
    from edge_classifier.learn import LearnedHead

__all__ = ["COMMAND_TIMEOUT", "DaemonPort"]

COMMAND_TIMEOUT = 75.0  # longer than a `learn {"frames": N}` may take (60 s) and a model swap


class DaemonPort:
    """The web side's view of one running daemon (a :class:`Device`)."""

    def __init__(self, daemon: Device) -> None:
        self._daemon = daemon
        self.device = daemon.config.device.id
        self.prefix = daemon.topics.prefix
        self._stats_lock = threading.Lock()
        self._stats_last = (time.monotonic(), 0, 0)

    # --- state (read) ---------------------------------------------------------------------

    @property
    def max_payload(self) -> int:
        return self._daemon.config.commands.max_payload

    @property
    def ready(self) -> bool:
        return self._daemon.running and self._daemon.models is not None

    def status(self) -> dict[str, Any]:
        """The status command's state (CONTRACT: ``/api/status``)."""
        return report.state(self._daemon)

    def view_settings(self) -> dict[str, Any]:
        """What the page needs to draw the model's region: how frames are fitted, the ROI."""
        config = self._daemon.config
        return {"resize": config.model.resize, "roi": list(config.source.roi)}

    def camera(self, source: str) -> tuple[np.ndarray, bool, tuple[int, ...]] | None:
        """The newest camera frame of ``source`` rotated and flipped but not cropped, whether it
        is RGB, and the ROI on it (empty: the whole frame); None without one."""
        group = self._daemon.capture
        capture = group.capture_for(source) if group is not None else None
        frame = getattr(capture, "last_camera", None)
        if capture is None or frame is None or frame.source != source:
            return None
        image = transform.flip(transform.rotate(frame.image, capture.rotate), capture.flip)
        return image, frame.rgb, capture.roi

    def stats(self, latencies: list[float]) -> dict[str, Any]:
        """``{prefix}/stats``'s fields; rates since the web's previous call (the MQTT stats
        keep their own window)."""
        now = time.monotonic()
        with self._stats_lock:
            body = report.stats_since(self._daemon, self._stats_last, latencies, now)
            self._stats_last = (now, body["frames"], body["results"])
        return body

    def head(self) -> LearnedHead | None:
        """The learned classes in use, or None when learning is off."""
        learning = self._daemon.learning
        return learning.head if learning is not None else None

    def models(self) -> list[dict[str, Any]]:
        """The store's models, as ``models list`` shows them (each probed in a child process)."""
        from edge_classifier.store.store import list_models

        active = self._daemon.models
        entries = list_models(self._daemon.config.model.dir, active.info.path if active else None)
        return [entry.as_dict() for entry in entries]

    def counters(self) -> dict[str, Any]:
        """The raw counters /metrics exposes (read at scrape time)."""
        daemon = self._daemon
        publisher = daemon.publisher
        supervisor = daemon.modelctl.supervisor if daemon.modelctl else None
        models = daemon.models
        capture = daemon.capture
        return {
            "source": ", ".join(capture.names()) if capture is not None else "",
            "frames_in": capture.frames if capture is not None else 0,
            "dropped": report.dropped(daemon) if capture is not None else 0,
            "undecodable": sum(int(getattr(s, "undecodable", 0)) for s in capture.sources) if capture else 0,
            "results": publisher.results if publisher is not None else 0,
            "events": publisher.events if publisher is not None else 0,
            "spool_depth": len(publisher.outbox) if publisher is not None else 0,
            "spool_dropped": publisher.outbox.dropped if publisher is not None else 0,
            "accelerator": models.info.accelerator if models is not None else "",
            "model": models.info.name if models is not None else "",
            "fallbacks": supervisor.fallbacks if supervisor else 0,
            "accelerator_state": supervisor.state if supervisor else "ok",
            "connected": bool(daemon.connection and daemon.connection.connected.is_set()),
            "mqtt": daemon.connection is not None,
            "paused": daemon.paused,
            "swaps": daemon.modelctl.swaps if daemon.modelctl else 0,
        }

    # --- commands (the MQTT path) -----------------------------------------------------------

    def command(self, name: str, arguments: dict[str, Any], timeout: float = COMMAND_TIMEOUT) -> dict[str, Any]:
        """Carry out command ``name`` as if it came on ``{prefix}/cmd/{name}``; its reply body."""
        done = threading.Event()
        replies: list[dict[str, Any]] = []

        def answer(reply: dict[str, Any]) -> None:
            # Crossing: called on the daemon's main thread; hands the reply to this one.
            replies.append(reply)
            done.set()

        payload = json.dumps(arguments).encode("utf-8")
        request = Request(topic=f"{self.prefix}/cmd/{name}", payload=payload, answer=answer)
        # Crossing: the main loop takes the request from the control queue, as from MQTT.
        self._daemon.submit(request)
        if not done.wait(timeout):
            return {"command": name, "ok": False, "error": f"no reply within {timeout:.0f} s"}
        return replies[0]

    def follow_events(self, callback: Callable[[dict[str, Any]], None]) -> None:
        """Call ``callback`` with every event payload the publisher sends (in its thread)."""
        publisher = self._daemon.publisher
        if publisher is not None:
            publisher.on_event = callback
