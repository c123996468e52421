"""Home Assistant as a real peer sees the daemon, over a real Mosquitto: device-based discovery
before `online`, again after a model swap (with the new model) and after HA's birth (with the last
result and stats, so nothing is `unknown` until the next heartbeat), and removed when discovery
is turned off or the device id changes."""

from __future__ import annotations

import json
import shutil
import signal

import pytest
from support.broker import Probe
from support.daemon import DaemonProcess, write_config
from support.device import retained
from support.testdata import image, model

SMALL, OTHER = "mobilenet_v1_0.25_128_quant", "mobilenet_v1_0.5_160_quant"


@pytest.fixture
def store(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    for name in (SMALL, OTHER):
        shutil.copy(model(name), folder / f"{name}.tflite")
    return folder


def config(tmp_path, store, pictures, port, *, device="hapi", ha="enabled = true", mode="every") -> str:
    return write_config(tmp_path / "config.toml", f"""
[device]
id = "{device}"
[source]
kind = "images"
uri = "{pictures}"
loop = true
fps = 10
[model]
path = "{SMALL}.tflite"
dir = "{store}"
accelerator = "cpu"
[classify]
top_k = 1
threshold = 0.0
[mqtt]
host = "127.0.0.1"
port = {port}
[publish]
mode = "{mode}"
heartbeat = 0
stats_interval = 3600
[homeassistant]
{ha}
""")


def until(probe: Probe, topic: str, timeout: float = 30):
    return probe.expect(topic, timeout=timeout)


def test_discovery_follows_swaps_and_births_with_the_last_result_and_stats(tmp_path, broker, store):
    device_topic = "homeassistant/device/hapi/config"
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(image("parrot.jpg"), one / "parrot.jpg")
    # change mode, no heartbeat, one picture: a result only when the label changes (at the start,
    # maybe after the swap), so a result after HA's birth can only be the last one sent again.
    with Probe(broker.host, broker.port) as probe:
        probe.subscribe(device_topic, "edge-classifier/hapi/#")
        with DaemonProcess("-c", str(config(tmp_path, store, one, broker.port, mode="change"))) as daemon:
            first = json.loads(until(probe, device_topic).payload)
            assert first["device"]["model"] == SMALL
            assert set(first["components"]) == {"label", "score", "fps_out", "inference_p50", "accelerator"}
            last = until(probe, "edge-classifier/hapi/result").payload
            probe.publish("edge-classifier/hapi/cmd/model", json.dumps({"name": f"{OTHER}.tflite"}).encode(), qos=1)
            while True:  # the new model's first result (if its label differs) comes before the event
                message = probe.expect("edge-classifier/hapi/#", timeout=60)
                if message.topic.endswith("/result"):
                    last = message.payload
                if message.topic.endswith("/event") and json.loads(message.payload)["event"] == "model_swapped":
                    break
            swapped = json.loads(until(probe, device_topic).payload)
            assert swapped["device"]["model"] == OTHER
            # Home Assistant restarts: discovery, the last result and fresh stats come again.
            with Probe(broker.host, broker.port) as ha:  # hears only what is sent from now on
                ha.subscribe(device_topic, "edge-classifier/hapi/result", "edge-classifier/hapi/stats")
                ha.publish("homeassistant/status", b"online", qos=1)
                got = {}
                while not {"discovery", "result", "stats"} <= got.keys():
                    message = ha.expect("#", timeout=20)
                    if message.retain:  # the broker's replay of the retained config at subscribe
                        continue
                    kind = {device_topic: "discovery", "edge-classifier/hapi/result": "result",
                            "edge-classifier/hapi/stats": "stats"}.get(message.topic)
                    got.setdefault(kind or message.topic, json.loads(message.payload))
            assert got["discovery"]["device"]["model"] == OTHER
            assert got["result"] == json.loads(last)
            assert "fps_classified" in got["stats"]
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(10) == 0


def test_discovery_removed_when_the_device_id_changes_and_when_turned_off(tmp_path, broker, store, pictures):
    def run(**options) -> None:
        path = config(tmp_path, store, pictures, broker.port, **options)
        with DaemonProcess("-c", str(path)) as daemon, Probe(broker.host, broker.port) as status:
            status.subscribe(f"edge-classifier/{options.get('device', 'hapi')}/status")
            while status.expect("#", timeout=30).text != "online":
                pass
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(10) == 0

    run()
    assert set(retained(broker)) == {"homeassistant/device/hapi/config"}
    run(device="hapi2")
    assert set(retained(broker)) == {"homeassistant/device/hapi2/config"}  # the old device is gone
    run(device="hapi2", ha="enabled = false")
    assert retained(broker) == {}
    assert json.loads((store / "homeassistant.json").read_text()) == {"announced": None}
