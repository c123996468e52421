"""Every connection failure is logged once per distinct reason, in words, with the fix when one is
known: a stand-in broker (a small TCP server here) that closes before CONNACK, one that answers
CONNACK "unsupported protocol version", and a real Mosquitto that will not take QoS 2."""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Iterator

import pytest
from support.broker import LOOPBACK, MosquittoBroker
from support.daemon import DaemonProcess, write_config
from test_mqtt import config_text

CONNACK_UNSUPPORTED_VERSION = b"\x20\x02\x00\x01"  # MQTT 3.1.1 CONNACK, return code 1


class StandIn:
    """Accepts TCP connections, reads the CONNECT, answers ``reply`` (maybe nothing) and closes:
    what a broker that does not speak the client's MQTT version does."""

    def __init__(self, reply: bytes | None) -> None:
        """``reply`` None: say nothing and keep the connection open until the client closes it
        (what amqtt does with an MQTT 5 CONNECT that has a Will); ``given_up`` counts those."""
        self.reply = reply
        self.given_up = 0
        self._server = socket.create_server((LOOPBACK, 0))
        self.port: int = self._server.getsockname()[1]
        self.attempts = 0
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._serve, name="stand-in", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return  # closed
            with conn, contextlib.suppress(OSError):
                conn.recv(4096)  # the CONNECT
                if self.reply is None:
                    conn.settimeout(60)
                    if conn.recv(4096) == b"":  # the client closed it
                        self.given_up += 1
                else:
                    conn.sendall(self.reply)
            with self._changed:
                self.attempts += 1
                self._changed.notify_all()

    def wait_attempts(self, count: int, timeout: float = 20.0) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: self.attempts >= count, timeout), self.attempts

    def close(self) -> None:
        self._server.close()


@pytest.fixture
def stand_in(request: pytest.FixtureRequest) -> Iterator[StandIn]:
    server = StandIn(request.param)
    yield server
    server.close()


def run_against(tmp_path, pictures, port: int, mqtt: str = "") -> DaemonProcess:
    config = write_config(tmp_path / "config.toml", config_text(pictures, port, fps=20, mqtt=mqtt))
    return DaemonProcess("-c", str(config), "--stdout")


@pytest.mark.parametrize("stand_in", [b""], indirect=True)
def test_closed_before_connack_says_so_once_with_the_protocol_hint(tmp_path, pictures, stand_in):
    with run_against(tmp_path, pictures, stand_in.port) as daemon:
        daemon.wait_for_log(r'closed the connection without answering CONNECT \(no CONNACK\).*'
                            r'set mqtt\.protocol = "3\.1\.1"')
        stand_in.wait_attempts(5)
        assert daemon.next_result()["device"] == "testpi"  # classifying all along
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(10) == 0
    assert daemon.log.count("without answering CONNECT") == 1, daemon.log
    assert "Unspecified error" not in daemon.log


@pytest.mark.parametrize("stand_in", [b""], indirect=True)
def test_closed_before_connack_under_311_asks_whether_it_is_an_mqtt_listener(tmp_path, pictures, stand_in):
    with run_against(tmp_path, pictures, stand_in.port, mqtt='protocol = "3.1.1"') as daemon:
        daemon.wait_for_log(r"no CONNACK\): is 127\.0\.0\.1:\d+ an MQTT listener\? If it expects TLS")
        stand_in.wait_attempts(3)
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(10) == 0
    assert daemon.log.count("without answering CONNECT") == 1, daemon.log


@pytest.mark.parametrize("stand_in", [None], indirect=True)
def test_a_connect_left_unanswered_is_given_up_after_10_s_with_the_hint(tmp_path, pictures, stand_in):
    # With paho alone the CONNACK was waited for a whole keepalive (30 s here), with nothing
    # logged meanwhile. The wait for the log is shorter than the keepalive, and the words say
    # which side gave up.
    with run_against(tmp_path, pictures, stand_in.port, mqtt="keepalive = 30") as daemon:
        daemon.wait_for_log(r'did not answer CONNECT within 10 s \(no CONNACK\).*set mqtt\.protocol = "3\.1\.1"',
                            timeout=25)
        stand_in.wait_attempts(1)
        assert stand_in.given_up == 1  # the daemon closed it, not the stand-in
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(10) == 0
    assert daemon.log.count("did not answer CONNECT") == 1, daemon.log


@pytest.mark.parametrize("stand_in", [CONNACK_UNSUPPORTED_VERSION], indirect=True)
def test_unsupported_protocol_version_points_at_the_setting(tmp_path, pictures, stand_in):
    with run_against(tmp_path, pictures, stand_in.port) as daemon:
        daemon.wait_for_log(r'refused the connection: Unsupported protocol version '
                            r'\(the broker only speaks MQTT 3\.1\.1: set mqtt\.protocol = "3\.1\.1"\)')
        stand_in.wait_attempts(5)
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(10) == 0
    assert daemon.log.count("refused the connection") == 1, daemon.log
    assert "without answering CONNECT" not in daemon.log  # the refusal said it all
    assert "Unspecified error" not in daemon.log


class QoS1Broker(MosquittoBroker):
    """A real Mosquitto whose listener takes QoS 0 and 1 only (``max_qos 1``), as NATS does."""

    def _write_files(self) -> None:
        super()._write_files()
        with self.conf_path.open("a") as conf:
            conf.write("max_qos 1\n")


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_qos2_refused_by_the_broker_is_logged_once_with_the_fix(tmp_path, pictures, protocol):
    with QoS1Broker(tmp_path / "broker") as broker:
        broker.start()
        with run_against(tmp_path, pictures, broker.port, mqtt=f'qos = 2\nprotocol = "{protocol}"') as daemon:
            daemon.wait_for_log(r"MQTT connection to .* lost: .*set mqtt\.qos = 1")
            for _ in range(4):  # it connects and is thrown out again, over and over
                at = len(broker.log_text())
                broker.wait_for_log(r"New client connected", timeout=10, after=at)
                broker.wait_for_log(r"(?i)disconnect|closed|error", timeout=10, after=at)
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(10) == 0
    said = [line.split(" ", 2)[2] for line in daemon.log.splitlines()
            if "edge_classifier.publish.connection" in line and "MQTT connected to" not in line]
    assert len(said) == len(set(said)) <= 4, said  # each distinct reason once, not once per drop
    assert daemon.log.count("MQTT connected to") <= 2, daemon.log  # then DEBUG while it flaps
    assert "set mqtt.qos = 1" in daemon.log
    assert "Unspecified error" not in daemon.log
