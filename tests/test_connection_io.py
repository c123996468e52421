"""The MQTT connection's own socket I/O (publish/connection.py ``_Client``), against a real Mosquitto.

A publishing thread writes its packet itself on a plain TCP connection (no wake-up of paho's
network thread), and paho's reads come from one buffered ``recv``. These tests hold both to
what matters: every message arrives whole and in order, from many threads at once and with
payloads larger than the socket takes in one write; TLS keeps paho's own way; a burst of
incoming packets taken by one read is handled at once, not when the next bytes arrive; a
plain PUBACK is taken from the read buffer without paho's packet reader, and any other one
(a refusal) still reaches the owner as paho reports it.
"""

from __future__ import annotations

import functools
import hashlib
import threading

import paho.mqtt.client as paho
import pytest
from support import connections
from support.broker import Probe
from support.connections import Acks

from edge_classifier.config.schema import MqttConfig, TlsConfig
from edge_classifier.publish.connection import MqttConnection

THREADS = 4
PER_THREAD = 400
BIG = 4 * 1024 * 1024  # more than loopback's socket buffer takes at once: a partial write


connect = functools.partial(connections.connect, status_topic="io/status", timeout=10)


def big_payload(n: int) -> bytes:
    return bytes([n]) * BIG


def test_publishers_in_many_threads_write_whole_packets_in_order(make_broker):
    # Mosquitto queues at most 1000 messages for a subscriber that falls behind and drops the
    # rest: the Python probe did, once, on a loaded machine (all acked, fewer received).
    broker = make_broker(extra=("max_queued_messages 0",))
    expected = THREADS * PER_THREAD + 3 + 1  # + the big ones + the retained online in close()
    acks = Acks(THREADS * PER_THREAD + 3)
    with Probe(broker.host, broker.port) as probe:
        probe.subscribe("io/#")
        with connect(MqttConfig(host=broker.host, port=broker.port), on_published=acks) as connection:
            start = threading.Barrier(THREADS)

            def publish(connection: MqttConnection, worker: int) -> None:
                start.wait()
                for seq in range(PER_THREAD):
                    connection.publish(f"io/t{worker}", b"%d" % seq, qos=1)
                    if worker == 0 and seq in (100, 200, 300):
                        connection.publish("io/big", big_payload(seq // 100), qos=1)

            threads = [threading.Thread(target=publish, args=(connection, i)) for i in range(THREADS)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            assert acks.done.wait(60), f"{acks.count} of {acks.expected} published"
            assert acks.refused == 0
            direct = connection.client.direct_writes
        received = probe.collect(expected - 1, timeout=60, topic_filter="io/#")
    assert direct > 0, "no packet was written by its publishing thread"
    by_topic: dict[str, list[bytes]] = {}
    for message in received:
        by_topic.setdefault(message.topic, []).append(message.payload)
    for worker in range(THREADS):
        assert by_topic[f"io/t{worker}"] == [b"%d" % seq for seq in range(PER_THREAD)]
    assert [hashlib.sha256(p).hexdigest() for p in by_topic["io/big"]] == [
        hashlib.sha256(big_payload(n)).hexdigest() for n in (1, 2, 3)]


def test_qos0_from_many_threads_is_reported_written_and_keeps_the_connection(broker):
    # QoS 0 has no PUBACK: on_published comes from whichever thread wrote the message (here, the
    # publishers themselves). The broker may drop QoS 0 for a slow subscriber, so what is checked
    # is that every message was written and the connection never broke (mosquitto closes it on a
    # malformed packet), then a QoS 1 marker arrives.
    acks = Acks(THREADS * PER_THREAD)
    drops: list[bool] = []
    with Probe(broker.host, broker.port) as probe:
        probe.subscribe("io/marker")
        with connect(MqttConfig(host=broker.host, port=broker.port), on_published=acks,
                     on_disconnected=lambda: drops.append(True)) as connection:
            start = threading.Barrier(THREADS)

            def publish(worker: int) -> None:
                start.wait()
                for seq in range(PER_THREAD):
                    connection.publish(f"io/t{worker}", b"%d" % seq, qos=0)

            threads = [threading.Thread(target=publish, args=(i,)) for i in range(THREADS)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            assert acks.done.wait(60), f"{acks.count} of {acks.expected} written"
            connection.publish("io/marker", b"end", qos=1)
            assert probe.expect("io/marker", timeout=20).payload == b"end"
            assert connection.client.direct_writes > 0
            assert not drops, "the connection broke"


def test_tls_leaves_the_writing_to_paho(make_broker, tls_files):
    broker = make_broker(tls=tls_files)
    acks = Acks(50)
    config = MqttConfig(host="localhost", port=broker.port, tls=TlsConfig(enabled=True, ca_file=str(tls_files.ca_cert)))
    with Probe("localhost", broker.port, ca_cert=tls_files.ca_cert) as probe:
        probe.subscribe("io/tls")
        with connect(config, on_published=acks) as connection:
            for seq in range(50):
                connection.publish("io/tls", b"%d" % seq, qos=1)
            assert acks.done.wait(20)
            assert connection.client.direct_writes == 0
        assert [m.payload for m in probe.collect(50, timeout=20, topic_filter="io/tls")] == [
            b"%d" % seq for seq in range(50)]


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_a_burst_read_at_once_is_handled_at_once(broker, protocol):
    # A sender queues 300 small messages at once (paho writes them back to back): the
    # connection's recv takes many in one piece, then its socket is empty. Each must be handled
    # from the buffer, not left there until the next bytes come (the keepalive's, a minute on).
    # Then, alone, a payload of 2 MB, which paho reads in pieces.
    count = 300
    got: list[paho.MQTTMessage] = []
    first, burst_in, all_in = threading.Event(), threading.Event(), threading.Event()

    def received(message: paho.MQTTMessage) -> None:
        got.append(message)
        first.set()
        if len(got) == count:
            burst_in.set()
        if len(got) == count + 1:
            all_in.set()

    config = MqttConfig(host=broker.host, port=broker.port, protocol=protocol, keepalive=60)
    with connect(config, on_message=received, subscriptions=("in/#",)):
        sender = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="io-sender")
        sender.connect(broker.host, broker.port)
        sender.loop_start()
        try:
            # The connection's subscription holds once a message on it comes back (its SUBACK is
            # paho's to see): each try waits for that event.
            for _ in range(100):
                sender.publish("in/ready", b"?", qos=1).wait_for_publish(5)
                if first.wait(0.2):
                    break
            assert first.is_set(), "the connection never got a message on its subscription"
            got.clear()
            for seq in range(count):
                sender.publish("in/burst", b"%d" % seq, qos=0)
            # Nothing more is sent until all arrived: no later bytes push the rest along.
            assert burst_in.wait(20), f"{len(got)} of {count} messages handled"
            payload = hashlib.sha256(b"seed").digest() * (2 * 1024 * 1024 // 32)
            sender.publish("in/big", payload, qos=1).wait_for_publish(20)
            assert all_in.wait(20), "the 2 MB message was not handled"
        finally:
            sender.disconnect()
            sender.loop_stop()
        burst = [m.payload for m in got if m.topic == "in/burst"]
        assert burst == [b"%d" % seq for seq in range(count)]
        assert [m.payload for m in got if m.topic == "in/big"] == [payload]


@pytest.mark.parametrize(("protocol", "subscribed"), [("3.1.1", True), ("5", True), ("5", False)],
                         ids=["3.1.1", "5", "5 no subscriber"])
def test_plain_pubacks_are_taken_from_the_buffer(broker, protocol, subscribed):
    # Under MQTT 5 Mosquitto answers 0x10 "no matching subscribers" while nobody subscribes: a
    # success all the same, in a 5-byte PUBACK.
    count = 200
    acks = Acks(count)
    with Probe(broker.host, broker.port) as probe:
        if subscribed:
            probe.subscribe("io/acks")
        config = MqttConfig(host=broker.host, port=broker.port, protocol=protocol)
        with connect(config, on_published=acks) as connection:
            before = connection.client.quick_acks
            for seq in range(count):
                connection.publish("io/acks", b"%d" % seq, qos=1)
            assert acks.done.wait(20), f"{acks.count} of {count} published"
            assert acks.refused == 0
            quick = connection.client.quick_acks - before
        if subscribed:
            assert [m.payload for m in probe.collect(count, timeout=20, topic_filter="io/acks")] == [
                b"%d" % seq for seq in range(count)]
    # Each PUBACK arrives whole in its own write of the broker's; one split across two reads
    # would go paho's way, hence not == count.
    assert quick >= count * 0.9, f"only {quick} of {count} PUBACKs were taken from the buffer"


def test_a_refused_publish_still_comes_as_paho_reports_it(make_broker):
    # MQTT 5: Mosquitto's ACL refuses the topic with PUBACK 0x87 "Not authorized" (a reason the
    # buffer's quick path leaves to paho), in between accepted ones.
    broker = make_broker(password_users={"io": "pw"}, acl="user io\ntopic write io/ok\n")
    refusals: list[tuple[int, tuple[int, str] | None]] = []
    done = threading.Event()

    def published(mid: int, refusal: tuple[int, str] | None) -> None:
        refusals.append((mid, refusal))
        if len(refusals) == 3:
            done.set()

    config = MqttConfig(host=broker.host, port=broker.port, username="io", password="pw")
    with connect(config, on_published=published) as connection:
        mids = [connection.publish(topic, b"x", qos=1).mid for topic in ("io/ok", "io/denied", "io/ok")]
        assert done.wait(20), refusals
    got = dict(refusals)  # close()'s retained offline on io/status is refused too, later
    assert [got[mid] for mid in mids] == [None, (0x87, "Not authorized"), None]
