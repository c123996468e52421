"""The daemon's own MQTT connection (``publish/connection.MqttConnection``) driven from a test:
connected for a ``with`` block, its ``on_published`` calls counted, and the checks that
tests/test_connection_io.py (Mosquitto) and tests/test_broker_peers.py (other brokers) both make
of its socket I/O: many publishing threads, and a burst read at once."""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable, Iterator

import paho.mqtt.client as paho

from edge_classifier.config.schema import MqttConfig
from edge_classifier.publish.connection import MqttConnection
from support.broker import Message

__all__ = ["Acks", "check_burst_handled_at_once", "check_in_order", "connect", "first_difference",
           "publish_from_threads"]


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


def publish_from_threads(connection: MqttConnection, prefix: str, threads: int, per_thread: int,
                         big_at: tuple[int, ...], big_payload: Callable[[int], bytes]) -> None:
    """``threads`` threads started together, each publishing ``per_thread`` numbered QoS 1
    messages on ``{prefix}/t{i}``; thread 0 also ``big_payload(seq)`` on ``{prefix}/big`` after
    each number in ``big_at``. Returns when they are done (each given 60 s)."""
    go = threading.Barrier(threads)

    def publish(worker: int) -> None:
        go.wait()
        for seq in range(per_thread):
            connection.publish(f"{prefix}/t{worker}", b"%d" % seq, qos=1)
            if worker == 0 and seq in big_at:
                connection.publish(f"{prefix}/big", big_payload(seq), qos=1)

    started = [threading.Thread(target=publish, args=(i,), name=f"publisher-{i}") for i in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join(60)


def check_in_order(received: list[Message], prefix: str, threads: int, per_thread: int, bigs: list[bytes],
                   label: str = "") -> None:
    """What :func:`publish_from_threads` sent arrived whole, each thread's in order."""
    by_topic: dict[str, list[bytes]] = {}
    for message in received:
        by_topic.setdefault(message.topic, []).append(message.payload)
    for worker in range(threads):
        got = by_topic.get(f"{prefix}/t{worker}", [])
        assert got == [b"%d" % seq for seq in range(per_thread)], \
            f"{label}thread {worker}'s messages arrived as {first_difference(got)}"
    assert [hashlib.sha256(p).hexdigest() for p in by_topic.get(f"{prefix}/big", [])] == [
        hashlib.sha256(p).hexdigest() for p in bigs], f"{label}the big payloads differ"


def first_difference(got: list[bytes]) -> str:
    """Where a list of numbered payloads first goes wrong, in words."""
    for seq, payload in enumerate(got):
        if payload != b"%d" % seq:
            return f"{len(got)} messages, number {seq} being {payload[:20]!r}"
    return f"{len(got)} messages, the first {len(got)} right"


def check_burst_handled_at_once(connect: Callable[..., contextlib.AbstractContextManager[MqttConnection]],
                                config: MqttConfig, *, prefix: str, big: int, sender_id: str,
                                sender_protocol: int = paho.MQTTv311, label: str = "") -> None:
    """A sender queues 300 small messages at once: the connection's one recv takes many of them,
    then its socket is empty. Each must be handled from the buffer, not left there until the
    next bytes come (the keepalive's, a minute on). Then, alone, a payload of ``big`` bytes,
    which paho reads past the buffer, in pieces. ``connect`` is the test's :func:`connect`."""
    count = 300
    got: list[paho.MQTTMessage] = []
    first, burst_in, all_in = threading.Event(), threading.Event(), threading.Event()

    def received(message: paho.MQTTMessage) -> None:  # paho's network thread; the events cross
        got.append(message)
        first.set()
        if len(got) == count:
            burst_in.set()
        if len(got) == count + 1:
            all_in.set()

    with connect(config, on_message=received, subscriptions=(f"{prefix}/#",)):
        sender = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=sender_id, protocol=sender_protocol)
        sender.connect(config.host, config.port)
        sender.loop_start()
        try:
            # The subscription holds once a message on it comes back (its SUBACK is paho's to see).
            for _ in range(100):
                sender.publish(f"{prefix}/ready", b"?", qos=1).wait_for_publish(5)
                if first.wait(0.2):
                    break
            assert first.is_set(), f"{label}the connection never got a message on its subscription"
            got.clear()
            for seq in range(count):
                sender.publish(f"{prefix}/burst", b"%d" % seq, qos=0)
            # Nothing more is sent until all arrived: no later bytes push the rest along.
            assert burst_in.wait(20), f"{label}{len(got)} of {count} messages handled"
            payload = hashlib.sha256(b"seed").digest() * (big // 32)
            sender.publish(f"{prefix}/big", payload, qos=1).wait_for_publish(20)
            assert all_in.wait(20), f"{label}the {big}-byte message was not handled"
        finally:
            sender.disconnect()
            sender.loop_stop()
    burst = [m.payload for m in got if m.topic == f"{prefix}/burst"]
    assert burst == [b"%d" % seq for seq in range(count)], f"{label}the burst arrived as {first_difference(burst)}"
    assert [m.payload for m in got if m.topic == f"{prefix}/big"] == [payload]
