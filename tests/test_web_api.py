"""The web side of a real daemon: password, status/stats API, /metrics against the MQTT stats,
commands through the MQTT command path. Real broker, real LiteRT, real HTTP."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import cv2
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.broker import Probe
from support.daemon import DaemonProcess
from support.testdata import image, model
from support.web import CAMERA, PASSWORD, PREFIX, WebClient, classify, jpeg, online, start_web_daemon, web_config

V1_025 = model("mobilenet_v1_0.25_128_quant")
ROUTES = ["/", "/api/status", "/api/stats", "/api/sources", "/api/sources/cams/door/image/frame.jpg",
          "/api/classes", "/api/models", "/metrics", "/api/stream"]


def metrics(client: WebClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reply = client.get("/metrics")
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(reply.body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_not_loopback_without_password_refuses_to_start_and_check_config_says_why(tmp_path, broker):
    config, _ = web_config(tmp_path, broker.port, model=V1_025, web='host = "0.0.0.0"')
    with DaemonProcess("-c", str(config)) as daemon:
        assert daemon.wait(60) == 78
    assert "web.host: '0.0.0.0' is not a loopback address, so the web view needs a password" in daemon.log
    assert "model " not in daemon.log  # refused before the model was loaded
    check = subprocess.run([sys.executable, "-m", "edge_classifier", "check-config", "-c", str(config)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 78
    assert "web.host: '0.0.0.0' is not a loopback address" in check.stderr


def test_a_taken_port_fails_the_start_with_exit_69(tmp_path, broker):
    import socket

    config, port = web_config(tmp_path, broker.port, model=V1_025)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        with DaemonProcess("-c", str(config)) as daemon:
            assert daemon.wait(60) == 69  # EX_UNAVAILABLE: systemd retries (an old instance may hold it)
    assert f"web.port: cannot listen on 127.0.0.1:{port}: Address already in use" in daemon.log


def test_with_a_password_nothing_answers_without_it(tmp_path, broker):
    secret = tmp_path / "web-password"
    secret.write_text(PASSWORD + "\n")  # a trailing newline, as echo writes it
    config, port = web_config(tmp_path, broker.port, model=V1_025,
                              web=f'host = "0.0.0.0"\npassword_file = "{secret}"')
    with Probe(broker.host, broker.port) as probe:
        probe.subscribe(f"{PREFIX}/status", f"{PREFIX}/result")
        with start_web_daemon(config) as daemon:
            online(probe)
            classify(probe, cv2.imread(str(image("parrot.jpg"))))
            for client in (WebClient(port), WebClient(port, "wrong"), WebClient(port, PASSWORD, user="admin"),
                           WebClient(port, headers={"Authorization": "Bearer wrong"}),
                           WebClient(port, headers={"Authorization": "Basic !!notbase64"})):
                for route in ROUTES:
                    reply = client.get(route)
                    assert reply.status == 401, (route, client)
                    assert reply.headers["WWW-Authenticate"].startswith('Basic realm="edge-classifier"')
                    assert b"webpi" not in reply.body and b"{" not in reply.body and len(reply.body) < 100
                reply = client.post("/api/cmd/pause", {})
                assert reply.status == 401
            good = WebClient(port, PASSWORD)
            assert good.get("/api/status").json()["paused"] is False  # the wrong pause never ran
            bearer = WebClient(port, headers={"Authorization": f"Bearer {PASSWORD}"})
            for route in ROUTES[:-1]:
                assert bearer.get(route).status == 200, route
            assert "web: 1 request(s) with a wrong password, the latest from 127.0.0.1" in daemon.log
            assert PASSWORD not in daemon.log and "wrong" not in daemon.log.replace("a wrong password", "")
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(15) == 0


def test_metrics_status_and_stats_match_what_mqtt_says(tmp_path, broker):
    config, port = web_config(tmp_path, broker.port, model=V1_025)
    client = WebClient(port)
    pictures = [cv2.imread(str(image(name))) for name in ("parrot.jpg", "cat.bmp", "bird.bmp")]
    with Probe(broker.host, broker.port) as probe:
        probe.subscribe(f"{PREFIX}/status", f"{PREFIX}/result", f"{PREFIX}/stats")
        with start_web_daemon(config) as daemon:
            online(probe)
            published = [classify(probe, pictures[i % 3]) for i in range(6)]
            # Nothing moves now: the next stats message and a scrape see the same counters.
            while json.loads(probe.expect(f"{PREFIX}/stats", timeout=10).payload)["results"] < 6:
                pass
            stats = json.loads(probe.expect(f"{PREFIX}/stats", timeout=10).payload)
            samples = metrics(client)
            source = (("source", "cams/+/image"),)  # the capture's source; frames name their topic
            frames = (("source", CAMERA),)
            assert stats["frames"] == 6 and stats["results"] == 6
            assert samples[("edge_classifier_frames_in_total", source)] == stats["frames"]
            assert samples[("edge_classifier_frames_dropped_total", source)] == stats["dropped"]
            assert samples[("edge_classifier_frames_classified_total", frames)] == 6
            assert samples[("edge_classifier_results_published_total", ())] == stats["results"]
            assert samples[("edge_classifier_spool_depth", ())] == stats["spool_depth"]
            assert samples[("edge_classifier_spool_dropped_total", ())] == stats["spool_dropped"]
            assert samples[("edge_classifier_accelerator_fallbacks_total", ())] == stats["fallbacks"]
            assert samples[("edge_classifier_mqtt_connected", ())] == 1
            info = (("accelerator", "cpu"), ("model", stats["model"]), ("state", stats["accelerator_state"]))
            assert samples[("edge_classifier_accelerator", info)] == 1
            assert samples[("edge_classifier_inference_seconds_count", ())] == 6
            assert samples[("edge_classifier_latency_seconds_count", ())] == 6
            assert samples[("process_resident_memory_bytes", ())] > 10e6
            # /api/stats carries the MQTT stats' fields; /api/status the status command's state.
            web_stats = client.get("/api/stats").json()
            assert set(web_stats) == set(stats)
            assert {k: web_stats[k] for k in ("frames", "results", "dropped", "model", "spool_depth")} == \
                {k: stats[k] for k in ("frames", "results", "dropped", "model", "spool_depth")}
            state = json.loads(probe.request(f"{PREFIX}/cmd/status", b"{}", timeout=15).payload)["state"]
            web_state = client.get("/api/status").json()
            assert set(state) <= set(web_state)
            for key in ("device", "model", "source", "mqtt", "settings"):
                assert web_state[key] == state[key], key
            # The newest frame, scaled, with the result MQTT published for it.
            reply = client.get("/api/sources/cams/door/image/frame.jpg")
            assert reply.status == 200 and reply.headers["Content-Type"] == "image/jpeg"
            result = json.loads(reply.headers["X-Result"])
            assert (result["frame"], result["top"]) == (published[-1]["frame"], published[-1]["top"])
            picture = cv2.imdecode(np.frombuffer(reply.body, np.uint8), cv2.IMREAD_COLOR)
            assert picture.shape[1] == min(480, pictures[5 % 3].shape[1])
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(15) == 0


def test_commands_from_the_web_take_the_mqtt_command_path(tmp_path, broker):
    config, port = web_config(tmp_path, broker.port, model=V1_025)
    client = WebClient(port)
    with Probe(broker.host, broker.port) as probe:
        probe.subscribe(f"{PREFIX}/status", f"{PREFIX}/result", f"{PREFIX}/reply/#")
        with start_web_daemon(config) as daemon:
            online(probe)
            reply = client.post("/api/cmd/pause", {})
            assert reply.status == 200 and reply.json() == {"command": "pause", "ok": True, "paused": True}
            state = json.loads(probe.request(f"{PREFIX}/cmd/status", b"{}", timeout=15).payload)["state"]
            assert state["paused"] is True
            assert probe.pending() == []  # the web's reply went to the web, not to {prefix}/reply/pause
            # The same errors as over MQTT: they come from the same handler.
            web = client.post("/api/cmd/fly", {}).json()
            mqtt = json.loads(probe.request(f"{PREFIX}/cmd/fly", b"{}", timeout=15).payload)
            assert web["ok"] is False and web["error"] == mqtt["error"] and "unknown command 'fly'" in web["error"]
            bad = client.post("/api/cmd/resume", {"now": True})
            assert bad.status == 400 and bad.json()["error"] == "unexpected arguments: now"
            learn = client.post("/api/cmd/learn", {"label": "x", "frames": 1}).json()
            assert learn["ok"] is False and "learning is off" in learn["error"]
            # Not JSON, or from another site: refused before any command runs.
            form = client.request("POST", "/api/cmd/resume", b"a=1",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
            assert form.status == 415
            foreign = client.post("/api/cmd/resume", {}, headers={"Origin": "http://evil.example"})
            assert foreign.status == 403
            rebound = client.get("/api/status", headers={"Host": "evil.example:80"})
            assert rebound.status == 403
            assert client.get("/api/status").json()["paused"] is True
            assert client.post("/api/cmd/resume", {}).json()["paused"] is False
            probe.publish(CAMERA, jpeg(cv2.imread(str(image("cat.bmp")))), qos=1)
            assert probe.expect(f"{PREFIX}/result", timeout=20)
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(15) == 0


def test_a_changed_web_section_needs_a_restart_and_changes_nothing(tmp_path, broker):
    config, port = web_config(tmp_path, broker.port, model=V1_025)
    with start_web_daemon(config) as daemon:
        config.write_text(config.read_text().replace(f"port = {port}", f"port = {port + 1}"))
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_log(r"reload: keeping the running configuration: changes to web need a restart")
        assert WebClient(port).get("/api/status").status == 200
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(15) == 0


def test_the_camera_view_shows_the_whole_frame_and_the_roi_the_model_view_the_roi(tmp_path, broker):
    config, port = web_config(tmp_path, broker.port, model=V1_025, source="rotate = 90\nroi = [40, 100, 200, 300]",
                              web="preview_width = 4096")
    client = WebClient(port)
    picture = cv2.imread(str(image("cat.bmp")))  # rotated 90 degrees: the ROI is in the rotated frame
    with Probe(broker.host, broker.port) as probe:
        probe.subscribe(f"{PREFIX}/status", f"{PREFIX}/result")
        with start_web_daemon(config) as daemon:
            online(probe)
            published = classify(probe, picture)
            model_view = client.get("/api/sources/cams/door/image/frame.jpg")
            camera_view = client.get("/api/sources/cams/door/image/frame.jpg?view=camera")
            assert model_view.status == camera_view.status == 200
            assert "X-ROI" not in model_view.headers and json.loads(camera_view.headers["X-ROI"]) == [40, 100, 200, 300]
            for reply in (model_view, camera_view):
                assert json.loads(reply.headers["X-Result"])["frame"] == published["frame"]
            decode = lambda body: cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)  # noqa: E731
            rotated = cv2.rotate(picture, cv2.ROTATE_90_CLOCKWISE)
            assert decode(camera_view.body).shape == rotated.shape
            assert decode(model_view.body).shape == (300, 200, 3)
            # The same pixels, within JPEG's error: the ROI of the camera view is the model view.
            crop = decode(camera_view.body)[100:400, 40:240].astype(int)
            assert np.abs(crop - decode(model_view.body).astype(int)).mean() < 6
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(15) == 0


def test_stream_carries_results_as_mqtt_publishes_them(tmp_path, broker):
    config, port = web_config(tmp_path, broker.port, model=V1_025)
    with Probe(broker.host, broker.port) as probe:
        probe.subscribe(f"{PREFIX}/status", f"{PREFIX}/result")
        with start_web_daemon(config) as daemon:
            online(probe)
            import urllib.request

            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/stream", timeout=30) as stream:
                assert stream.headers["Content-Type"].startswith("text/event-stream")
                assert stream.readline() == b"retry: 2000\n"
                published = classify(probe, cv2.imread(str(image("bird.bmp"))))
                lines = []
                while not lines or lines[-1] != b"\n":
                    line = stream.readline()
                    if line != b"\n" or lines:
                        lines.append(line)
            assert lines[0] == b"event: result\n"
            streamed = json.loads(lines[1].removeprefix(b"data: "))
            assert set(streamed) == set(published)
            for key in ("schema", "device", "source", "frame", "ts", "top", "model"):
                assert streamed[key] == published[key], key
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(15) == 0


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.8.9.10"])
def test_loopback_hosts_need_no_password(host):
    from edge_classifier.config.schema import WebConfig
    from edge_classifier.web.auth import open_gate

    assert open_gate(WebConfig(host=host), environ={}).required is False


def test_gate_accepts_basic_and_bearer_and_the_systemd_credential(tmp_path):
    import base64

    from edge_classifier.config.schema import WebConfig
    from edge_classifier.errors import ConfigError
    from edge_classifier.web.auth import open_gate

    (tmp_path / "web-password").write_text("pw\n")
    gate = open_gate(WebConfig(host="0.0.0.0"), environ={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    basic = "Basic " + base64.b64encode(b"edge:pw").decode()
    assert gate.required and gate.allows(basic) and gate.allows("Bearer pw") and gate.allows("bearer  pw ")
    for wrong in (None, "", "Bearer", "Bearer pw2", "Basic " + base64.b64encode(b"edge:pw2").decode(),
                  "Basic " + base64.b64encode(b"other:pw").decode(), "Digest pw", "Basic \xff"):
        assert not gate.allows(wrong), wrong
    with pytest.raises(ConfigError, match=r"web.password_file: cannot read .*missing"):
        open_gate(WebConfig(host="0.0.0.0", password_file=str(tmp_path / "missing")), environ={})
