"""The MQTT connection: one paho-mqtt 2.x client that connects in the background,
reconnects with capped backoff, and leaves ``offline`` as its Last Will.

Threads: paho runs its network loop in its own thread (``loop_start``); every ``_on_*``
method below is called from that thread and only sets events or calls the callbacks the
owner gave, which must themselves only enqueue. One exception: a QoS 0 message's
``on_published`` comes from whichever thread wrote it, which may be the publishing thread
itself (``_Client`` below), inside its ``publish`` call.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, _ConnectionState
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_classifier.config.schema import MqttConfig
from edge_classifier.config.secrets import read_secret
from edge_classifier.errors import ConfigError
from edge_classifier.publish import diagnosis

__all__ = ["CREDENTIAL_NAME", "MqttConnection", "resolve_password"]

CREDENTIAL_NAME = "mqtt-password"  # the systemd credential (LoadCredential=mqtt-password:...)


def resolve_password(config: MqttConfig, environ: Mapping[str, str] = os.environ) -> str | None:
    """The broker password: ``password_file``, else the systemd credential, else ``password``.

    A trailing newline is ignored and an empty password means none. Never logged.
    """
    return read_secret(config.password_file, config.password, credential=CREDENTIAL_NAME, key="mqtt.password_file",
                       environ=environ)


_READ_CHUNK = 65536
_PUBACK = 0x40  # the fixed header's first byte of a PUBACK
CONNACK_TIMEOUT = 10.0  # seconds a CONNECT may go unanswered (at most the keepalive)


class _Client(paho.Client):
    """paho's client, remembering why the last connection attempt failed (paho's
    ``on_connect_fail`` callback is not told), and writing a packet queued by another thread
    itself (``direct_writes``).

    paho's ``publish`` from any thread but its network thread appends the packet and wakes that
    thread (a byte through a socket pair) to send it: a wake-up per result, which on the 2-core
    machine cost more than the publish. On a connected plain TCP socket the publishing thread
    instead sends what is queued itself, without blocking (the socket is non-blocking); only
    what the kernel did not take wakes the network thread, which then waits for the socket to
    be writable as before. Writers take ``_write_lock`` (the network thread too, see
    ``_packet_write``), so two threads never interleave packets on the wire, and a publisher
    never waits for it: while the network thread writes, the packet goes its usual way. TLS
    and websockets keep paho's way (an SSL object must not be used by two threads at once).
    """

    last_connect_error: BaseException | None = None
    direct_writes = 0
    """Packets a publishing thread sent itself (for tests and stats)."""
    quick_acks = 0
    """PUBACKs handled by ``_take_acks`` rather than paho's packet reader (for tests)."""
    unanswered_for: float | None = None
    """Seconds the broker let the last CONNECT go unanswered before this client gave up on it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._write_lock = threading.RLock()
        self._read_sock: Any = None  # the socket _read_buffer came from
        self._read_buffer = b""
        self._read_at = 0  # what of _read_buffer paho has taken
        # What paho passes on_publish for a PUBACK without properties whose reason is success or
        # MQTT 5's "no matching subscribers" (Mosquitto's answer while nobody subscribes): paho
        # makes new ones each time; nothing changes them.
        self._ack_reasons = {code: ReasonCode(PacketTypes.PUBACK, identifier=code) for code in (0x00, 0x10)}
        self._ack_properties = Properties(PacketTypes.PUBACK)

    def reconnect(self) -> paho.MQTTErrorCode:
        self.unanswered_for = None
        try:
            return super().reconnect()
        except OSError as exc:
            self.last_connect_error = exc
            raise

    def _check_keepalive(self) -> None:
        # paho waits a whole keepalive (30 s by default) for a CONNACK; a broker that reads a
        # CONNECT it does not understand and stays silent (amqtt with an MQTT 5 CONNECT that has a
        # Will) kept the log quiet that long. Called from the network loop at least once a second.
        if self._sock is not None and self._state == _ConnectionState.MQTT_CS_CONNECTING:
            limit = min(CONNACK_TIMEOUT, self._keepalive or CONNACK_TIMEOUT)
            with self._msgtime_mutex:
                waited = time.monotonic() - self._last_msg_out  # since CONNECT was written
            if waited >= limit:
                self.unanswered_for = limit
                self._sock_close()
                self._do_on_disconnect(packet_from_broker=False, v1_rc=paho.MQTTErrorCode.MQTT_ERR_KEEPALIVE)
                return
        super()._check_keepalive()

    def _sock_recv(self, bufsize: int) -> bytes:
        # paho reads a packet's header a byte at a time, each a recv() call: three for a PUBACK.
        # One recv() takes all that arrived and the packets are cut from it. Only paho's network
        # thread reads. A reconnect's new socket starts with an empty buffer.
        sock = self._sock
        if self._read_sock is not sock:
            self._read_sock, self._read_buffer, self._read_at = sock, b"", 0
        at, buffer = self._read_at, self._read_buffer
        if at >= len(buffer):
            if bufsize >= _READ_CHUNK:
                return super()._sock_recv(bufsize)  # a large payload: straight into paho's packet
            buffer, at = super()._sock_recv(_READ_CHUNK), 0
            self._read_buffer = buffer
        chunk = buffer[at:at + bufsize]
        self._read_at = at + len(chunk)
        return chunk

    def loop_read(self, max_packets: int = 1) -> paho.MQTTErrorCode:
        # paho reads at most as many packets as it has messages in flight; what is left in the
        # buffer would wait for the next bytes to arrive, since select() sees an empty socket.
        while True:
            if self._in_packet["command"] == 0:  # between packets: the PUBACKs in front first
                rc = self._take_acks()
                if rc is not None:
                    return rc
            rc = super().loop_read(max_packets)
            if rc != paho.MQTTErrorCode.MQTT_ERR_SUCCESS or self._read_at >= len(self._read_buffer) \
                    or self._read_sock is not self._sock:
                return rc

    def _take_acks(self) -> paho.MQTTErrorCode | None:
        """Handle the plain PUBACKs at the front of the read buffer (reading the socket once
        when the buffer is empty): paho spends ~100 µs of Python on each one (three reads, a
        packet dict, a decoder, a reason code and a properties object), the most of any
        per-result work in its thread. A plain PUBACK is 4 bytes: 0x40, length 2, the packet
        id (MQTT 5 leaves the reason out when it is success and there are no properties); under
        MQTT 5 a fifth byte may be the reason, taken here when it is success or 0x10 "no
        matching subscribers" (any other reason, and properties, go paho's way). paho's own
        bookkeeping follows (``_do_on_publish`` under ``_out_message_mutex``: the callback, the
        in-flight count, queued messages sent), with the reason and empty properties paho
        itself would pass. Returns None when paho should read on (any other packet, part of
        one, an error or the end of the stream, which paho's read then finds)."""
        sock = self._sock
        if sock is None:
            return None
        if self._read_sock is not sock:
            self._read_sock, self._read_buffer, self._read_at = sock, b"", 0
        if self._read_at >= len(self._read_buffer):
            try:
                self._read_buffer, self._read_at = super()._sock_recv(_READ_CHUNK), 0
            except BlockingIOError:
                return paho.MQTTErrorCode.MQTT_ERR_SUCCESS  # nothing arrived after all
            except OSError:
                return None  # paho's own read meets the error again and handles it
            if not self._read_buffer:
                return None  # the broker closed the connection: paho's read finds it
        buffer, at = self._read_buffer, self._read_at
        end = len(buffer)
        reasons = self._ack_reasons
        acks: list[tuple[int, ReasonCode]] = []
        while end - at >= 4 and buffer[at] == _PUBACK:
            length = buffer[at + 1]
            if length == 2:
                reason = reasons[0]
            elif length == 3 and self._protocol == paho.MQTTv5 and end - at >= 5 and buffer[at + 4] in reasons:
                reason = reasons[buffer[at + 4]]
            else:
                break  # properties, a refusal, or a malformed packet: paho's way
            acks.append((buffer[at + 2] << 8 | buffer[at + 3], reason))
            at += 2 + length
        self._read_at = at
        if acks:
            self.quick_acks += len(acks)
            with self._msgtime_mutex:
                self._last_bytes_received = time.monotonic()  # paho's keepalive clock
            for mid, reason in acks:
                with self._out_message_mutex:
                    if mid in self._out_messages:  # told once, as paho does
                        rc = self._do_on_publish(mid, reason, self._ack_properties)
                        if rc != paho.MQTTErrorCode.MQTT_ERR_SUCCESS:
                            return self._loop_rc_handle(rc)
        return paho.MQTTErrorCode.MQTT_ERR_SUCCESS if at >= end else None

    def _packet_write(self) -> paho.MQTTErrorCode:
        with self._write_lock:
            return super()._packet_write()

    def _packet_queue(self, command: int, packet: bytes | bytearray, mid: int, qos: int,
                      info: paho.MQTTMessageInfo | None = None) -> paho.MQTTErrorCode:
        sock, wake = self._sock, self._sockpairW
        if (type(sock) is not socket.socket or wake is None or self._thread is None
                or threading.current_thread() is self._thread or not self.is_connected()
                or not self._write_lock.acquire(blocking=False)):
            return super()._packet_queue(command, packet, mid, qos, info)
        try:
            # The same entry paho's _packet_queue makes (paho-mqtt 2.x).
            self._out_packet.append({"command": command, "mid": mid, "qos": qos, "pos": 0,
                                     "to_process": len(packet), "packet": packet, "info": info})
            super()._packet_write()
            self.direct_writes += 1
        finally:
            self._write_lock.release()
        if self._out_packet:
            # The kernel's buffer is full (or the connection just broke): the network thread
            # sends the rest when the socket can take it, or finds the loss.
            with contextlib.suppress(OSError):
                wake.send(b"0")
        return paho.MQTTErrorCode.MQTT_ERR_SUCCESS

log = logging.getLogger(__name__)

STATUS_ONLINE = b"online"
STATUS_OFFLINE = b"offline"


class MqttConnection:
    """Owns the paho client. ``start()`` returns at once; the broker may come later.

    After each (re)connect it renews ``subscriptions`` and calls ``on_connected``, whose
    owner publishes the retained ``online`` once its own state is out (``publish_online``).
    """

    def __init__(
        self,
        config: MqttConfig,
        *,
        status_topic: str,
        on_connected: Callable[[], None] | None = None,
        on_disconnected: Callable[[], None] | None = None,
        on_published: Callable[[int, tuple[int, str] | None], None] | None = None,
        on_message: Callable[[paho.MQTTMessage], None] | None = None,
        subscriptions: tuple[str, ...] = (),
    ) -> None:
        self.config = config
        self.status_topic = status_topic
        self.connected = threading.Event()
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._on_published = on_published
        self._on_message = on_message
        self.subscriptions = subscriptions
        # What was logged, so each distinct problem is logged once: connect problems until a
        # connect succeeds, losses until a connection holds for FLAPPING_SECONDS.
        self._connect_problems: set[str] = set()
        self._losses: set[tuple[bool, int, bool]] = set()
        self._answered = False  # a CONNACK came for this attempt
        self._connected_at = 0.0
        self._short_drops = 0  # connections in a row that held less than FLAPPING_SECONDS
        self._ever_connected = False
        self._closed = False
        self.v5 = config.protocol == "5"
        client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=config.client_id,
            protocol=paho.MQTTv5 if self.v5 else paho.MQTTv311,
        )
        if log.isEnabledFor(logging.DEBUG):
            # paho's own log repeats every failed reconnect at ERROR; ours says it once.
            client.enable_logger(logging.getLogger("edge_classifier.paho"))
        if config.username:
            client.username_pw_set(config.username, resolve_password(config))
        if config.tls.enabled:
            _set_tls(client, config)
        # paho's hint says int, but its backoff works on any number of seconds.
        client.reconnect_delay_set(min_delay=config.reconnect_min, max_delay=config.reconnect_max)  # type: ignore[arg-type]
        client.will_set(status_topic, STATUS_OFFLINE, qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_connect_fail = self._on_connect_fail
        client.on_message = self._on_message_received
        self.client: _Client = client

    def start(self) -> None:
        """Connect in the background; a broker that is down now is retried by paho's loop."""
        self.client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
                properties: Any = None) -> paho.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)

    def publish_online(self) -> None:
        self.client.publish(self.status_topic, STATUS_ONLINE, qos=1, retain=True)

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
        self._answered = True
        if reason.is_failure:
            self._problem(diagnosis.refused(reason, self.config), logging.ERROR)
            return
        if not self._flapping:  # while it keeps dropping, what was said stays said
            self._connect_problems.clear()
        self._ever_connected = True
        self._connected_at = time.monotonic()
        log.log(logging.DEBUG if self._flapping else logging.INFO, "MQTT connected to %s:%d",
                self.config.host, self.config.port)
        _no_delay(client)
        if self.subscriptions:
            client.subscribe([(topic, 1) for topic in self.subscriptions])
        self.connected.set()
        if self._on_connected:
            self._on_connected()

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode,
                       properties: Any) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        if not self._closed:
            if was_connected:
                self._lost(reason, bool(getattr(flags, "is_disconnect_packet_from_server", False)))
            elif not self._answered:
                self._problem(diagnosis.closed_before_connack(self.config, self._ever_connected,
                                                              silent_for=self.client.unanswered_for), logging.WARNING)
        self._answered = False
        if self._on_disconnected:
            self._on_disconnected()

    def _on_message_received(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        if self._on_message:
            self._on_message(message)

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        error = self.client.last_connect_error
        if isinstance(error, ssl.SSLError):
            self._problem(f"TLS handshake failed: {error}", logging.ERROR)
        else:
            reason = getattr(error, "strerror", None) or error or "unknown reason"
            self._problem(f"is unreachable: {reason}", logging.WARNING)

    @property
    def _flapping(self) -> bool:
        """Two connections in a row held only seconds: the broker objects to something we do
        (one short one is just an outage that came early)."""
        return self._short_drops >= 2

    def _lost(self, reason: ReasonCode, from_server: bool) -> None:
        """Log a lost connection once per distinct reason while it keeps dropping."""
        held = time.monotonic() - self._connected_at
        if held < diagnosis.FLAPPING_SECONDS:
            self._short_drops += 1
        else:
            self._short_drops = 0
            self._losses.clear()
        key = (from_server, reason.value, self._flapping)
        if key in self._losses:
            return
        self._losses.add(key)
        again = "; not logged again while it keeps dropping for this reason" if self._flapping else ""
        log.warning("MQTT connection to %s:%d lost: %s (reconnecting%s)", self.config.host, self.config.port,
                    diagnosis.lost(reason, from_server, held if self._flapping else None, self.config), again)

    def _problem(self, text: str, level: int) -> None:
        """Log a connection problem once, not at every retry; a different one is logged too."""
        if text not in self._connect_problems:
            self._connect_problems.add(text)
            log.log(level, "MQTT broker %s:%d %s (retrying with backoff up to %gs)",
                    self.config.host, self.config.port, text, self.config.reconnect_max)

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: ReasonCode,
                    properties: Any) -> None:
        """PUBACK/PUBCOMP (or written out, QoS 0). Under MQTT 5 a reason >= 0x80 is a refusal:
        passed on as (code, words), None when accepted."""
        if self._on_published:
            refused = reason.is_failure if isinstance(reason, ReasonCode) else False
            self._on_published(mid, (reason.value, str(reason)) if refused else None)


def _no_delay(client: paho.Client) -> None:
    """Send small packets at once. paho leaves Nagle's algorithm on, so a reply or result
    written while an earlier packet is unacknowledged waits for the broker's delayed ACK
    (~40 ms on Linux): every command reply took about 90 ms before this."""
    sock = client.socket()
    setsockopt = getattr(sock, "setsockopt", None)  # a real socket (paho types it loosely)
    if setsockopt is not None:
        with contextlib.suppress(OSError):
            setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _set_tls(client: paho.Client, config: MqttConfig) -> None:
    tls = config.tls
    missing = [f"mqtt.tls.{key}: {path}: file not found"
               for key, path in (("ca_file", tls.ca_file), ("cert_file", tls.cert_file), ("key_file", tls.key_file))
               if path and not Path(path).is_file()]
    if missing:
        raise ConfigError(missing)
    try:
        client.tls_set(
            ca_certs=tls.ca_file or None,
            certfile=tls.cert_file or None,
            keyfile=tls.key_file or None,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    except (ssl.SSLError, OSError, ValueError) as exc:
        files = ", ".join(f for f in (tls.ca_file, tls.cert_file, tls.key_file) if f)
        raise ConfigError([f"mqtt.tls: cannot load the TLS files ({files}): {exc}"]) from exc
    client.tls_insecure_set(tls.insecure)
