"""Finding 3: one `learn` command with 10,500 tiny images (1 MB) must not hold the main loop:
status answered within a second, watchdog pings on time while frames flow, SIGTERM within
5 s. The real daemon, a real broker, the real extractor, sd_notify on a real socket."""

from __future__ import annotations

import base64
import itertools
import json
import signal
import time

import cv2
import numpy as np
from support.broker import Probe
from support.daemon import DaemonProcess, write_config
from support.testdata import model
from support.variants import EXTRACTOR
from test_daemon_systemd import FakeSystemd

PREFIX = "edge-classifier/learnloadpi"
IMAGES = 10_500


def tiny_images() -> list[str]:
    png = cv2.imencode(".png", np.full((1, 1, 3), 7, np.uint8))[1].tobytes()
    return [base64.b64encode(png).decode()] * IMAGES


def config(tmp_path, port, *, max_images: int) -> str:
    pictures = tmp_path / "pics"
    pictures.mkdir()
    cv2.imwrite(str(pictures / "a.jpg"), np.full((64, 64, 3), 120, np.uint8))
    return write_config(tmp_path / "config.toml", f"""
[device]
id = "learnloadpi"
[source]
kind = "images"
uri = "{pictures}"
loop = true
fps = 10
[model]
path = "{model("mobilenet_v1_0.25_128_quant")}"
accelerator = "cpu"
[mqtt]
host = "127.0.0.1"
port = {port}
[publish]
stats_interval = 0
[commands]
max_payload = 4194304
[learn]
enabled = true
extractor = "{EXTRACTOR}"
head = "{tmp_path / "head.json"}"
max_images = {max_images}
images_timeout = 8
""")


def test_too_many_images_are_refused_at_once(tmp_path, broker):
    with Probe(broker.host, broker.port) as probe, \
            DaemonProcess("-c", str(config(tmp_path, broker.port, max_images=200))) as daemon:
        probe.subscribe(f"{PREFIX}/status")
        while probe.expect(f"{PREFIX}/status", timeout=30).text != "online":
            pass
        payload = json.dumps({"label": "tiny", "images": tiny_images()}).encode()
        start = time.monotonic()
        reply = json.loads(probe.request(f"{PREFIX}/cmd/learn", payload, timeout=10).payload)
        took = time.monotonic() - start
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(15) == 0
    assert reply["ok"] is False and "10500 images, over the limit of 200" in reply["error"]
    assert took < 3, took


def test_heavy_learn_keeps_status_watchdog_and_sigterm(tmp_path, broker):
    systemd = FakeSystemd(tmp_path / "notify.sock")
    env = {"NOTIFY_SOCKET": systemd.path, "WATCHDOG_USEC": "2000000"}  # a ping due every second
    try:
        with Probe(broker.host, broker.port) as probe, \
                DaemonProcess("-c", str(config(tmp_path, broker.port, max_images=20000)), env=env) as daemon:
            systemd.expect("READY", value="1", timeout=60)
            probe.subscribe(f"{PREFIX}/reply/learn")
            payload = json.dumps({"label": "tiny", "images": tiny_images(), "request_id": "heavy"}).encode()
            print(f"\nlearn payload: {len(payload)} bytes, {IMAGES} images")
            systemd.drain()
            probe.publish(f"{PREFIX}/cmd/learn", payload, qos=1)
            latencies = []
            for _ in range(5):
                start = time.monotonic()
                reply = json.loads(probe.request(f"{PREFIX}/cmd/status", b"{}", timeout=5).payload)
                latencies.append(time.monotonic() - start)
                assert reply["ok"] is True
                time.sleep(0.5)  # spacing the requests over the embedding, not synchronisation
            learn = json.loads(probe.expect(f"{PREFIX}/reply/learn", timeout=30).payload)
            pings = [at for at, fields in (systemd.messages.get_nowait() for _ in range(systemd.messages.qsize()))
                     if fields.get("WATCHDOG") == "1"]
            # A second learn, stopped by SIGTERM while it embeds.
            probe.publish(f"{PREFIX}/cmd/learn", payload, qos=1)
            seen = daemon.wait_for_log(r"learn: embedding 10500 images")
            daemon.wait_for_log(r"learn: embedding 10500 images", after=seen + 1)
            start = time.monotonic()
            daemon.signal(signal.SIGTERM)
            code = daemon.wait(15)
            stop_s = time.monotonic() - start
    finally:
        systemd.close()
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    longest = max(gaps) if gaps else float("inf")
    print(f"status latency max {max(latencies) * 1000:.0f} ms; watchdog pings {len(pings)}, longest gap "
          f"{longest:.2f} s; SIGTERM to exit {stop_s:.2f} s; learn reply: {learn.get('error') or learn}")
    assert learn["ok"] is False and learn["request_id"] == "heavy" and "learn.images_timeout" in learn["error"]
    assert max(latencies) < 1.0, latencies
    assert len(pings) >= 5 and longest < 2.0, pings  # WatchdogSec would be 2 s here
    assert code == 0 and stop_s < 5.0, stop_s
