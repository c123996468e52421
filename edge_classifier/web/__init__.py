"""The local web view: live view, teaching, status API and Prometheus metrics.

- ``auth``: the password (or bearer token) and when one is required;
- ``port``: the daemon as the web side sees it (state to read, the command path to use);
- ``live``: the newest frame per source (by reference) and the result/event stream;
- ``metrics``: ``/metrics`` (prometheus_client);
- ``quality``: a rough quality figure per learned class;
- ``routes``: the HTTP routes (bottle); ``server``: the listener (wsgiref, threads);
- ``static/index.html``: the one page (no build step).

:class:`WebServer` ties them together for the daemon: built (password checked, port bound)
early in the start-up, started once the pipeline runs, ``observe`` called with every outcome.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import TYPE_CHECKING

from edge_classifier.config.schema import WebConfig
from edge_classifier.daemon.pipeline import Outcome
from edge_classifier.web.auth import open_gate
from edge_classifier.web.live import LiveView
from edge_classifier.web.metrics import Metrics
from edge_classifier.web.port import DaemonPort
from edge_classifier.web.routes import build_app, guard
from edge_classifier.web.server import Listener

if TYPE_CHECKING:
    from edge_classifier.control.device import Device

__all__ = ["WebServer"]

log = logging.getLogger(__name__)


class WebServer:
    def __init__(self, config: WebConfig, daemon: Device) -> None:
        self.config = config
        self.gate = open_gate(config)  # ConfigError (exit 78): not loopback and no password
        self.port = DaemonPort(daemon)
        self.live = LiveView(self.port.device, config.preview_width)
        self.metrics = Metrics(self.port.counters)
        self._latencies: collections.deque[float] = collections.deque(maxlen=10_000)
        app = build_app(self.port, self.live, self.metrics, preview_fps=config.preview_fps,
                        latencies=self._latencies)
        self.listener = Listener(config.host, config.port, guard(app, self.gate))

    def start(self) -> WebServer:
        self.port.follow_events(self.live.event)
        self.listener.start()
        where = f"http://{self.config.host}:{self.listener.port}/"
        log.info("web view on %s (%s)", where, "password required" if self.gate.required else "no password")
        return self

    def observe(self, outcome: Outcome) -> None:
        """Every outcome, in frame order (the pipeline worker that emits it): keep, count."""
        self.metrics.observe(outcome, time.monotonic())
        if outcome.classification is not None:
            self._latencies.append(outcome.classification.inference_ms)
        self.live.observe(outcome)

    def close(self) -> None:
        """Wake the waiting requests, stop listening. Idempotent."""
        self.live.close()
        self.listener.close()

    def __enter__(self) -> WebServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
