"""Teaching the running daemon new classes over MQTT, with a real broker and the real extractor.

Frames come as JPEG images on an MQTT topic (the ``mqtt`` source), one at a time, so every
held-out variant is classified; examples are taught with the ``learn`` command, both as
images in the command and as the next frames of the source.
"""

from __future__ import annotations

import base64
import json
import signal
import time
from datetime import datetime

import cv2
import numpy as np
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from support.broker import Probe
from support.daemon import DaemonProcess
from support.device import ask, daemon_config, jpeg, wait_online
from support.testdata import image, model
from support.variants import CLASSES, EXTRACTOR, variants

PREFIX = "edge-classifier/learnpi"
CAMERA = "cams/door/image"


LEARN = """
[learn]
enabled = true
extractor = "{extractor}"
head = "{head}"
alone = true
"""


def learn_config(tmp_path, port: int, sources: str, extra: str = "", extractor: object = EXTRACTOR):
    return daemon_config(tmp_path / "config.toml", device="learnpi", port=port,
                         model=model("mobilenet_v1_0.25_128_quant"), sources=sources,
                         extra=extra + LEARN.format(extractor=extractor, head=tmp_path / "learned_head.json"))


@pytest.fixture(params=["model", str(EXTRACTOR)], ids=["from the model", "extractor file"])
def config(request, tmp_path, broker):
    return learn_config(tmp_path, broker.port, '[source]\nkind = "mqtt"\nuri = "cams/+/image"',
                        extractor=request.param)


def online(probe: Probe) -> None:
    """Wait for the retained ``online``: the mqtt source has subscribed then (issue 12), so the
    tests send frames right after it, with no wait for the daemon's log."""
    wait_online(probe, PREFIX)


def command(probe: Probe, name: str, payload: dict) -> dict:
    return ask(probe, PREFIX, name, payload)


def learn_later(probe: Probe, arguments: dict) -> str:
    """Send a ``learn`` command whose reply comes when the frames did; the topic it comes on."""
    reply_topic = "test/learn-reply"
    probe.subscribe(reply_topic)
    properties = Properties(PacketTypes.PUBLISH)
    properties.ResponseTopic = reply_topic
    properties.CorrelationData = b"frames"
    probe.publish(f"{PREFIX}/cmd/learn", json.dumps(arguments).encode(), qos=1, properties=properties)
    return reply_topic


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
            from_model = 'extractor = "model"' in config.read_text()
            daemon.wait_for_log(r"embeddings from the model's own invoke \(mobilenet_v1_0.25_128_quant, 256 values"
                                if from_model else r"embeddings from a second invoke of "
                                                   r"\(mobilenet_v1_1.0_224_quant_embedding_extractor, 1024 values")
            for label in ("cat", "bird"):  # examples sent in the command
                images = [base64.b64encode(jpeg(p)).decode() for p in teach[label]]
                reply = command(probe, "learn", {"label": label, "images": images})
                assert reply["ok"] is True and reply["added"] == 5, reply
            # The third class from the next five frames of the live source.
            reply_topic = learn_later(probe, {"label": "flower", "frames": 5})
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


def test_learn_from_the_frames_of_one_named_source(tmp_path, broker):
    """Two image folders (cats in a, flowers in b) and an mqtt wildcard source: `learn` naming a
    source takes only that source's frames; an unknown name is refused at once, naming it."""
    rng = np.random.default_rng(3)
    for name, label in (("a", "cat"), ("b", "flower")):
        (tmp_path / name).mkdir()
        for i, picture in enumerate(variants(label, 4, rng)):
            cv2.imwrite(str(tmp_path / name / f"{i}.png"), picture)
    tables = "".join(f'[[sources]]\nname = "{name}"\nkind = "images"\nuri = "{tmp_path / name}"\nloop = true\n'
                     f"fps = 4\n" for name in ("a", "b"))
    esp = '[[sources]]\nname = "esp"\nkind = "mqtt"\nuri = "cams/+/image"\n'
    path = learn_config(tmp_path, broker.port, tables + esp, extra="[publish]\nstats_interval = 0\n")
    with Probe(broker.host, broker.port) as probe, DaemonProcess("-c", str(path), "--stdout") as daemon:
        probe.subscribe(f"{PREFIX}/status")
        online(probe)
        unknown = command(probe, "learn", {"label": "x", "frames": 2, "source": "attic"})
        assert unknown["ok"] is False and "no source named 'attic' (running: a, b, esp)" in unknown["error"], unknown
        reply = command(probe, "learn", {"label": "flowers", "frames": 4, "source": "b"})
        learned_at = time.time()
        assert reply["ok"] is True and reply["added"] == 4 and reply["classes"] == {"flowers": 4}, reply

        def labels(since: float, count: int = 12) -> dict[str, set[str]]:
            """The top labels of a's and b's next ``count`` frames captured after ``since`` (when
            the reply came the class was learned: later frames are classified with it)."""
            seen: dict[str, set[str]] = {"a": set(), "b": set()}
            while count:
                result = daemon.next_result(30)
                captured = datetime.fromisoformat(result["ts"]).timestamp()
                if captured > since + 0.001 and result["source"] in seen:
                    seen[result["source"]].add(result["top"][0]["label"])
                    count -= 1
            return seen

        # Learned from b's flowers only: a's cats are nothing learned.
        assert labels(learned_at) == {"a": {"unknown"}, "b": {"flowers"}}
        reply = command(probe, "learn", {"label": "cats", "frames": 4, "source": "a"})
        learned_at = time.time()
        assert reply["ok"] is True and reply["classes"] == {"flowers": 4, "cats": 4}, reply
        assert labels(learned_at) == {"a": {"cats"}, "b": {"flowers"}}
        # An mqtt wildcard source's name covers every topic it matches (each reports its topic).
        reply_topic = learn_later(probe, {"label": "grace", "frames": 2, "source": "esp"})
        assert command(probe, "status", {})["ok"]  # answered after the learn before it: collecting now
        grace = cv2.imread(str(image("grace_hopper.bmp")))
        for topic in ("cams/door/image", "cams/yard/image"):
            probe.publish(topic, jpeg(grace), qos=1)
        reply = json.loads(probe.expect(reply_topic, timeout=30).payload)
        assert reply["ok"] is True and reply["classes"] == {"flowers": 4, "cats": 4, "grace": 2}, reply
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(15) == 0
