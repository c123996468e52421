"""The MQTT connection: one paho-mqtt 2.x client that connects in the background,
reconnects with capped backoff, and leaves ``offline`` as its Last Will.

Threads: paho runs its network loop in its own thread (``loop_start``); every ``_on_*``
method below is called from that thread and only sets events or calls the callbacks the
owner gave, which must themselves only enqueue.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from edge_classifier.config.schema import MqttConfig

__all__ = ["MqttConnection"]

log = logging.getLogger(__name__)

STATUS_ONLINE = b"online"
STATUS_OFFLINE = b"offline"


class MqttConnection:
    """Owns the paho client. ``start()`` returns at once; the broker may come later."""

    def __init__(
        self,
        config: MqttConfig,
        *,
        status_topic: str,
        on_connected: Callable[[], None] | None = None,
        on_disconnected: Callable[[], None] | None = None,
        on_published: Callable[[int], None] | None = None,
        reconnect_min: float = 1.0,
        reconnect_max: float = 30.0,
    ) -> None:
        self.config = config
        self.status_topic = status_topic
        self.connected = threading.Event()
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._on_published = on_published
        self._last_refusal: str | None = None
        self._closed = False
        self.v5 = config.protocol == "5"
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=config.client_id,
            protocol=paho.MQTTv5 if self.v5 else paho.MQTTv311,
        )
        client.enable_logger(logging.getLogger("edge_classifier.paho"))
        client.reconnect_delay_set(min_delay=max(1, round(reconnect_min)), max_delay=max(1, round(reconnect_max)))
        client.will_set(status_topic, STATUS_OFFLINE, qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self.client = client

    def start(self) -> None:
        """Connect in the background; a broker that is down now is retried by paho's loop."""
        self.client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
                properties: Any = None) -> paho.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)

    def close(self, timeout: float = 2.0) -> None:
        """Publish ``offline`` (retained), wait for it up to ``timeout``, disconnect. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.connected.is_set():
            info = self.client.publish(self.status_topic, STATUS_OFFLINE, qos=1, retain=True)
            # If the connection goes away meanwhile, the Last Will says offline instead.
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout)
        self.client.disconnect()
        self.client.loop_stop()

    # --- paho's network thread ---------------------------------------------------------

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode,
                    properties: Any) -> None:
        if reason.is_failure:
            text = str(reason)
            if text != self._last_refusal:  # a refused login is logged once, not every retry
                log.error("MQTT broker %s:%d refused the connection: %s (retrying)",
                          self.config.host, self.config.port, text)
                self._last_refusal = text
            return
        self._last_refusal = None
        log.info("MQTT connected to %s:%d", self.config.host, self.config.port)
        client.publish(self.status_topic, STATUS_ONLINE, qos=1, retain=True)
        self.connected.set()
        if self._on_connected:
            self._on_connected()

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode,
                       properties: Any) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        if was_connected and not self._closed:
            log.warning("MQTT connection to %s:%d lost: %s (reconnecting)", self.config.host, self.config.port, reason)
        if self._on_disconnected:
            self._on_disconnected()

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: ReasonCode,
                    properties: Any) -> None:
        if self._on_published:
            self._on_published(mid)
