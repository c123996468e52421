"""Frames from MQTT: every message on a topic filter carries one JPEG or PNG image.

The source runs its own paho-mqtt client (id ``{mqtt.client_id}-source``) next to
the publisher's. paho's network thread only queues the raw payloads; decoding
happens in the reader (the capture thread), so a large image never stalls the
network loop and its keepalives. The inbox is bounded: when the reader falls
behind, a topic's older image is dropped (counted in ``dropped``) since this is a
live source where the newest image matters most. Each topic of a wildcard is its own
camera: its own newest-image slot in the ``inbox``, taken in turn with the others,
and its own counters in ``tally``; the number of topics is bounded (``max_topics``,
the idle ones evicted and counted). A payload that is not an image
within the limits (empty, over ``max_bytes``, an unknown format, a header over
``max_pixels``, undecodable: see ``preprocess.decode``) is counted in ``rejected``
and logged at most once per reason per 10 s; it never fails the source. Under MQTT 5
the broker is also told the largest packet the source takes (Maximum Packet Size), so
an oversized image is dropped by the broker before it crosses the network.

The subscription is made in ``on_connect``, so it is renewed on every
(re)connection. A lost broker connection fails the current ``read`` at once with
a ``SourceError``; the capture loop then reopens the source with its backoff.
While connected and quiet, ``read`` waits: a quiet topic is not a failure.
``wake()`` (thread-safe) makes a waiting ``read`` return None so a stop is prompt.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_classifier.errors import SourceError
from edge_classifier.preprocess.decode import ImageLimits, ImageRejected, RejectLog, decode_image
from edge_classifier.source.base import Frame
from edge_classifier.source.inbox import Inbox, Message, Signal
from edge_classifier.source.tally import Tally

__all__ = ["MqttSource"]

log = logging.getLogger(__name__)


class MqttSource:
    """Images arriving on an MQTT topic filter, as a live frame source (BGR frames)."""

    live = True

    def __init__(self, topic: str, *, host: str, port: int, client_id: str, name: str = "",
                 protocol: str = "5", keepalive: int = 30, qos: int = 0, capacity: int = 8, max_topics: int = 64,
                 connect_timeout: float = 5.0, poll: float = 1.0, limits: ImageLimits | None = None,
                 reduce_to: tuple[int, int] | None = None) -> None:
        """``name`` empty: each frame's ``source`` is the topic its image arrived on.
        ``capacity``: images kept per topic until read (the newest win). ``reduce_to``: the
        model input (width, height) JPEGs may be decoded down to (``source.reduced_decode``)."""
        if not topic:
            raise ValueError("Invalid topic filter: ''")
        self.topic = topic
        self.name = name or topic
        self._frame_name = name
        self.host = host
        self.port = port
        self.client_id = client_id
        self.protocol = protocol
        self.keepalive = keepalive
        self.qos = qos
        self.connect_timeout = connect_timeout
        self.poll = poll
        self.limits = limits or ImageLimits()
        self.reduce_to = reduce_to
        self.rejects = RejectLog(log, "mqtt source")
        """Payloads refused (empty, too large, not an image, too many pixels), by reason."""
        self.tally = Tally(max_topics)
        """Per camera (topic, or ``name``): received, dropped, rejected; ``Capture`` adds the rest."""
        # Crossing: paho's network thread offers images and signals, the reader takes them.
        # Waiting images are bounded to 8 of the largest allowed in all (as the old queue was).
        self._inbox = Inbox(depth=capacity, max_topics=max_topics, max_bytes=8 * self.limits.max_bytes,
                            tally=self.tally, name=name)
        self._ready = threading.Event()  # set by the network thread once subscribed
        self._failure = ""  # why connecting failed, written by the network thread before _ready
        self._client: paho.Client | None = None

    # --- paho's network thread ----------------------------------------------------------

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        # Runs in paho's network thread.
        if reason.is_failure:
            self._failure = f"broker refused the connection: {reason}"
            self._ready.set()
            return
        client.subscribe(self.topic, qos=self.qos)

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        # Runs in paho's network thread; wakes open() in the capture thread.
        self._failure = "connection failed"
        self._ready.set()

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: Any,
                      properties: Any) -> None:
        # Runs in paho's network thread; wakes open() in the capture thread.
        failed = [r for r in reasons if r.is_failure]
        if failed:
            self._failure = f"broker refused the subscription to {self.topic!r}: {failed[0]}"
        log.debug("mqtt source: subscribed to %s (%s)", self.topic, reasons)
        self._ready.set()

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        # Runs in paho's network thread: wake the reader so the loss is seen at once.
        if self._ready.is_set():
            self._inbox.signal(Signal(f"lost the connection to {self.host}:{self.port}: {reason}", lost=True))

    def use_tally(self, tally: Tally) -> None:
        """Count into ``tally`` (shared by a ``CaptureGroup``); before ``open``."""
        self.tally = tally
        self._inbox.tally = tally

    @property
    def dropped(self) -> int:
        """Images replaced by a newer one of their topic (or over a bound) before they were read."""
        return self._inbox.dropped

    @property
    def evicted(self) -> int:
        """Topics forgotten because ``max_topics`` were tracked."""
        return self._inbox.evicted

    def counters(self) -> dict[str, int]:
        """Every figure the source counts, for ``{prefix}/stats``."""
        return {"received": self._inbox.received, "dropped": self.dropped, "rejected": self.rejected,
                "topics": self._inbox.topics, "evicted": self.evicted}

    @property
    def rejected(self) -> int:
        """Payloads that did not become a frame (read by the main loop for status and stats)."""
        return self.rejects.total

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        # Runs in paho's network thread: stamp and queue only, the reader decodes. An
        # oversized payload is not copied, only reported (the reader counts and logs it).
        if len(message.payload) > self.limits.max_bytes:
            self._inbox.offer(Message(message.topic, b"", time.monotonic(), time.time(), len(message.payload)))
            return
        self._inbox.offer(Message(message.topic, bytes(message.payload), time.monotonic(), time.time()))

    # --- the reader (capture thread) ----------------------------------------------------

    def open(self) -> None:
        self.close()
        version = MQTTProtocolVersion.MQTTv5 if self.protocol == "5" else MQTTProtocolVersion.MQTTv311
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=version)
        properties = None
        if version == MQTTProtocolVersion.MQTTv5:
            properties = Properties(PacketTypes.CONNECT)
            # The broker drops (does not send) a PUBLISH larger than this: the image, its
            # topic and properties; a 3.1.1 broker cannot be told, _on_message drops those.
            properties.MaximumPacketSize = self.limits.max_bytes + 64 * 1024
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._ready.clear()
        self._failure = ""
        self._client = client
        try:
            client.connect_async(self.host, self.port, keepalive=self.keepalive, properties=properties)
            client.loop_start()  # starts paho's network thread
        except (OSError, ValueError) as exc:
            self.close()
            raise SourceError(f"cannot connect to MQTT broker {self.host}:{self.port}: {exc}") from exc
        # Crossing: wait for the network thread to report connected and subscribed.
        if not self._ready.wait(self.connect_timeout):
            self.close()
            raise SourceError(f"no connection to MQTT broker {self.host}:{self.port} "
                              f"within {self.connect_timeout:g}s")
        if self._failure:
            failure = self._failure
            self.close()
            raise SourceError(f"MQTT broker {self.host}:{self.port}: {failure}")
        log.info("mqtt source: listening on %s at %s:%d", self.topic, self.host, self.port)

    def read(self) -> Frame | None:
        if self._client is None:
            raise SourceError(f"{self.name}: read before open")
        while True:
            # Crossing: take what the network thread kept.
            item = self._inbox.take(self.poll)
            if item is None:
                if not self._client.is_connected():
                    raise SourceError(f"not connected to MQTT broker {self.host}:{self.port}")
                continue
            if isinstance(item, Signal):
                if item.lost:
                    raise SourceError(item.reason)
                return None
            try:
                if item.oversized:
                    raise ImageRejected(f"payload on {item.topic}: {item.oversized} bytes, over the limit of "
                                        f"{self.limits.max_bytes} bytes (source.max_bytes)", "too many bytes")
                image = decode_image(item.payload, self.limits, what=f"payload on {item.topic}",
                                     reduce_to=self.reduce_to)
            except ImageRejected as exc:
                self.rejects.rejected(exc)
                self.tally.count(self._frame_name or item.topic, "rejected")
                continue
            name = self._frame_name or item.topic
            return Frame(image=image, rgb=False, source=name, index=self.tally.next_index(name),
                         captured=item.captured, timestamp=item.timestamp)

    def wait_subscribed(self, timeout: float) -> bool:
        """True once the broker acknowledged the subscription (any thread; waits at most
        ``timeout``): the daemon says ``online`` only then, so no image sent after it is lost."""
        return self._ready.wait(timeout) and not self._failure and self._client is not None

    def wake(self) -> None:
        """Make a waiting ``read`` return None (thread-safe; used by ``Capture.stop``)."""
        self._inbox.signal(Signal("woken", lost=False))

    def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        self._ready.clear()  # a disconnect from here on is ours, not a loss
        client.disconnect()
        client.loop_stop()  # joins paho's network thread
        # disconnect() leaves the socket of a connection that never completed open.
        sock = client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        self._inbox.clear()
