"""The issue-11 findings about commands and the model store, on the real daemon with a real
broker and a real HTTP server: each hostile case gets one clear reply, changes nothing in
the store, and the daemon keeps classifying."""

from __future__ import annotations

import base64
import fcntl
import hashlib
import http.server
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from support.broker import Probe
from support.daemon import DaemonProcess, write_config
from support.testdata import model
from support.variants import EXTRACTOR

PREFIX = "edge-classifier/hostilepi"
V1 = "mobilenet_v1_0.25_128_quant"
BIRDS = "mobilenet_v2_1.0_224_inat_bird_quant"
JUNK = b"<html>this is not a model</html>" * 100
JUNK_SHA = hashlib.sha256(JUNK).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        try:
            if self.path == "/slow/x.tflite":  # one byte a second, forever
                self.send_response(200)
                self.end_headers()
                while True:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(1)
            elif self.path == "/endless/x.tflite":  # as fast as it goes, forever
                self.send_response(200)
                self.end_headers()
                block = b"\0" * 65536
                while True:
                    self.wfile.write(block)
            elif self.path.startswith("/valid/"):  # a real model, whatever the name
                data = model(BIRDS).read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            else:  # any other name: junk bytes (a "model" whose sha256 the attacker knows)
                self.send_response(200)
                self.send_header("Content-Length", str(len(JUNK)))
                self.end_headers()
                self.wfile.write(JUNK)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name="test-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def store(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(model(V1), folder / f"{V1}.tflite")
    shutil.copy(model(BIRDS), folder / f"{BIRDS}.tflite")
    return folder


def config(tmp_path, store, port, *, model_extra="", extra="", protocol="5"):
    pictures = tmp_path / "pics"
    pictures.mkdir(exist_ok=True)
    cv2.imwrite(str(pictures / "a.jpg"), np.full((64, 64, 3), 120, np.uint8))
    return write_config(tmp_path / "config.toml", f"""
[device]
id = "hostilepi"
[source]
kind = "images"
uri = "{pictures}"
loop = true
fps = 20
[model]
path = "{V1}.tflite"
dir = "{store}"
accelerator = "cpu"
{model_extra}
[mqtt]
host = "127.0.0.1"
port = {port}
protocol = "{protocol}"
[publish]
stats_interval = 0
{extra}
""")


def online(probe: Probe) -> None:
    with Probe(probe.host, probe.port) as status:
        status.subscribe(f"{PREFIX}/status")
        while status.expect(f"{PREFIX}/status", timeout=30).text != "online":
            pass


def ask(probe: Probe, name: str, payload: dict | bytes, timeout: float = 60) -> dict:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return json.loads(probe.request(f"{PREFIX}/cmd/{name}", data, timeout=timeout).payload)


def sums(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_a_download_never_replaces_the_running_model_or_other_files(tmp_path, broker, store, server):
    """Finding 1: a URL named like the running model (or learned_head.json) with the junk's
    own sha256: refused, the store is unchanged, and the daemon starts again."""
    head = store / "learned_head.json"
    head.write_text("{}")
    before = sums(store)
    path = config(tmp_path, store, broker.port)
    with Probe(broker.host, broker.port) as probe:
        with DaemonProcess("-c", str(path), "--stdout") as daemon:
            daemon.next_result(30)
            online(probe)
            running = ask(probe, "model", {"url": f"{server}/{V1}.tflite", "sha256": JUNK_SHA})
            other = ask(probe, "model", {"url": f"{server}/{BIRDS}.tflite", "sha256": JUNK_SHA})
            labels = ask(probe, "model", {"url": f"{server}/learned_head.json", "sha256": JUNK_SHA})
            birds_sha = hashlib.sha256(model(BIRDS).read_bytes()).hexdigest()
            valid = ask(probe, "model", {"url": f"{server}/valid/{V1}.tflite", "sha256": birds_sha})
            assert daemon.next_result(10)["model"]["name"] == V1
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(15) == 0
        assert running["ok"] is False and "not a TFLite model" in running["error"], running
        assert other["ok"] is False and "not a TFLite model" in other["error"], other
        assert labels["ok"] is False and "not a .tflite model file" in labels["error"], labels
        assert valid["ok"] is False and "a download never replaces a file in use" in valid["error"], valid
        assert sums(store) == before, "the store changed"
        quarantine = store.parent / ".models.downloads"
        assert not list(quarantine.iterdir()), "the quarantine kept a refused download"
        with DaemonProcess("-c", str(path), "--stdout") as again:
            assert again.next_result(30)["model"]["name"] == V1
            again.signal(signal.SIGTERM)
            assert again.wait(15) == 0


def test_slow_and_endless_downloads_are_stopped_and_swaps_go_on(tmp_path, broker, store, server):
    """Findings 4 and 6: 1 byte/s is stopped by the minimum rate; an endless stream by the
    byte cap while it streams (at most the cap is written); the next swap works."""
    path = config(tmp_path, store, broker.port, model_extra="max_size_mb = 4.0")
    with Probe(broker.host, broker.port) as probe, DaemonProcess("-c", str(path), "--stdout") as daemon:
        daemon.next_result(30)
        online(probe)
        start = time.monotonic()
        slow = ask(probe, "model", {"url": f"{server}/slow/x.tflite", "sha256": "0" * 64}, timeout=40)
        slow_s = time.monotonic() - start
        endless = ask(probe, "model", {"url": f"{server}/endless/x.tflite", "sha256": "0" * 64})
        swapped = ask(probe, "model", {"name": BIRDS})
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(15) == 0
    assert slow["ok"] is False and "under the minimum of 1024 bytes/s" in slow["error"], slow
    assert slow_s < 25, slow_s
    assert endless["ok"] is False and "more than the limit of 4194304 bytes" in endless["error"], endless
    assert swapped["ok"] is True, swapped
    assert not list((store.parent / ".models.downloads").iterdir())
    assert not [p for p in store.iterdir() if p.name.startswith(".")]


def test_file_urls_are_refused_and_never_disclose_a_local_file(tmp_path, broker, store):
    """Finding 5: /etc/passwd is refused without its sha256 or size; an allowed folder's
    mismatch does not tell them either; nothing lands in the store."""
    offered = tmp_path / "offered"
    offered.mkdir()
    secret = offered / "secret.tflite"
    secret.write_bytes(b"private bytes" * 10)
    secret_sha = hashlib.sha256(secret.read_bytes()).hexdigest()
    passwd_sha = hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest()
    path = config(tmp_path, store, broker.port)
    before = sums(store)
    with Probe(broker.host, broker.port) as probe:
        with DaemonProcess("-c", str(path), "--stdout") as daemon:
            daemon.next_result(30)
            online(probe)
            passwd = ask(probe, "model", {"url": "file:///etc/passwd", "sha256": "0" * 64})
            right = ask(probe, "model", {"url": "file:///etc/passwd", "sha256": passwd_sha})
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(15) == 0
        allowed = config(tmp_path, store, broker.port, model_extra=f'file_urls = "{offered}"')
        with DaemonProcess("-c", str(allowed), "--stdout") as daemon:
            daemon.next_result(30)
            online(probe)
            mismatch = ask(probe, "model", {"url": secret.as_uri(), "sha256": "0" * 64})
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(15) == 0
    for reply in (passwd, right):
        assert reply["ok"] is False and "file:// URLs are refused" in reply["error"], reply
        assert passwd_sha not in json.dumps(reply)
    assert mismatch["ok"] is False and "sha256 mismatch" in mismatch["error"], mismatch
    assert secret_sha not in json.dumps(mismatch) and "130 bytes" not in mismatch["error"]
    assert sums(store) == before


def test_leftovers_of_a_killed_download_are_swept_at_start(tmp_path, broker, store, server):
    """Finding 6: SIGKILL during a download leaves a .partial; leftover head .tmp files too:
    the next start removes them (and nothing a live writer holds)."""
    path = config(tmp_path, store, broker.port)
    quarantine = store.parent / ".models.downloads"
    with Probe(broker.host, broker.port) as probe, DaemonProcess("-c", str(path), "--stdout") as daemon:
        daemon.next_result(30)
        online(probe)
        probe.publish(f"{PREFIX}/cmd/model", json.dumps({"url": f"{server}/slow/x.tflite",
                                                         "sha256": "0" * 64}).encode(), qos=1)
        deadline = time.monotonic() + 20
        while not list(quarantine.glob(".x.tflite.*.partial")):
            assert time.monotonic() < deadline, "no partial download appeared"
            time.sleep(0.05)
        daemon.signal(signal.SIGKILL)
        daemon.wait(10)
    assert list(quarantine.glob(".x.tflite.*.partial"))
    stale = quarantine / "verified-but-never-moved.tflite"  # a writer died between verify and move
    stale.write_bytes(b"x")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    (store / ".learned_head.json.abc123.tmp").write_text("{half")
    (store / ".state.json.xyz.tmp").write_text("{half")
    held = store / ".other.tflite.live.partial"  # a live writer's (this test holds its lock)
    with held.open("wb") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        with DaemonProcess("-c", str(path), "--stdout") as daemon:
            daemon.next_result(30)
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(15) == 0
    assert not list(quarantine.iterdir())
    assert sorted(p.name for p in store.iterdir() if p.name.startswith(".")) == [held.name]
    assert "removed 2 leftover temporary file(s)" in daemon.log


def test_the_extractor_never_becomes_the_classifier(tmp_path, broker, store):
    """Finding 8: with model.watch, the extractor dropped into model.dir is not swapped in;
    the model command refuses it, under its own name or a copy's, saying why."""
    path = config(tmp_path, store, broker.port, model_extra="watch = true",
                  extra=f'[learn]\nextractor = "{EXTRACTOR.name}"\n')
    with Probe(broker.host, broker.port) as probe:
        probe.subscribe(f"{PREFIX}/event")
        with DaemonProcess("-c", str(path), "--stdout") as daemon:
            daemon.next_result(30)
            online(probe)
            shutil.copy(EXTRACTOR, store / EXTRACTOR.name)
            rejected = rejection(probe, EXTRACTOR.name)
            shutil.copy(EXTRACTOR, tmp_path / "copy.tflite")
            by_name = ask(probe, "model", {"name": EXTRACTOR.name})
            os.replace(tmp_path / "copy.tflite", store / "renamed.tflite")
            copy = rejection(probe, "renamed.tflite", trigger="watch")
            by_copy = ask(probe, "model", {"name": "renamed.tflite"})
            while not daemon.results.empty():
                daemon.results.get_nowait()
            assert daemon.next_result(10)["model"]["name"] == V1
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(15) == 0
    assert rejected["event"] == "model_rejected" and "embedding extractor" in rejected["reason"], rejected
    assert copy["event"] == "model_rejected" and "same contents as the learning extractor" in copy["reason"]
    assert by_name["ok"] is False and "not a classifier" in by_name["error"]
    assert by_copy["ok"] is False and "not a classifier" in by_copy["error"]


def rejection(probe: Probe, name: str, trigger: str | None = None) -> dict:
    """The next model_rejected event for the model ``name`` (and trigger)."""
    while True:
        event = json.loads(probe.expect(f"{PREFIX}/event", timeout=30).payload)
        if event["event"] == "model_rejected" and event["model"] == name and trigger in (None, event["trigger"]):
            return event


def test_clearing_a_retained_command_does_not_run_it(tmp_path, broker, store):
    """Finding 9: mosquitto_pub -r -n on cmd/pause clears it; it must not pause the device."""
    path = config(tmp_path, store, broker.port)
    with Probe(broker.host, broker.port) as probe, DaemonProcess("-c", str(path), "--stdout") as daemon:
        daemon.next_result(30)
        online(probe)
        probe.publish(f"{PREFIX}/cmd/pause", b"", qos=1, retain=True)
        daemon.wait_for_log("empty payload: not a command")
        state = ask(probe, "status", {})["state"]
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(15) == 0
    assert state["paused"] is False


def test_a_model_command_while_paused_is_answered_and_blocks_nothing(tmp_path, broker, store):
    """Finding 10."""
    path = config(tmp_path, store, broker.port)
    with Probe(broker.host, broker.port) as probe, DaemonProcess("-c", str(path), "--stdout") as daemon:
        daemon.next_result(30)
        online(probe)
        assert ask(probe, "pause", {})["paused"] is True
        first = ask(probe, "model", {"name": BIRDS}, timeout=30)
        second = ask(probe, "model", {"name": V1}, timeout=30)
        assert ask(probe, "resume", {})["paused"] is False
        while not daemon.results.empty():
            daemon.results.get_nowait()
        assert daemon.next_result(10)["model"]["name"] == V1
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(15) == 0
    assert first["ok"] is True and first["model"] == BIRDS, first
    assert second["ok"] is True and second["model"] == V1, second


def test_long_names_labels_and_oversized_commands_get_clean_replies(tmp_path, broker, store):
    """Finding 11: a 5,000-character name, a 10,000-character label, a command over
    max_payload under MQTT 3.1.1 (the reply carries its request_id)."""
    path = config(tmp_path, store, broker.port, protocol="3.1.1",
                  extra=f'[commands]\nmax_payload = 16384\n[learn]\nenabled = true\nextractor = "{EXTRACTOR}"\n'
                        f'head = "{tmp_path / "head.json"}"\n')
    with Probe(broker.host, broker.port) as probe:
        probe.subscribe(f"{PREFIX}/reply/#")
        with DaemonProcess("-c", str(path), "--stdout") as daemon:
            daemon.next_result(30)
            online(probe)
            probe.publish(f"{PREFIX}/cmd/model", json.dumps({"name": "m" * 5000, "request_id": "n1"}).encode())
            name = json.loads(probe.expect(f"{PREFIX}/reply/model", timeout=20).payload)
            picture = base64.b64encode(cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()).decode()
            probe.publish(f"{PREFIX}/cmd/learn", json.dumps({"label": "l" * 10000, "images": [picture],
                                                             "request_id": "l1"}).encode())
            label = json.loads(probe.expect(f"{PREFIX}/reply/learn", timeout=20).payload)
            probe.publish(f"{PREFIX}/cmd/status", json.dumps({"request_id": "big-1", "pad": "x" * 20000}).encode())
            big = json.loads(probe.expect(f"{PREFIX}/reply/status", timeout=20).payload)
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(15) == 0
    assert name["ok"] is False and name["request_id"] == "n1" and "too long" in name["error"], name
    assert len(name["error"]) < 600
    assert label["ok"] is False and label["request_id"] == "l1" and "too long" in label["error"]
    assert len(json.dumps(label)) < 500
    assert big["ok"] is False and big["request_id"] == "big-1" and "over the limit of 16384" in big["error"]
    assert "Traceback" not in daemon.log and "ENAMETOOLONG" not in daemon.log
