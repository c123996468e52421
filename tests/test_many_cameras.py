"""Issue 12: one `mqtt` source with a wildcard is many cameras. The real daemon, a real
Mosquitto: cameras publishing at the same moment are all classified, each under its own
topic, and a burst from one camera is counted honestly (nothing vanishes uncounted)."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time

import cv2
import numpy as np
from support.broker import Probe
from support.daemon import REPO, DaemonProcess
from support.device import ask, daemon_config, wait_online

PREFIX = "edge-classifier/manycams"
DEMO_MODEL = REPO / "models" / "demo_shapes_mobilenet_v2_035_96_quant.tflite"


def config(tmp_path, port: int, publish: str = "") -> object:
    return daemon_config(tmp_path / "config.toml", device="manycams", port=port, model=DEMO_MODEL,
                         sources='[source]\nkind = "mqtt"\nuri = "cams/+/image"',
                         extra="[publish]\nstats_interval = 0\n" + publish)


def jpeg(value: int) -> bytes:
    picture = np.full((96, 96, 3), value, np.uint8)
    cv2.circle(picture, (48, 48), 20, (255 - value, value, 128), -1)
    return cv2.imencode(".jpg", picture)[1].tobytes()


def status(probe: Probe) -> dict:
    return ask(probe, PREFIX, "status", {})["state"]


def test_twelve_cameras_at_the_same_moment_are_all_classified(tmp_path, broker):
    topics = [f"cams/cam{i:02d}/image" for i in range(12)]
    with contextlib.ExitStack() as stack:
        cameras = [stack.enter_context(Probe(broker.host, broker.port)) for _ in topics]
        with Probe(broker.host, broker.port) as probe, DaemonProcess("-c", str(config(tmp_path, broker.port))):
            probe.subscribe(f"{PREFIX}/status", f"{PREFIX}/result")
            wait_online(probe, PREFIX)
            # Twelve clients, one image each, released together by a barrier.
            barrier = threading.Barrier(len(cameras))
            errors: list[BaseException] = []

            def send(camera: Probe, topic: str, value: int) -> None:
                try:
                    payload = jpeg(value)
                    barrier.wait(10)
                    camera.publish(topic, payload, qos=1)
                except BaseException as exc:  # reported by the test thread
                    errors.append(exc)

            threads = [threading.Thread(target=send, args=(c, t, 20 * i), name=f"cam-{i}")
                       for i, (c, t) in enumerate(zip(cameras, topics, strict=True))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(20)
            assert not errors, errors
            results = [json.loads(probe.expect(f"{PREFIX}/result", timeout=20).payload) for _ in topics]
            assert sorted(r["source"] for r in results) == topics
            assert all(r["frame"] == 1 for r in results)  # frames count per camera
            state = status(probe)
            assert state["source"]["received"] == 12 and state["source"]["topics"] == 12
            assert state["source"]["dropped"] == 0, state["source"]
            assert {name: c["classified"] for name, c in state["sources"].items()} == dict.fromkeys(topics, 1)


def test_a_burst_from_one_camera_is_counted_honestly(tmp_path, broker):
    """200 images as fast as one client can send them: most are replaced by newer ones
    (a live source), and every one is accounted for as classified, dropped or rejected."""
    burst = 200
    with Probe(broker.host, broker.port) as probe, \
            DaemonProcess("-c", str(config(tmp_path, broker.port))) as daemon:
        probe.subscribe(f"{PREFIX}/status")
        wait_online(probe, PREFIX)
        payloads = [jpeg(i) for i in range(burst)]
        for payload in payloads:
            probe.publish("cams/burst/image", payload, qos=1)
        deadline = time.monotonic() + 30
        while True:
            # Each status request is answered by the daemon's main thread: a real round trip.
            state = status(probe)
            camera = state["sources"].get("cams/burst/image", {})
            settled = camera.get("received") == burst and \
                camera["classified"] + camera["dropped"] + camera["rejected"] + camera["failed"] == burst
            if settled or time.monotonic() > deadline:
                break
        assert settled, state
        assert state["source"]["received"] == burst
        assert state["source"]["dropped"] == camera["dropped"] and state["source"]["rejected"] == 0
        figures = state["source"]
        assert camera["classified"] >= 1 and camera["failed"] == 0
        # Where each image went: replaced in the source before decoding, or decoded and handed
        # to the pipeline, where it was classified or replaced in the newest-frame slot.
        assert burst == figures["source_dropped"] + camera["frames"]
        assert camera["frames"] == camera["classified"] + figures["slot_dropped"]
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(15) == 0


def test_change_mode_compares_a_camera_with_itself(tmp_path, broker):
    """mode = "change": the same picture on two cameras is two results (each camera's first),
    and a repeat on the first camera is not (its label did not change)."""
    path = config(tmp_path, broker.port, 'mode = "change"\nheartbeat = 0')
    with Probe(broker.host, broker.port) as probe, DaemonProcess("-c", str(path)):
        probe.subscribe(f"{PREFIX}/status", f"{PREFIX}/result")
        wait_online(probe, PREFIX)
        for camera in ("cams/a/image", "cams/b/image"):
            probe.publish(camera, jpeg(100), qos=1)
            assert json.loads(probe.expect(f"{PREFIX}/result", timeout=20).payload)["source"] == camera
        probe.publish("cams/a/image", jpeg(100), qos=1)
        probe.publish("cams/c/image", jpeg(100), qos=1)
        # c's first result is published; a's repeat, classified before it, was not.
        assert json.loads(probe.expect(f"{PREFIX}/result", timeout=20).payload)["source"] == "cams/c/image"


def test_two_mqtt_sources_each_with_its_own_client(tmp_path, broker):
    """In [[sources]] each mqtt source has its own client id (one id twice: the broker would
    throw one off for the other, forever); a wildcard's frames report their topic."""
    tables = '[[sources]]\nname = "cams"\nkind = "mqtt"\nuri = "cams/+/image"\n' \
             '[[sources]]\nname = "esp"\nkind = "mqtt"\nuri = "esp/door"\n'
    path = daemon_config(tmp_path / "config.toml", device="manycams", port=broker.port, model=DEMO_MODEL,
                         sources=tables, mqtt='client_id = "multi"', extra="[publish]\nstats_interval = 0\n")
    with Probe(broker.host, broker.port) as probe, DaemonProcess("-c", str(path)):
        probe.subscribe(f"{PREFIX}/status", f"{PREFIX}/result", f"{PREFIX}/source/+/result")
        wait_online(probe, PREFIX)
        probe.publish("cams/yard/image", jpeg(50), qos=1)
        probe.publish("esp/door", jpeg(90), qos=1)
        sources = {json.loads(probe.expect(f"{PREFIX}/result", timeout=20).payload)["source"] for _ in range(2)}
        assert sources == {"cams/yard/image", "esp"}
        topics = {probe.expect(f"{PREFIX}/source/+/result", timeout=20).topic for _ in range(2)}
        assert topics == {f"{PREFIX}/source/cams_yard_image/result", f"{PREFIX}/source/esp/result"}
        state = status(probe)
        assert state["inputs"]["cams"]["received"] == 1 and state["inputs"]["esp"]["received"] == 1
    assert "multi-source-cams" in broker.log_text() and "multi-source-esp" in broker.log_text()
