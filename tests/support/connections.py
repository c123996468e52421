"""The daemon's own MQTT connection (``publish/connection.MqttConnection``) driven from a test:
connected for a ``with`` block, and its ``on_published`` calls counted."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from edge_classifier.config.schema import MqttConfig
from edge_classifier.publish.connection import MqttConnection

__all__ = ["Acks", "connect"]


class Acks:
    """``on_published`` calls counted from paho's thread; ``done`` is set when ``expected`` came."""

    def __init__(self, expected: int) -> None:
        self.expected, self.count, self.refused = expected, 0, 0
        self._lock = threading.Lock()
        self.done = threading.Event()

    def __call__(self, mid: int, refusal: tuple[int, str] | None) -> None:
        with self._lock:
            self.count += 1
            self.refused += refusal is not None
            if self.count >= self.expected:
                self.done.set()


@contextlib.contextmanager
def connect(config: MqttConfig, status_topic: str, timeout: float = 15.0,
            **callbacks: object) -> Iterator[MqttConnection]:
    """A started connection, once the broker's CONNACK came (at most ``timeout`` s); closed after."""
    connection = MqttConnection(config, status_topic=status_topic, **callbacks)  # type: ignore[arg-type]
    connection.start()
    try:
        assert connection.connected.wait(timeout), f"no CONNACK from {config.host}:{config.port}"
        yield connection
    finally:
        connection.close()
