"""Issue 12: Home Assistant gets one label and one score entity per camera. The real daemon with
two `[[sources]]`, a real Mosquitto, the retained discovery as a late Home Assistant finds it,
checked against Home Assistant's documented schema (tests/test_homeassistant.py); SIGHUP
removing a camera removes its entities; Home Assistant's birth announces them again."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

from support.broker import Probe
from support.daemon import DaemonProcess
from support.device import daemon_config, retained, wait_online
from support.testdata import image, model
from test_homeassistant import device_problems, problems

from edge_classifier.publish.outbox import Message

SMALL = "mobilenet_v1_0.25_128_quant"
PREFIX = "edge-classifier/hacams"


def config(tmp_path: Path, port: int, cameras: tuple[str, ...], *, device_based: bool = True) -> Path:
    store = tmp_path / "models"
    if not store.is_dir():
        store.mkdir()
        shutil.copy(model(SMALL), store / f"{SMALL}.tflite")
    tables = ""
    for name in cameras:
        folder = tmp_path / name
        if not folder.is_dir():
            folder.mkdir()
            shutil.copy(image("parrot.jpg"), folder / "parrot.jpg")
        tables += f'[[sources]]\nname = "{name}"\nkind = "images"\nuri = "{folder}"\nloop = true\nfps = 4\n'
    return daemon_config(tmp_path / "config.toml", device="hacams", port=port, model=f"{SMALL}.tflite",
                         store=store, sources=tables, extra=f"""
[publish]
stats_interval = 3600
[homeassistant]
enabled = true
device_discovery = {str(device_based).lower()}
""")


def online(probe: Probe) -> None:
    probe.subscribe(f"{PREFIX}/status")
    wait_online(probe, PREFIX)


def test_device_based_one_label_and_score_per_camera_sighup_removes_birth_announces(tmp_path, broker):
    topic = "homeassistant/device/hacams/config"
    path = config(tmp_path, broker.port, ("front", "door"))
    with Probe(broker.host, broker.port) as probe, DaemonProcess("-c", str(path)) as daemon:
        online(probe)
        found = retained(broker)
        assert set(found) == {topic}
        message = Message(topic, found[topic], 1, True)
        assert device_problems(message) == []
        components = json.loads(found[topic])["components"]
        # Today's device-wide entities stay; each camera has its own pair beside them.
        assert set(components) == {"label", "score", "fps_out", "inference_p50", "accelerator",
                                   "front_label", "front_score", "door_label", "door_score"}
        for camera in ("front", "door"):
            for what in ("label", "score"):
                entity = components[f"{camera}_{what}"]
                assert entity["unique_id"] == f"edge-classifier_hacams_{camera}_{what}"
                assert entity["state_topic"] == f"{PREFIX}/source/{camera}/result"
        # The entity's state topic carries that camera's results.
        probe.subscribe(components["door_label"]["state_topic"])
        assert json.loads(probe.expect(components["door_label"]["state_topic"], timeout=30).payload)["source"] == "door"

        # SIGHUP without door: its components are removed (sent with only their platform).
        config(tmp_path, broker.port, ("front",))
        mark = len(daemon.log_lines)
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_log("configuration applied", timeout=30, after=mark)
        probe.subscribe(topic)
        while True:
            update = probe.expect(topic, timeout=30)
            components = json.loads(update.payload)["components"]
            if components.get("door_label") == {"platform": "sensor"}:
                break
        assert device_problems(Message(topic, update.payload, 1, True)) == []
        assert components["door_score"] == {"platform": "sensor"}
        assert components["front_label"]["unique_id"] == "edge-classifier_hacams_front_label"

        # Home Assistant restarts: the discovery comes again, with front's entities.
        with Probe(broker.host, broker.port) as ha:
            ha.subscribe(topic)
            ha.publish("homeassistant/status", b"online", qos=1)
            while (again := ha.expect(topic, timeout=20)).retain:  # skip the broker's replay
                pass
            assert "front_score" in json.loads(again.payload)["components"]
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(15) == 0


def test_per_entity_layout_clears_a_removed_cameras_configs(tmp_path, broker):
    path = config(tmp_path, broker.port, ("front", "door"), device_based=False)
    with Probe(broker.host, broker.port) as probe, DaemonProcess("-c", str(path)) as daemon:
        online(probe)
        found = retained(broker)
        cameras = {t for t in found if "/front_" in t or "/door_" in t}
        assert cameras == {f"homeassistant/sensor/hacams/{c}_{w}/config" for c in ("front", "door")
                           for w in ("label", "score")}
        for topic, payload in found.items():
            assert problems(Message(topic, payload, 1, True)) == [], topic
        probe.subscribe("homeassistant/sensor/hacams/door_label/config")  # before: the removal may be quick
        config(tmp_path, broker.port, ("front",), device_based=False)
        mark = len(daemon.log_lines)
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_log("configuration applied", timeout=30, after=mark)
        while probe.expect("homeassistant/sensor/hacams/door_label/config", timeout=30).payload != b"":
            pass  # the retained config replayed at subscribe, then the empty one
        left = retained(broker)
        assert not [t for t in left if "/door_" in t]
        assert "homeassistant/sensor/hacams/front_label/config" in left
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(15) == 0
