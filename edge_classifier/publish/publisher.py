"""The publisher: thread ``publish`` turns outcomes and events into messages and sends them.

Everything reaches this thread through one queue (``_inbox``): results from the pipeline's
workers, events from anywhere, and paho's connect/disconnect/ack notifications. So the
outbox and the sinks are only ever touched here, and nobody else ever waits for the
network: ``submit_*`` never blocks.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from edge_classifier.daemon.pipeline import Outcome
from edge_classifier.publish.connection import MqttConnection
from edge_classifier.publish.outbox import Message, Outbox
from edge_classifier.publish.payload import encode, event_payload, result_payload

__all__ = ["Publisher", "Topics"]

log = logging.getLogger(__name__)

_WINDOW = 64  # messages in flight at once (unacknowledged by the broker)


class Topics:
    """The device's topics under its prefix (CONTRACT.md)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.status = f"{prefix}/status"
        self.result = f"{prefix}/result"
        self.stats = f"{prefix}/stats"
        self.event = f"{prefix}/event"


class Publisher:
    """Sends results (in the order submitted) and events to MQTT and/or stdout."""

    def __init__(
        self,
        device: str,
        topics: Topics,
        *,
        connection: MqttConnection | None = None,
        qos: int = 1,
        retain: bool = False,
        stdout: TextIO | None = None,
        outbox: Outbox | None = None,
        on_published: Callable[[Outcome], None] | None = None,
    ) -> None:
        self.device = device
        self.topics = topics
        self.qos = qos
        self.retain = retain
        self._connection = connection
        self._stdout = stdout
        self.outbox = outbox or Outbox()
        self._on_published = on_published
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="publish", daemon=True)
        self._closing = threading.Event()
        self._done = threading.Event()
        self.results = 0
        self.events = 0
        if connection is not None:
            # Crossing: these are called from paho's network thread; they only enqueue.
            connection._on_connected = lambda: self._inbox.put(("connected", None))
            connection._on_disconnected = lambda: self._inbox.put(("disconnected", None))
            connection._on_published = lambda mid: self._inbox.put(("acked", mid))

    def start(self) -> Publisher:
        self._thread.start()
        return self

    # --- any thread -------------------------------------------------------------------

    def submit(self, outcome: Outcome) -> None:
        """A classified frame, in frame order (called from the pipeline's workers)."""
        self._inbox.put(("outcome", outcome))

    def event(self, name: str, **details: Any) -> None:
        """Publish an event on ``{prefix}/event`` (and log it)."""
        self._inbox.put(("event", (name, details, time.time())))

    def close(self, timeout: float = 3.0) -> bool:
        """Send what is queued (waiting for the broker up to ``timeout``), then stop.

        Returns True when everything was delivered. Idempotent.
        """
        if not self._thread.is_alive():
            return len(self.outbox) == 0
        self._inbox.put(("close", time.monotonic() + timeout))
        self._thread.join(timeout + 1.0)
        return len(self.outbox) == 0

    # --- the publish thread -------------------------------------------------------------

    def _run(self) -> None:
        deadline: float | None = None
        while True:
            wait = 0.5 if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                kind, value = self._inbox.get(timeout=wait)
            except queue.Empty:
                kind, value = "tick", None
            try:
                if kind == "close":
                    deadline = value
                else:
                    self._handle(kind, value)
                # Drain whatever else is already queued before touching the network.
                while True:
                    try:
                        kind, value = self._inbox.get_nowait()
                    except queue.Empty:
                        break
                    if kind == "close":
                        deadline = value
                    else:
                        self._handle(kind, value)
                self._pump()
            except Exception:
                log.exception("publisher: handling %s failed", kind)
            if deadline is not None and (len(self.outbox) == 0 or time.monotonic() >= deadline):
                if len(self.outbox):
                    log.warning("publisher: %d messages not delivered at shutdown", len(self.outbox))
                return

    def _handle(self, kind: str, value: Any) -> None:
        if kind == "outcome":
            self._publish_outcome(value)
        elif kind == "event":
            name, details, wall = value
            self._publish_event(name, details, wall)
        elif kind == "acked":
            self.outbox.acked(value)
        elif kind == "connected":
            self.outbox.reconnected()
        elif kind in ("disconnected", "tick"):
            pass
        else:
            raise ValueError(f"unknown publisher message {kind!r}")

    def _publish_outcome(self, outcome: Outcome) -> None:
        if outcome.classification is None:
            self._publish_event("frame_failed", {"source": outcome.frame.source, "frame": outcome.frame.index,
                                                 "reason": outcome.error}, time.time())
            return
        payload = result_payload(self.device, outcome.frame, outcome.classification)
        self._send(self.topics.result, payload, self.qos, self.retain)
        self.results += 1
        if self._on_published is not None:
            self._on_published(outcome)

    def _publish_event(self, name: str, details: dict[str, Any], wall: float) -> None:
        log.info("event %s %s", name, details)
        self._send(self.topics.event, event_payload(self.device, name, details, wall), 1, False)
        self.events += 1

    def _send(self, topic: str, payload: dict[str, Any], qos: int, retain: bool) -> None:
        data = encode(payload)
        if self._stdout is not None and topic == self.topics.result:
            self._stdout.write(data.decode("utf-8") + "\n")
            self._stdout.flush()
        if self._connection is not None:
            dropped = self.outbox.append(Message(topic, data, qos, retain))
            if dropped:
                log.warning("publisher: outbox full, dropped the %d oldest messages (%d in all)",
                            dropped, self.outbox.dropped)

    def _pump(self) -> None:
        """Hand pending messages to paho while connected and the window allows."""
        connection = self._connection
        if connection is None or not connection.connected.is_set():
            return
        while (message := self.outbox.next_to_send(_WINDOW)) is not None:
            info = connection.publish(message.topic, message.payload, message.qos, message.retain)
            # Even when the connection dropped just now (rc NO_CONN) paho keeps the
            # message and sends it after the reconnect: it is in flight either way.
            self.outbox.sent(info.mid)
            if not connection.connected.is_set():
                return


def default_stdout() -> TextIO:
    return sys.stdout
