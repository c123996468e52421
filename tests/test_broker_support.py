"""The test suite's own Mosquitto brokers and probe client, proved against real brokers."""

from __future__ import annotations

import dataclasses
import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import MQTTProtocolVersion
from support.broker import BrokerError, ConnectFailed, MosquittoBroker, Probe, ProbeError, TlsFiles

MakeBroker = Callable[..., MosquittoBroker]

USERS = {"alice": "wonderland", "bob": "builder"}
ACL = """\
user alice
topic readwrite sensors/#
topic read config/#

user bob
topic readwrite #
"""


@pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311], ids=["mqtt5", "mqtt311"])
def test_publish_subscribe_round_trip(broker: MosquittoBroker, protocol: MQTTProtocolVersion) -> None:
    with (
        Probe(broker.host, broker.port, protocol=protocol) as subscriber,
        Probe(broker.host, broker.port, protocol=protocol) as publisher,
    ):
        granted = subscriber.subscribe("sensors/+/temp", qos=1)
        assert [code.value for code in granted] == [1]

        publisher.publish("sensors/kitchen/humidity", b"ignored", qos=1)
        publisher.publish("sensors/kitchen/temp", b"21.5", qos=1)

        message = subscriber.expect("sensors/kitchen/temp", timeout=5)
        assert (message.topic, message.payload, message.qos, message.retain) == (
            "sensors/kitchen/temp",
            b"21.5",
            1,
            False,
        )
        assert subscriber.pending() == []  # the humidity reading matched no subscription
    broker.wait_for_log(r"Received PUBLISH from probe-\w+ \(d0, q1, r0, m\d+, 'sensors/kitchen/temp'")


def test_collect_keeps_order_and_unclaimed_messages(broker: MosquittoBroker) -> None:
    with Probe(broker.host, broker.port) as probe:
        probe.subscribe("a/#", "b/#")
        for i in range(3):
            probe.publish(f"a/{i}", str(i), qos=1)
            probe.publish(f"b/{i}", str(i), qos=1)
        assert [m.text for m in probe.collect(3, topic_filter="b/#")] == ["0", "1", "2"]
        assert [m.topic for m in probe.collect(3)] == ["a/0", "a/1", "a/2"]


def test_retained_message_reaches_late_subscribers_until_cleared(broker: MosquittoBroker) -> None:
    with Probe(broker.host, broker.port) as publisher:
        publisher.publish("device/status", b"online", qos=1, retain=True)

        with Probe(broker.host, broker.port, protocol=mqtt.MQTTv311) as late:
            late.subscribe("device/#")
            message = late.expect("device/status")
            assert (message.payload, message.retain) == (b"online", True)
            # Live traffic to an existing subscriber is not flagged retained.
            publisher.publish("device/status", b"busy", qos=1, retain=True)
            assert late.expect("device/status").retain is False

        publisher.publish("device/status", b"", qos=1, retain=True)  # an empty retained payload clears it
        with Probe(broker.host, broker.port) as later:
            later.subscribe("device/#")
            publisher.publish("device/marker", b"after", qos=1)
            # Had a retained message survived, it would have arrived before the marker (SUBACK first).
            assert later.expect("device/#").topic == "device/marker"


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_stop_disconnects_and_restart_reuses_the_port(broker: MosquittoBroker, how: str) -> None:
    port, first_pid = broker.port, broker.pid
    with Probe(broker.host, broker.port, protocol=mqtt.MQTTv311) as probe:
        probe.subscribe("alive/#")
        assert probe.connects == 1

        if how == "stop":
            broker.stop()
        else:
            broker.kill()
        assert not broker.running
        assert probe.wait_disconnected(timeout=5) is not None

        if how == "stop":
            # The broker closed its side first, so its port has a connection in TIME_WAIT: a plain
            # bind fails, and only mosquitto's SO_REUSEADDR lets the restart below take the port again.
            with socket.socket() as plain, pytest.raises(OSError, match="Address already in use"):
                plain.bind((broker.host, port))

        broker.restart()
        assert (broker.port, broker.running) == (port, True)
        assert broker.pid != first_pid

        # paho reconnects by itself; the probe renews its subscription before it reports ready.
        probe.wait_connected(timeout=5)
        assert probe.connects == 2
        with Probe(broker.host, broker.port) as fresh:
            fresh.publish("alive/again", b"yes", qos=1)
        assert probe.expect("alive/#").payload == b"yes"
    assert broker.log_text().count(f"Opening ipv4 listen socket on port {port}.") == 2


def test_password_file_accepts_the_right_password(make_broker: MakeBroker) -> None:
    secured = make_broker(password_users=USERS)
    with Probe(secured.host, secured.port, username="alice", password="wonderland") as alice:
        alice.subscribe("sensors/#")
        alice.publish("sensors/x", b"1", qos=1)
        assert alice.expect("sensors/x").payload == b"1"
    assert "wonderland" not in secured.password_path.read_text()  # hashed by mosquitto_passwd -U
    secured.wait_for_log(r"New client connected from 127\.0\.0\.1:\d+ as probe-\w+ \(p5, c1, k10, u'alice'\)")


@pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311], ids=["mqtt5", "mqtt311"])
@pytest.mark.parametrize(("username", "password"), [("alice", "wrong"), ("mallory", "wonderland"), (None, None)])
def test_password_file_refuses_bad_credentials(
    make_broker: MakeBroker, protocol: MQTTProtocolVersion, username: str | None, password: str | None
) -> None:
    secured = make_broker(password_users=USERS)
    probe = Probe(secured.host, secured.port, protocol=protocol, username=username, password=password)
    with pytest.raises(ConnectFailed) as refused:
        probe.connect()
    # mosquitto 2.0 answers every bad login with "not authorized" (v5 0x87, v3.1.1 CONNACK 5), never
    # "bad user name or password"; paho 2.2 reports both versions as a ReasonCode.
    assert refused.value.reason_code is not None
    assert refused.value.reason_code in ("Not authorized", "Bad user name or password")
    assert not probe.connected
    probe.close()
    secured.wait_for_log(r"Client <unknown> disconnected, not authorised\.")


def test_acl_denies_a_topic(make_broker: MakeBroker) -> None:
    secured = make_broker(password_users=USERS, acl=ACL)
    with (
        Probe(secured.host, secured.port, username="bob", password="builder") as watcher,
        Probe(secured.host, secured.port, username="alice", password="wonderland") as alice,
    ):
        watcher.subscribe("#")
        # MQTT 5 tells the publisher: PUBACK with 0x87 Not authorized.
        assert alice.publish("secrets/plans", b"denied", qos=1) == "Not authorized"
        assert alice.publish("config/mode", b"read-only", qos=1) == "Not authorized"
        assert alice.publish("sensors/door", b"open", qos=1) == "Success"
        # Published in this order by one client, so the denied messages would have come first.
        assert watcher.expect("#").topic == "sensors/door"
    secured.wait_for_log(r"Denied PUBLISH from probe-\w+ \(d0, q1, r0, m\d+, 'secrets/plans'")


def test_acl_denial_is_silent_under_mqtt311(make_broker: MakeBroker) -> None:
    secured = make_broker(password_users=USERS, acl=ACL)
    with (
        Probe(secured.host, secured.port, username="bob", password="builder") as bob,
        Probe(secured.host, secured.port, protocol=mqtt.MQTTv311, username="alice", password="wonderland") as alice,
    ):
        alice.subscribe("config/#")
        assert alice.publish("secrets/plans", b"x", qos=1) is None  # 3.1.1 PUBACK has no reason code
        bob.publish("config/mode", b"eco", qos=1)  # alice may read config/#
        assert alice.expect("config/#").payload == b"eco"
    secured.wait_for_log(r"Denied PUBLISH from probe-\w+ \(d0, q1, r0, m\d+, 'secrets/plans'")


def test_tls_connects_with_the_ca(make_broker: MakeBroker, tls_files: TlsFiles) -> None:
    secure = make_broker(tls=tls_files)
    # Both names the server certificate carries: the IP SAN and the DNS SAN.
    for host in (secure.host, "localhost"):
        with Probe(host, secure.port, ca_cert=tls_files.ca_cert) as probe:
            probe.subscribe("t")
            probe.publish("t", b"secret", qos=2)
            assert probe.expect("t").payload == b"secret"


def test_tls_fails_with_the_wrong_ca(make_broker: MakeBroker, tls_files: TlsFiles) -> None:
    secure = make_broker(tls=tls_files)
    probe = Probe(secure.host, secure.port, ca_cert=tls_files.other_ca_cert)
    with pytest.raises(ConnectFailed) as failed:
        probe.connect()
    assert isinstance(failed.value.__cause__, ssl.SSLCertVerificationError)
    probe.close()


def test_tls_port_refuses_plain_mqtt(make_broker: MakeBroker, tls_files: TlsFiles) -> None:
    secure = make_broker(tls=tls_files)
    probe = Probe(secure.host, secure.port, protocol=mqtt.MQTTv311)
    with pytest.raises(ConnectFailed):
        probe.connect(timeout=5)
    probe.close()


def test_mtls_connects_with_a_client_certificate(make_broker: MakeBroker, tls_files: TlsFiles) -> None:
    mutual = make_broker(tls=tls_files, require_certificate=True)
    with Probe(
        mutual.host,
        mutual.port,
        protocol=mqtt.MQTTv311,
        ca_cert=tls_files.ca_cert,
        client_cert=tls_files.client_cert,
        client_key=tls_files.client_key,
    ) as probe:
        probe.subscribe("m")
        probe.publish("m", b"hello", qos=1)
        assert probe.expect("m").payload == b"hello"


@pytest.mark.parametrize("client_cert", ["none", "other-ca"])
def test_mtls_refuses_without_a_trusted_client_certificate(
    make_broker: MakeBroker, tls_files: TlsFiles, client_cert: str
) -> None:
    mutual = make_broker(tls=tls_files, require_certificate=True)
    cert = {"none": (None, None), "other-ca": (tls_files.other_client_cert, tls_files.other_client_key)}
    certfile, keyfile = cert[client_cert]
    probe = Probe(mutual.host, mutual.port, ca_cert=tls_files.ca_cert, client_cert=certfile, client_key=keyfile)
    # Under TLS 1.3 the client's handshake completes before the server checks the client
    # certificate, so the refusal arrives as a dropped connection, not as an error from connect().
    with pytest.raises(ConnectFailed, match="dropped before CONNACK"):
        probe.connect()
    probe.close()
    expected = {"none": "peer did not return a certificate", "other-ca": "certificate verify failed"}
    mutual.wait_for_log(expected[client_cert])


def test_mqtt5_request_response(broker: MosquittoBroker) -> None:
    with Probe(broker.host, broker.port) as responder, Probe(broker.host, broker.port) as requester:
        responder.subscribe("svc/echo")

        def answer() -> None:
            request = responder.expect("svc/echo", timeout=5)
            responder.reply(request, request.payload.upper())

        # request() blocks this thread until the response, so the responder runs on its own thread.
        worker = threading.Thread(target=answer, name="responder")
        worker.start()
        response = requester.request(
            "svc/echo", b"ping", response_topic="svc/replies/r1", correlation_data=b"id-1", timeout=5
        )
        worker.join(timeout=5)
        assert not worker.is_alive()
        assert (response.topic, response.payload, response.correlation_data) == (
            "svc/replies/r1",
            b"PING",
            b"id-1",
        )


def test_request_needs_mqtt5(broker: MosquittoBroker) -> None:
    with (
        Probe(broker.host, broker.port, protocol=mqtt.MQTTv311) as probe,
        pytest.raises(ProbeError, match="MQTT 5"),
    ):
        probe.request("svc/echo", b"ping")


def test_close_is_idempotent_and_frees_the_port(tmp_path: Path) -> None:
    with MosquittoBroker(tmp_path) as own:
        port = own.port
        assert own.running
    assert not own.running
    own.close()
    with socket.socket() as client, pytest.raises(ConnectionRefusedError):
        client.connect((own.host, port))
    with pytest.raises(BrokerError, match="closed"):
        own.start()


def test_start_reports_a_taken_port(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        with pytest.raises(BrokerError, match="already in use"):
            MosquittoBroker(tmp_path, port=taken).start()


def test_a_broken_config_is_reported_with_the_log(tmp_path: Path, tls_files: TlsFiles) -> None:
    missing = dataclasses.replace(tls_files, server_key=tmp_path / "no-such.key")
    with pytest.raises(BrokerError, match="exited at start-up"):
        MosquittoBroker(tmp_path, tls=missing).start()
