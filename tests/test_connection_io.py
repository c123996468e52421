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
import threading

import pytest
from support import connections
from support.broker import Probe
from support.connections import Acks, check_burst_handled_at_once, check_in_order, publish_from_threads

from edge_classifier.config.schema import MqttConfig, TlsConfig

THREADS = 4
PER_THREAD = 400
BIG = 4 * 1024 * 1024  # more than loopback's socket buffer takes at once: a partial write
BIG_AT = (100, 200, 300)  # the sequence numbers after which thread 0 sends a big payload


connect = functools.partial(connections.connect, status_topic="io/status", timeout=10)


def big_payload(seq: int) -> bytes:
    return bytes([seq // 100]) * BIG


def test_publishers_in_many_threads_write_whole_packets_in_order(make_broker):
    # Mosquitto queues at most 1000 messages for a subscriber that falls behind and drops the
    # rest: the Python probe did, once, on a loaded machine (all acked, fewer received).
    broker = make_broker(extra=("max_queued_messages 0",))
    expected = THREADS * PER_THREAD + len(BIG_AT)  # (and the retained offline of close() after)
    acks = Acks(expected)
    with Probe(broker.host, broker.port) as probe:
        probe.subscribe("io/#")
        with connect(MqttConfig(host=broker.host, port=broker.port), on_published=acks) as connection:
            publish_from_threads(connection, "io", THREADS, PER_THREAD, BIG_AT, big_payload)
            assert acks.done.wait(60), f"{acks.count} of {acks.expected} published"
            assert acks.refused == 0
            direct = connection.client.direct_writes
        received = probe.collect(expected, timeout=60, topic_filter="io/#")
    assert direct > 0, "no packet was written by its publishing thread"
    check_in_order(received, "io", THREADS, PER_THREAD, [big_payload(seq) for seq in BIG_AT])


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
    # paho writes the sender's 300 messages back to back; then a 2 MB message (see
    # check_burst_handled_at_once).
    config = MqttConfig(host=broker.host, port=broker.port, protocol=protocol, keepalive=60)
    check_burst_handled_at_once(connect, config, prefix="in", big=2 * 1024 * 1024, sender_id="io-sender")


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
