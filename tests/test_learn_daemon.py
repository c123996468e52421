"""Teaching the running daemon new classes over MQTT, with a real broker and the real extractor.

Frames come as JPEG images on an MQTT topic (the ``mqtt`` source), one at a time, so every
held-out variant is classified; examples are taught with the ``learn`` command, both as
images in the command and as the next frames of the source.
"""

from __future__ import annotations

import base64
import json
import signal

import cv2
import numpy as np
import pytest
from support.broker import Probe
from support.daemon import DaemonProcess, write_config
from support.testdata import image, model
from support.variants import CLASSES, EXTRACTOR, variants

PREFIX = "edge-classifier/learnpi"
CAMERA = "cams/door/image"


def jpeg(picture: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()


@pytest.fixture(params=["model", str(EXTRACTOR)], ids=["from the model", "extractor file"])
def config(request, tmp_path, broker):
    return write_config(tmp_path / "config.toml", f"""
[device]
id = "learnpi"
[source]
kind = "mqtt"
uri = "cams/+/image"
[model]
path = "{model("mobilenet_v1_0.25_128_quant")}"
accelerator = "cpu"
[mqtt]
host = "127.0.0.1"
port = {broker.port}
[learn]
enabled = true
extractor = "{request.param}"
head = "{tmp_path / "learned_head.json"}"
alone = true
""")


def online(probe: Probe) -> None:
    while probe.expect(f"{PREFIX}/status", timeout=30).text != "online":
        pass


def command(probe: Probe, name: str, payload: dict, timeout: float = 30) -> dict:
    return json.loads(probe.request(f"{PREFIX}/cmd/{name}", json.dumps(payload).encode(), timeout=timeout).payload)


def classify(probe: Probe, picture: np.ndarray) -> dict:
    """Send one frame to the camera topic and wait for its result."""
    probe.publish(CAMERA, jpeg(picture), qos=1)
    return json.loads(probe.expect(f"{PREFIX}/result", timeout=20).payload)


def test_teach_three_classes_classify_held_out_and_unknown_then_restart(config, broker):
    rng = np.random.default_rng(1)
    teach = {label: variants(label, 5, rng) for label in CLASSES}
    held_out = {label: variants(label, 10, np.random.default_rng(2)) for label in CLASSES}
    with Probe(broker.host, broker.port) as probe:
        probe.subscribe(f"{PREFIX}/status", f"{PREFIX}/result")
        with DaemonProcess("-c", str(config)) as daemon:
            online(probe)
            daemon.wait_for_log(r"mqtt source: listening on")  # `online` can come first: frames before are lost
            from_model = 'extractor = "model"' in config.read_text()
            daemon.wait_for_log(r"embeddings from the model's own invoke \(mobilenet_v1_0.25_128_quant, 256 values"
                                if from_model else r"embeddings from a second invoke of "
                                                   r"\(mobilenet_v1_1.0_224_quant_embedding_extractor, 1024 values")
            for label in ("cat", "bird"):  # examples sent in the command
                images = [base64.b64encode(jpeg(p)).decode() for p in teach[label]]
                reply = command(probe, "learn", {"label": label, "images": images})
                assert reply["ok"] is True and reply["added"] == 5, reply
            # The third class from the next five frames of the live source.
            reply_topic = "test/learn-reply"
            probe.subscribe(reply_topic)
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            properties = Properties(PacketTypes.PUBLISH)
            properties.ResponseTopic = reply_topic
            properties.CorrelationData = b"frames"
            probe.publish(f"{PREFIX}/cmd/learn", json.dumps({"label": "flower", "frames": 5}).encode(), qos=1,
                          properties=properties)
            for picture in teach["flower"]:
                classify(probe, picture)
            reply = json.loads(probe.expect(reply_topic, timeout=30).payload)
            assert reply["ok"] is True and reply["classes"] == {"cat": 5, "bird": 5, "flower": 5}, reply
            # Held-out variants: at least 90% top-1; an unrelated picture is "unknown".
            right = total = 0
            for label, pictures in held_out.items():
                for picture in pictures:
                    result = classify(probe, picture)
                    assert result["top"][0]["learned"] is True
                    right += result["top"][0]["label"] == label
                    total += 1
            accuracy = right / total
            print(f"\nheld-out top-1 {right}/{total} = {accuracy:.0%}")
            assert accuracy >= 0.9
            # From the model, every frame's embedding came from the invoke that classified it.
            embeddings = command(probe, "classes", {})["embeddings"]
            assert embeddings["from"] == ("model" if from_model else "extractor")
            assert embeddings["second_invokes"] == (0 if from_model else 5 + total), embeddings
            gradient = np.tile(np.linspace(0, 255, 320, dtype=np.uint8), (240, 1))
            unrelated = cv2.merge([gradient, gradient[::-1], np.full_like(gradient, 90)])
            assert classify(probe, unrelated)["top"][0]["label"] == "unknown"
            assert classify(probe, cv2.imread(str(image("grace_hopper.bmp"))))["top"][0]["label"] == "unknown"
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(15) == 0
        # The head survives a restart.
        with DaemonProcess("-c", str(config)) as again:
            online(probe)
            again.wait_for_log(r"mqtt source: listening on")
            assert command(probe, "classes", {})["classes"] == {"cat": 5, "bird": 5, "flower": 5}
            assert classify(probe, held_out["bird"][0])["top"][0]["label"] == "bird"
            forgot = command(probe, "forget", {"label": "bird"})
            assert forgot["ok"] is True and forgot["classes"] == {"cat": 5, "flower": 5}
            bad = command(probe, "learn", {"label": "x", "images": ["not base64!"]})
            assert bad["ok"] is False and "images[0]" in bad["error"]
            bad = command(probe, "forget", {"label": "nobody"})
            assert bad["ok"] is False and "nobody" in bad["error"]
            again.signal(signal.SIGTERM)
            assert again.wait(15) == 0
