"""MQTT that a fleet can trust: real Mosquitto brokers with passwords, ACLs, TLS and mTLS;
outages with nothing lost; the command channel with both reply paths; stats; publish modes."""

from __future__ import annotations

import json
import shutil
import signal
import time

import cv2
import numpy as np
import pytest
from paho.mqtt.enums import MQTTProtocolVersion
from support.broker import Probe, free_port
from support.daemon import DaemonProcess, write_config
from support.testdata import image, model

SMALL = model("mobilenet_v1_0.25_128_quant")
PREFIX = "edge-classifier/testpi"


def config_text(folder, port, *, loop=True, fps=0.0, mqtt="", extra="", model_path=SMALL, model_dir="") -> str:
    return f"""
[device]
id = "testpi"
[source]
kind = "images"
uri = "{folder}"
loop = {str(loop).lower()}
fps = {fps}
[model]
path = "{model_path}"
accelerator = "cpu"
{f'dir = "{model_dir}"' if model_dir else ""}
[classify]
top_k = 2
threshold = 0.0
[mqtt]
host = "127.0.0.1"
port = {port}
reconnect_min = 0.1
reconnect_max = 0.5
{mqtt}
{extra}
"""


@pytest.fixture
def pictures(tmp_path):
    folder = tmp_path / "pics"
    folder.mkdir()
    for index, name in enumerate(("parrot.jpg", "bird.bmp")):
        shutil.copy(image(name), folder / f"{index}_{name}")
    return folder


def results_of(messages):
    return [json.loads(m.payload) for m in messages if m.topic == f"{PREFIX}/result"]


# --- connection: passwords, ACL, TLS ----------------------------------------------------------

ACL = f"""user daemon
topic readwrite {PREFIX}/#
topic read edge-classifier/all/#
user watcher
topic read {PREFIX}/#
topic write {PREFIX}/cmd/#
"""


def test_password_and_acl(tmp_path, make_broker, pictures):
    broker = make_broker(password_users={"daemon": "s3cret-pw", "watcher": "watch"}, acl=ACL)
    secret = tmp_path / "mqtt-password"
    secret.write_text("s3cret-pw\n")
    config = write_config(tmp_path / "config.toml", config_text(
        pictures, broker.port, fps=20, mqtt=f'username = "daemon"\npassword_file = "{secret}"'))
    with Probe(broker.host, broker.port, username="watcher", password="watch") as probe:
        probe.subscribe(f"{PREFIX}/#")
        with DaemonProcess("-c", str(config)) as daemon:
            assert probe.expect(f"{PREFIX}/status").text == "online"
            assert json.loads(probe.expect(f"{PREFIX}/result").payload)["device"] == "testpi"
            reply = probe.request(f"{PREFIX}/cmd/status", b"{}", response_topic=f"{PREFIX}/replies/w1",
                                  correlation_data=b"w1")
            assert json.loads(reply.payload)["ok"] is True
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(10) == 0
    assert "s3cret-pw" not in daemon.log


def test_wrong_password_is_logged_once_and_retried(tmp_path, make_broker, pictures):
    broker = make_broker(password_users={"daemon": "right"}, acl=ACL)
    config = write_config(tmp_path / "config.toml", config_text(
        pictures, broker.port, fps=20, mqtt='username = "daemon"\npassword = "wrong-password"'))
    with DaemonProcess("-c", str(config), "--stdout") as daemon:
        daemon.wait_for_log(r"MQTT broker 127\.0\.0\.1:\d+ refused the connection: Not authorized")
        # paho keeps retrying with backoff: the broker sees several attempts ...
        deadline = time.monotonic() + 15
        while broker.log_text().count("not authorised") + broker.log_text().count("not authorized") < 3:
            assert time.monotonic() < deadline, broker.log_text()
            broker.wait_for_log(r"(?i)not authori[sz]ed", timeout=5, after=len(broker.log_text()))
        # ... the daemon logged the refusal once, and kept classifying.
        assert daemon.log.count("refused the connection") == 1
        assert daemon.next_result()["device"] == "testpi"
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(10) == 0
    assert "wrong-password" not in daemon.log


def test_systemd_credential_supplies_the_password(tmp_path, make_broker, pictures):
    broker = make_broker(password_users={"daemon": "from-credential"}, acl=ACL)
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "mqtt-password").write_text("from-credential\n")
    config = write_config(tmp_path / "config.toml", config_text(pictures, broker.port, fps=20,
                                                                mqtt='username = "daemon"'))
    with Probe(broker.host, broker.port, username="daemon", password="from-credential") as probe:
        probe.subscribe(f"{PREFIX}/status")
        with DaemonProcess("-c", str(config), env={"CREDENTIALS_DIRECTORY": str(credentials)}) as daemon:
            assert probe.expect(f"{PREFIX}/status").text == "online"
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(10) == 0


def test_tls_with_ca(tmp_path, make_broker, tls_files, pictures):
    broker = make_broker(tls=tls_files)
    config = write_config(tmp_path / "config.toml", config_text(
        pictures, broker.port, fps=20, mqtt=f'[mqtt.tls]\nenabled = true\nca_file = "{tls_files.ca_cert}"'))
    with Probe(broker.host, broker.port, ca_cert=tls_files.ca_cert) as probe:
        probe.subscribe(f"{PREFIX}/result")
        with DaemonProcess("-c", str(config)) as daemon:
            assert json.loads(probe.expect(f"{PREFIX}/result", timeout=20).payload)["top"][0]["id"] == 89
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(10) == 0


def test_tls_with_the_wrong_ca_is_logged_clearly(tmp_path, make_broker, tls_files, pictures):
    broker = make_broker(tls=tls_files)
    config = write_config(tmp_path / "config.toml", config_text(
        pictures, broker.port, fps=20, mqtt=f'[mqtt.tls]\nenabled = true\nca_file = "{tls_files.other_ca_cert}"'))
    with DaemonProcess("-c", str(config), "--stdout") as daemon:
        daemon.wait_for_log(r"TLS handshake failed: .*CERTIFICATE_VERIFY_FAILED")
        daemon.next_result()  # still classifying
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(10) == 0
    assert daemon.log.count("TLS handshake failed") == 1


def test_mutual_tls(tmp_path, make_broker, tls_files, pictures):
    broker = make_broker(tls=tls_files, require_certificate=True)
    config = write_config(tmp_path / "config.toml", config_text(pictures, broker.port, fps=20, mqtt=f"""
[mqtt.tls]
enabled = true
ca_file = "{tls_files.ca_cert}"
cert_file = "{tls_files.client_cert}"
key_file = "{tls_files.client_key}"
"""))
    with Probe(broker.host, broker.port, ca_cert=tls_files.ca_cert, client_cert=tls_files.client_cert,
               client_key=tls_files.client_key) as probe:
        probe.subscribe(f"{PREFIX}/result")
        with DaemonProcess("-c", str(config)) as daemon:
            probe.expect(f"{PREFIX}/result", timeout=20)
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(10) == 0


def test_missing_tls_file_is_a_config_error(tmp_path, pictures):
    config = write_config(tmp_path / "config.toml", config_text(
        pictures, free_port(), mqtt=f'[mqtt.tls]\nenabled = true\nca_file = "{tmp_path / "nope.pem"}"'))
    with DaemonProcess("-c", str(config)) as daemon:
        assert daemon.wait(30) == 78
    assert f"mqtt.tls.ca_file: {tmp_path / 'nope.pem'}: file not found" in daemon.log


# --- outages: nothing lost, in order ----------------------------------------------------------

def persistent_probe(broker, client_id="watcher") -> Probe:
    """A subscriber whose session (and the messages queued for it) the broker keeps while it
    is away, across a broker restart too (mosquitto 2.0.11 restores persisted MQTT 3.1.1
    clean_session=false sessions; it did not restore an MQTT 5 session-expiry one here)."""
    return Probe(broker.host, broker.port, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv311,
                 clean_session=False).connect()


def test_broker_outage_mid_stream_loses_nothing(tmp_path, make_broker, pictures):
    broker = make_broker(persistence=True)
    config = write_config(tmp_path / "config.toml", config_text(pictures, broker.port, fps=50))
    probe = persistent_probe(broker)
    try:
        probe.subscribe(f"{PREFIX}/result", qos=1)
        with DaemonProcess("-c", str(config), "--stdout") as daemon:
            first = json.loads(probe.expect(f"{PREFIX}/result", timeout=20).payload)
            broker.stop()
            lost = daemon.wait_for_log(r"MQTT connection to .* lost")
            during = [daemon.next_result() for _ in range(100)]  # 2 s of results with no broker
            broker.start()
            daemon.wait_for_log(r"MQTT connected to", after=lost)
            last = daemon.next_result()
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(10) == 0
            printed = [*during, last]
            while not daemon.results.empty():
                printed.append(daemon.results.get_nowait())
        received = [first]
        while received[-1]["frame"] < printed[-1]["frame"]:
            received.append(json.loads(probe.expect(f"{PREFIX}/result", timeout=20).payload))
    finally:
        probe.close()
    frames = [r["frame"] for r in received]
    assert frames == sorted(frames), "results arrived out of order"
    got = set(frames)
    missing = [p["frame"] for p in printed if p["frame"] not in got]
    assert not missing, f"{len(missing)} results produced during the outage never arrived: {missing[:10]}"


def test_disk_spool_survives_sigkill(tmp_path, make_broker, pictures):
    """With spool_spill_after = 0 every result is on disk before it is printed."""
    port = free_port()
    spool = tmp_path / "spool"
    config = write_config(tmp_path / "config.toml", config_text(
        pictures, port, fps=50, extra=f'[publish]\nspool_dir = "{spool}"\nspool_spill_after = 0'))
    # First run: no broker at all; results are spooled to disk, then the daemon is killed.
    with DaemonProcess("-c", str(config), "--stdout") as first:
        spooled = [first.next_result(30) for _ in range(40)]
        first.signal(signal.SIGKILL)
        first.wait(10)
        while not first.results.empty():
            spooled.append(first.results.get_nowait())
    broker = make_broker(port=port)
    with Probe(broker.host, broker.port) as probe:
        probe.subscribe(f"{PREFIX}/result")
        config.write_text(config.read_text().replace("loop = true", "loop = false"))
        with DaemonProcess("-c", str(config), "--stdout") as second:
            assert second.wait(30) == 0, second.log
            second.wait_for_log(r"spool: \d+ undelivered messages recovered")
            fresh = [second.next_result(1) for _ in range(2)]
        expected = len(spooled) + len(fresh)
        received = [json.loads(m.payload) for m in probe.collect(expected, timeout=20)]
    # Every spooled result first, in order, then the new run's (its frames count from 1 again).
    assert [r["frame"] for r in received[: len(spooled)]] == [r["frame"] for r in spooled]
    assert [r["ts"] for r in received[: len(spooled)]] == [r["ts"] for r in spooled]
    assert received[len(spooled):] == fresh


def test_spool_overflow_drops_oldest_and_says_so(tmp_path, make_broker, pictures):
    broker = make_broker(persistence=True)
    probe = persistent_probe(broker)  # subscribed before the daemon ever connects
    try:
        probe.subscribe(f"{PREFIX}/#", qos=1)
        broker.stop()
        config = write_config(tmp_path / "config.toml", config_text(
            pictures, broker.port, fps=100, extra="[publish]\nspool_max_messages = 20"))
        with DaemonProcess("-c", str(config), "--stdout") as daemon:
            produced = [daemon.next_result(30) for _ in range(60)]
            daemon.wait_for_log(r"spool full, dropped the oldest undelivered messages")
            broker.start()
            event = json.loads(probe.expect(f"{PREFIX}/event", timeout=20).payload)
            while event["event"] != "spool_overflow":
                event = json.loads(probe.expect(f"{PREFIX}/event", timeout=20).payload)
            assert event["dropped"] >= 40
            # What was kept is the newest, in order.
            kept = [json.loads(probe.expect(f"{PREFIX}/result", timeout=20).payload) for _ in range(5)]
            assert [r["frame"] for r in kept] == sorted(r["frame"] for r in kept)
            assert kept[0]["frame"] > produced[39]["frame"]
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(10) == 0
    finally:
        probe.close()


# --- commands and replies ---------------------------------------------------------------------

@pytest.fixture
def running(tmp_path, broker, pictures):
    config = write_config(tmp_path / "config.toml", config_text(
        pictures, broker.port, fps=30, extra="[publish]\nstats_interval = 0.5\n[commands]\nmax_payload = 1024"))
    with DaemonProcess("-c", str(config), "--stdout") as daemon:
        with Probe(broker.host, broker.port) as probe:
            probe.subscribe(f"{PREFIX}/status")
            assert probe.expect(f"{PREFIX}/status", timeout=20).text == "online"
            yield daemon, probe, broker
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(10) == 0


def ask(probe: Probe, name: str, payload: bytes | dict = b"{}", correlation: bytes = b"c1", prefix=PREFIX) -> dict:
    data = json.dumps(payload).encode() if isinstance(payload, dict) else payload
    reply = probe.request(f"{prefix}/cmd/{name}", data, response_topic=f"test/replies/{correlation.hex()}",
                          correlation_data=correlation, timeout=10)
    assert reply.correlation_data == correlation
    return json.loads(reply.payload)


def test_status_reports_the_full_state(running):
    _, probe, _ = running
    reply = ask(probe, "status")
    assert reply["ok"] is True and reply["command"] == "status"
    state = reply["state"]
    assert state["device"] == "testpi"
    assert state["model"]["name"] == "mobilenet_v1_0.25_128_quant"
    assert state["model"]["accelerator"] == "cpu"
    assert state["model"]["labels"] == "embedded"
    assert state["source"]["name"] == "pics"
    assert state["mqtt"]["connected"] is True
    assert state["settings"]["classify"]["top_k"] == 2


def test_pause_and_resume(running):
    daemon, probe, _ = running
    daemon.next_result()
    assert ask(probe, "pause") == {"command": "pause", "ok": True, "paused": True}
    assert ask(probe, "status")["state"]["paused"] is True
    while not daemon.results.empty():
        daemon.results.get_nowait()
    with pytest.raises(AssertionError, match="no result"):
        daemon.next_result(1.0)  # nothing is classified while paused
    assert ask(probe, "resume")["paused"] is False
    assert daemon.next_result(10)["device"] == "testpi"


def test_config_changes_apply_and_bad_ones_change_nothing(running):
    daemon, probe, _ = running
    reply = ask(probe, "config", {"top_k": 1, "classify": {"threshold": 0.0}})
    assert reply["ok"] is True
    assert reply["config"]["classify"]["top_k"] == 1
    deadline = time.monotonic() + 10
    while len(daemon.next_result()["top"]) != 1:
        assert time.monotonic() < deadline
    bad = ask(probe, "config", {"top_k": "three", "fps": -1, "mqtt": {"port": 1}})
    assert bad["ok"] is False
    assert "classify.top_k: must be an integer, not a string" in bad["problems"]
    assert "source.fps: must be >= 0, not -1.0" in bad["problems"]
    assert any(p.startswith("mqtt: cannot be changed at runtime") for p in bad["problems"])
    assert ask(probe, "status")["state"]["settings"]["classify"]["top_k"] == 1  # unchanged


def test_snapshot_publishes_the_latest_frame_as_jpeg(running):
    daemon, probe, _ = running
    daemon.next_result()  # a frame has been captured
    probe.subscribe(f"{PREFIX}/snapshot")
    reply = ask(probe, "snapshot")
    assert reply["ok"] is True, reply
    jpeg = probe.expect(f"{PREFIX}/snapshot").payload
    assert len(jpeg) == reply["bytes"]
    picture = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert picture.shape[1::-1] == (reply["width"], reply["height"])


def test_reload_command(running):
    _, probe, _ = running
    assert ask(probe, "reload") == {"command": "reload", "ok": True, "reloaded": True}


@pytest.mark.parametrize(("name", "payload", "error"), [
    ("status", b"{not json", "payload is not valid JSON"),
    ("status", b"[1, 2]", "payload must be a JSON object, not an array"),
    ("status", b"\xff\xfe", "payload is not UTF-8"),
    ("frobnicate", b"{}", "unknown command 'frobnicate'"),
    ("status", json.dumps({"x": "y" * 2000}).encode(), "over the limit of 1024 (commands.max_payload)"),
    ("pause", b'{"now": true}', "unexpected arguments: now"),
    ("config", b'{"threshold": "high"}', "classify.threshold: must be a number, not a string"),
    ("config", b'{"threshold": NaN}', "classify.threshold: must be a finite number"),
])
def test_bad_requests_get_an_error_reply_and_change_nothing(running, name, payload, error):
    _, probe, _ = running
    reply = ask(probe, name, payload)
    assert reply["ok"] is False
    assert error in reply["error"]
    state = ask(probe, "status")["state"]
    assert state["paused"] is False
    assert state["settings"]["classify"]["threshold"] == 0.0


def test_mqtt311_replies_on_the_reply_topic_with_request_id(tmp_path, broker, pictures):
    config = write_config(tmp_path / "config.toml", config_text(pictures, broker.port, fps=20,
                                                                mqtt='protocol = "3.1.1"'))
    with Probe(broker.host, broker.port, protocol=MQTTProtocolVersion.MQTTv311) as probe:
        probe.subscribe(f"{PREFIX}/status", f"{PREFIX}/reply/#")
        with DaemonProcess("-c", str(config)) as daemon:
            assert probe.expect(f"{PREFIX}/status", timeout=20).text == "online"
            probe.publish(f"{PREFIX}/cmd/status", b'{"request_id": "abc-1"}', qos=1)
            reply = json.loads(probe.expect(f"{PREFIX}/reply/status").payload)
            assert reply["ok"] is True and reply["request_id"] == "abc-1"
            probe.publish(f"{PREFIX}/cmd/nope", b'{"request_id": 7}', qos=1)
            reply = json.loads(probe.expect(f"{PREFIX}/reply/nope").payload)
            assert reply == {"command": "nope", "ok": False, "request_id": 7,
                             "error": reply["error"]} and "unknown command" in reply["error"]
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(10) == 0


def test_fleet_topic_and_mqtt5_without_response_topic(running):
    _, probe, _ = running
    reply = ask(probe, "status", prefix="edge-classifier/all")
    assert reply["ok"] is True and reply["state"]["device"] == "testpi"
    probe.subscribe(f"{PREFIX}/reply/status")
    probe.publish(f"{PREFIX}/cmd/status", b'{"request_id": "r5"}', qos=1)
    assert json.loads(probe.expect(f"{PREFIX}/reply/status").payload)["request_id"] == "r5"


def test_stale_retained_commands_are_ignored(tmp_path, broker, pictures):
    with Probe(broker.host, broker.port) as setter:
        setter.publish(f"{PREFIX}/cmd/pause", b"{}", qos=1, retain=True)
    config = write_config(tmp_path / "config.toml", config_text(pictures, broker.port, fps=20))
    with Probe(broker.host, broker.port) as probe:
        probe.subscribe(f"{PREFIX}/status")
        with DaemonProcess("-c", str(config), "--stdout") as daemon:
            assert probe.expect(f"{PREFIX}/status", timeout=20).text == "online"
            daemon.wait_for_log(r"ignoring a stale retained command on .*/cmd/pause")
            assert ask(probe, "status")["state"]["paused"] is False
            daemon.next_result()
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(10) == 0


def test_stats_are_published_periodically(running):
    _, probe, _ = running
    probe.subscribe(f"{PREFIX}/stats")
    stats = json.loads(probe.expect(f"{PREFIX}/stats", timeout=10).payload)
    stats = json.loads(probe.expect(f"{PREFIX}/stats", timeout=10).payload)  # a full interval
    for key in ("fps_in", "fps_out", "dropped", "inference_ms_p50", "inference_ms_p95", "accelerator", "model",
                "uptime_s", "spool_depth", "rss_mb", "cpu_temp_c"):
        assert key in stats
    assert stats["fps_out"] > 0
    assert stats["accelerator"] == "cpu"
    assert stats["rss_mb"] > 10
    assert stats["inference_ms_p50"] <= stats["inference_ms_p95"]


# --- publish modes ---------------------------------------------------------------------------

def test_change_mode_publishes_label_changes_only(tmp_path, broker):
    folder = tmp_path / "seq"
    folder.mkdir()
    for index, name in enumerate(["parrot.jpg"] * 3 + ["bird.bmp"] * 3 + ["parrot.jpg"] * 2):
        shutil.copy(image(name), folder / f"{index:02d}{image(name).suffix}")
    config = write_config(tmp_path / "config.toml", config_text(
        folder, broker.port, loop=False, extra='[publish]\nmode = "change"\nheartbeat = 0'))
    with Probe(broker.host, broker.port) as probe:
        probe.subscribe(f"{PREFIX}/result")
        with DaemonProcess("-c", str(config)) as daemon:
            assert daemon.wait(30) == 0
        results = [json.loads(m.payload) for m in probe.collect(3, timeout=10)]
        assert probe.pending() == []
    assert [(r["frame"], r["top"][0]["id"]) for r in results] == [(1, 89), (4, 20), (7, 89)]


# --- Home Assistant discovery ------------------------------------------------------------------

def test_home_assistant_discovery_before_online_and_again_on_birth(tmp_path, broker, pictures):
    store = tmp_path / "store"
    store.mkdir()
    config = write_config(tmp_path / "config.toml", config_text(
        pictures, broker.port, fps=10, extra="[homeassistant]\nenabled = true", model_dir=store))
    device_topic = "homeassistant/device/testpi/config"
    with Probe(broker.host, broker.port) as probe:
        probe.subscribe("homeassistant/#", f"{PREFIX}/status")
        with DaemonProcess("-c", str(config)) as daemon:
            seen = []
            while True:
                message = probe.expect("#", timeout=20)
                seen.append(message)
                if message.topic == f"{PREFIX}/status":
                    break
            # All before `online`: the first start migrates from the per-entity layout an older
            # release used (migrate, then the device config, then the old topics cleared).
            configs = [m for m in seen if m.topic == device_topic]
            assert len(configs) == 1
            old = [m for m in seen if m.topic.startswith("homeassistant/sensor/")]
            assert {m.payload for m in old} == {b'{"migrate_discovery":true}', b""}
            with Probe(broker.host, broker.port) as late:  # retained: a late Home Assistant finds it
                late.subscribe("homeassistant/#")
                assert late.expect("homeassistant/#", timeout=10).topic == device_topic
            discovery = json.loads(configs[0].payload)
            label = discovery["components"]["label"]
            assert label["state_topic"] == f"{PREFIX}/result"
            assert discovery["availability"][0]["topic"] == f"{PREFIX}/status"
            assert discovery["device"]["identifiers"] == ["edge-classifier_testpi"]
            # Home Assistant restarts and says so: the discovery comes again.
            probe.publish("homeassistant/status", b"online", qos=1)
            assert probe.expect(device_topic, timeout=10).payload == configs[0].payload
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(10) == 0
