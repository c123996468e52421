"""The MQTT connection and the real daemon against brokers other than Mosquitto (tests/support/peers.py:
aedes, amqtt, nats-server, RabbitMQ), over MQTT 3.1.1, the only version any of them speaks.

What is proven, for each broker:

- the connection's own socket I/O (publish/connection.py ``_Client``): publishers in four threads,
  writing their packets themselves (``direct_writes``), get every QoS 1 message acknowledged (the
  PUBACKs taken from the read buffer, ``quick_acks``), and a subscriber receives each whole and in
  order per thread, 256 KB payloads among them; a burst of
  incoming messages taken by one buffered read is handled at once, a 1 MB one read past the buffer;
- the daemon with ``protocol = "3.1.1"``, QoS 1 and Home Assistant discovery on: every result
  arrives, in frame order, the same as it printed; discovery comes before the retained ``online``,
  ``offline`` follows at the exit, and both stay retained on the broker;
- the daemon with the default protocol (MQTT 5), which these brokers refuse: its log names the fix,
  ``set mqtt.protocol = "3.1.1"``, and it never claims to be connected.

A broker that cannot be installed or started fails its tests (the fixture raises ``PeerError``
with the reason); none is skipped. Each broker is started once for this module.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from paho.mqtt.enums import MQTTProtocolVersion
from support import connections
from support.broker import Message, Probe
from support.connections import Acks, check_burst_handled_at_once, check_in_order, publish_from_threads
from support.daemon import DaemonProcess, write_config
from support.peers import PEERS, Peer, start
from support.testdata import V1_025, image, model

from edge_classifier.config.schema import MqttConfig

V311 = MQTTProtocolVersion.MQTTv311
THREADS = 4
PER_THREAD = 300
BIG = 256 * 1024  # every peer took far more (16 MB): this is what a snapshot-sized payload is
BIG_AT = (100, 200)  # the sequence numbers after which thread 0 sends a big payload
FRAMES = 12
PROTOCOL_FIX = 'set mqtt.protocol = "3.1.1"'


@pytest.fixture(scope="module", params=sorted(PEERS))
def peer(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    """One broker of each kind, started once for the module's tests on it."""
    with start(request.param, tmp_path_factory.mktemp(f"peer-{request.param}")) as running:
        yield running


@pytest.fixture
def pictures(tmp_path: Path) -> Path:
    folder = tmp_path / "pics"
    folder.mkdir()
    for name in ("parrot.jpg", "bird.bmp"):
        shutil.copy(image(name), folder / name)
    return folder


connect = functools.partial(connections.connect, status_topic="peerio_status", timeout=15)


def big_payload(n: int) -> bytes:
    return hashlib.sha256(b"%d" % n).digest() * (BIG // 32)


def test_publishers_in_many_threads_write_whole_packets_in_order(peer: Peer) -> None:
    expected = THREADS * PER_THREAD + len(BIG_AT)
    acks = Acks(expected)
    with Probe(peer.host, peer.port, protocol=V311) as probe:
        probe.subscribe("peerio/#")
        config = MqttConfig(host=peer.host, port=peer.port, protocol="3.1.1", client_id=f"peerio-{peer.name}")
        with connect(config, on_published=acks) as connection:
            publish_from_threads(connection, "peerio", THREADS, PER_THREAD, BIG_AT, big_payload)
            assert acks.done.wait(60), f"{peer.name}: {acks.count} of {acks.expected} publishes acknowledged"
            assert acks.refused == 0
            direct, quick = connection.client.direct_writes, connection.client.quick_acks
        received = probe.collect(expected, timeout=60, topic_filter="peerio/#")
    assert direct > 0, "no packet was written by its publishing thread"
    # Every PUBACK of these brokers is the plain 4-byte one; a few may be split across two
    # reads (then paho reads them).
    assert quick >= expected * 0.9, f"{peer.name}: {quick} of {expected} PUBACKs taken from the buffer"
    check_in_order(received, "peerio", THREADS, PER_THREAD, [big_payload(seq) for seq in BIG_AT], f"{peer.name}: ")


def test_a_burst_read_at_once_is_handled_at_once(peer: Peer) -> None:
    # Its buffered reads on this broker, then a 1 MB message (see check_burst_handled_at_once).
    config = MqttConfig(host=peer.host, port=peer.port, protocol="3.1.1", keepalive=60,
                        client_id=f"peerin-{peer.name}")
    check_burst_handled_at_once(connect, config, prefix="peerin", big=1024 * 1024,
                                sender_id=f"peerin-sender-{peer.name}", label=f"{peer.name}: ")


def daemon_config(tmp_path: Path, peer: Peer, pictures: Path, device: str, mqtt: str) -> Path:
    (tmp_path / "models").mkdir()  # the model store, where discovery's state is kept
    return write_config(tmp_path / "config.toml", f"""
[device]
id = "{device}"
[source]
kind = "images"
uri = "{pictures}"
loop = true
fps = 20
[model]
path = "{model(V1_025)}"
dir = "{tmp_path / 'models'}"
accelerator = "cpu"
[mqtt]
host = "{peer.host}"
port = {peer.port}
qos = 1
reconnect_min = 0.2
reconnect_max = 1
{mqtt}
[publish]
stats_interval = 3600
[homeassistant]
enabled = true
""")


def retained_now(peer: Peer, *topics: str) -> dict[str, Message]:
    """What a new subscriber is given for ``topics`` at once: the broker's retained messages."""
    with Probe(peer.host, peer.port, protocol=V311) as late:
        late.subscribe(*topics)
        # The first on each topic: amqtt 0.12.1 sends a subscriber more than it asked for (the
        # first filter's retained message twice for a SUBSCRIBE of two, once another client's
        # retained message on a topic matching neither).
        kept = {topic: late.expect(topic, timeout=10) for topic in topics}
    assert all(m.retain for m in kept.values()), f"{peer.name}: {sorted(kept)} came, but not all as retained"
    return kept


def test_the_daemon_over_mqtt_311_delivers_every_result_in_order_and_its_status(
        tmp_path: Path, peer: Peer, pictures: Path) -> None:
    device = f"peerd{peer.name}"
    prefix, discovery = f"edge-classifier/{device}", f"homeassistant/device/{device}/config"
    config = daemon_config(tmp_path, peer, pictures, device, 'protocol = "3.1.1"')
    with Probe(peer.host, peer.port, protocol=V311) as probe:
        # One subscription for all: a broker keeps a publisher's order only within one topic (MQTT
        # 3.1.1 4.6), and nats-server delivers each subscription on its own (a JetStream consumer
        # each): with one for the prefix and one for discovery, `online` came first in 2 of 5 runs.
        probe.subscribe("#")
        with DaemonProcess("-c", str(config), "--stdout", "--max-frames", str(FRAMES)) as daemon:
            assert daemon.wait(90) == 0, daemon.log
            printed = [daemon.next_result(1) for _ in range(FRAMES)]
        seen: list[Message] = []
        while not (seen and seen[-1].topic == f"{prefix}/status" and seen[-1].text == "offline"):
            message = probe.expect("#", timeout=20)
            if message.topic == discovery or message.topic.startswith(f"{prefix}/"):  # not the other tests'
                seen.append(message)
        # The broker kept both retained messages for whoever subscribes later. (Asked while this
        # probe is still connected: nats-server 2.9.10 failed a new connection in the 4 s it spent
        # deleting the consumer of a "#" subscription whose client had just left.)
        kept = retained_now(peer, f"{prefix}/status", discovery)
    results = [json.loads(m.payload) for m in seen if m.topic == f"{prefix}/result"]
    assert results == printed, f"{peer.name}: {len(results)} of {len(printed)} results arrived as printed"
    assert [r["frame"] for r in results] == list(range(1, FRAMES + 1))
    topics = [m.topic for m in seen]
    statuses = [m.text for m in seen if m.topic == f"{prefix}/status"]
    assert statuses == ["online", "offline"], f"{peer.name}: status went {statuses}"
    assert discovery in topics and topics.index(discovery) < topics.index(f"{prefix}/status"), \
        f"{peer.name}: discovery did not come before online: {topics[:8]}"
    assert "MQTT connected to" in daemon.log
    complaints = [line for line in daemon.log_lines if " WARNING " in line or " ERROR " in line]
    assert not complaints, f"{peer.name}: the daemon complained:\n" + "\n".join(complaints)
    assert kept[f"{prefix}/status"].text == "offline"
    assert json.loads(kept[discovery].payload) == json.loads(seen[topics.index(discovery)].payload)


def test_the_daemon_on_mqtt_5_logs_the_fix(tmp_path: Path, peer: Peer, pictures: Path) -> None:
    # The default protocol is MQTT 5, which no peer speaks. aedes and nats-server refuse it in a
    # 3.1.1 CONNACK, RabbitMQ closes the connection at once without one. amqtt neither answers nor
    # closes: it reads the MQTT 5 CONNECT as 3.1.1 and waits for the rest of a Will it misparsed,
    # so the daemon learns nothing until it gives up on the CONNACK (after 10 s, or the keepalive
    # when shorter: the minimum, 5 s, here) and logs the missing CONNACK then.
    device = f"peerv{peer.name}"
    config = daemon_config(tmp_path, peer, pictures, device, "keepalive = 5")
    with DaemonProcess("-c", str(config), "--stdout") as daemon:
        line = daemon.log_lines[daemon.wait_for_log(f"MQTT broker {peer.host}:{peer.port} .*", timeout=20)]
        print(f"{peer.name}: {line}")
        daemon.next_result(30)  # it classifies meanwhile
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(10) == 0, daemon.log
    assert PROTOCOL_FIX in line, f"{peer.name}: the log does not name the fix: {line}"
    assert "MQTT connected to" not in daemon.log, daemon.log
