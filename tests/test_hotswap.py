"""Models in the field: hot swap over MQTT under load, every rejection, restarts, the store
watcher and SIGHUP. Real models, a real broker, the real daemon."""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics

import pytest
from support.broker import Probe
from support.daemon import DaemonProcess, write_config
from support.testdata import model

PREFIX = "edge-classifier/swappi"
V2 = "mobilenet_v2_1.0_224_quant"
BIRDS = "mobilenet_v2_1.0_224_inat_bird_quant"


@pytest.fixture
def store(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    for name in (V2, BIRDS):
        shutil.copy(model(name), folder / f"{name}.tflite")
    return folder


def daemon_config(tmp_path, store, pictures, port, *, fps=0, extra="") -> str:
    return write_config(tmp_path / "config.toml", f"""
[device]
id = "swappi"
[source]
kind = "images"
uri = "{pictures}"
loop = true
fps = {fps}
[model]
path = "{V2}.tflite"
dir = "{store}"
accelerator = "cpu"
{extra}
[classify]
top_k = 1
threshold = 0.0
[mqtt]
host = "127.0.0.1"
port = {port}
""")


def wait_online(probe) -> None:
    """The daemon subscribes to its commands before it says online."""
    with Probe(probe.host, probe.port) as status:
        status.subscribe(f"{PREFIX}/status")
        while status.expect(f"{PREFIX}/status", timeout=30).text != "online":
            pass


def ask(probe, payload: dict, timeout: float = 60) -> dict:
    reply = probe.request(f"{PREFIX}/cmd/model", json.dumps(payload).encode(), timeout=timeout)
    return json.loads(reply.payload)


def test_swap_back_and_forth_under_load(tmp_path, broker, store, pictures):
    """The vocabulary switches at one frame, no frame fails or is skipped, the gap is small."""
    config = daemon_config(tmp_path, store, pictures, broker.port)
    with Probe(broker.host, broker.port) as probe:
        probe.subscribe(f"{PREFIX}/result", f"{PREFIX}/event")
        with DaemonProcess("-c", str(config)) as daemon:
            replies = []
            wait_online(probe)
            for target in (BIRDS, V2, BIRDS, V2):
                reply = ask(probe, {"name": f"{target}.tflite"})
                assert reply["ok"] is True, reply
                assert reply["model"] == target
                replies.append(reply)
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(15) == 0
        arrivals, results, events = [], [], []
        for message in probe.pending():
            if message.topic.endswith("/result"):
                results.append(json.loads(message.payload))
                arrivals.append(message)
            else:
                events.append(json.loads(message.payload))
    names = [r["model"]["name"] for r in results]
    frames = [r["frame"] for r in results]
    assert frames == list(range(frames[0], frames[0] + len(frames))), "a frame was skipped or failed"
    assert not [e for e in events if e["event"] in ("frame_failed", "model_rejected")]
    # One switch per swap, at a frame boundary, with the new vocabulary from that frame on.
    switches = [i for i in range(1, len(names)) if names[i] != names[i - 1]]
    assert [names[i] for i in switches] == [BIRDS, V2, BIRDS, V2]
    for i in range(len(results)):
        label = results[i]["top"][0]["label"]
        assert label == ("Ara macao (Scarlet Macaw)" if names[i] == BIRDS else "macaw")
    swapped = [e for e in events if e["event"] == "model_swapped"]
    assert [e["model"] for e in swapped] == [BIRDS, V2, BIRDS, V2]
    for reply in replies:
        timings = reply["timings_ms"]
        assert {"validate_ms", "load_ms", "smoke_ms", "gap_ms"} <= set(timings)
        assert reply["dropped_frames"] == 0
    # The gap between the last old and the first new result, against the usual spacing.
    spacing = statistics.median(r["latency_ms"]["inference"] for r in results)
    gaps = [reply["timings_ms"]["gap_ms"] for reply in replies]
    print(f"\nswap timings (ms): {[r['timings_ms'] for r in replies]}; median inference {spacing:.1f} ms")
    assert max(gaps) < 10 * spacing + 50, gaps


def test_rejections_leave_the_running_model(tmp_path, broker, store, pictures):
    outside = tmp_path / "outside.tflite"
    shutil.copy(model(BIRDS), outside)
    (store / "escape.tflite").symlink_to(outside)
    (store / "notes.tflite").write_text("<html>not a model</html>")
    (store / "short.tflite").write_bytes(model(BIRDS).read_bytes()[:200_000])
    shutil.copy(model("model_invoking_error"), store / "custom_op.tflite")
    shutil.copy(model(BIRDS), store / "mislabelled.tflite")
    (store / "mislabelled.txt").write_text("a\nb\nc\n")
    good_sha = __import__("hashlib").sha256(model(BIRDS).read_bytes()).hexdigest()
    cases = [
        ({"name": "../outside.tflite"}, "outside.tflite"),
        ({"name": str(outside)}, "outside.tflite"),
        ({"name": "escape.tflite"}, "escape.tflite"),
        ({"name": "notes.tflite"}, "not a TFLite model"),
        ({"name": "short.tflite"}, "short.tflite"),
        ({"name": "custom_op.tflite"}, "fake-op-double"),
        ({"name": "mislabelled.tflite"}, "3 labels"),
        ({"name": "absent.tflite"}, "absent.tflite"),
        ({"url": model(BIRDS).as_uri(), "sha256": "0" * 64}, "file:// URLs are allowed only from"),
        ({"url": model(BIRDS).as_uri()}, "sha256: required"),
        ({"url": model(BIRDS).as_uri(), "sha256": good_sha, "extra": 1}, "unexpected arguments: extra"),
    ]
    offered = tmp_path / "offered"  # the one folder file:// URLs may come from
    offered.mkdir()
    config = daemon_config(tmp_path, store, pictures, broker.port, fps=20,
                           extra=f'max_size_mb = 3.5\nfile_urls = "{offered}"')
    with Probe(broker.host, broker.port) as probe:
        probe.subscribe(f"{PREFIX}/event")
        with DaemonProcess("-c", str(config), "--stdout") as daemon:
            daemon.next_result(30)
            wait_online(probe)
            for payload, needle in cases:
                reply = ask(probe, payload)
                assert reply["ok"] is False, (payload, reply)
                assert needle in reply["error"], (payload, reply["error"])
            # Over the size limit (3.5 MiB; the bird model is 3.4 MiB, v2 3.4 MiB + label zip).
            big = offered / "big.tflite"
            big.write_bytes(model(BIRDS).read_bytes() + b"\0" * 200_000)
            big_sha = __import__("hashlib").sha256(big.read_bytes()).hexdigest()
            reply = ask(probe, {"url": big.as_uri(), "sha256": big_sha})
            assert reply["ok"] is False and "3670016" in reply["error"], reply
            assert not [p for p in store.iterdir() if p.name.startswith(".")], "a partial download was left"
            rejected = [json.loads(m.payload) for m in probe.pending() if b"model_rejected" in m.payload]
            assert len(rejected) >= 8  # argument errors are refused before a swap starts
            while not daemon.results.empty():
                daemon.results.get_nowait()
            after = daemon.next_result(10)
            assert after["model"]["name"] == V2 and after["top"][0]["label"] == "macaw"
            # A good download still works afterwards, and lands in the store.
            shutil.copy(model(BIRDS), offered / f"{BIRDS}.tflite")
            reply = ask(probe, {"url": (offered / f"{BIRDS}.tflite").as_uri(), "sha256": good_sha})
            assert reply["ok"] is True, reply
            assert (store / f"{BIRDS}.tflite").is_file()
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(15) == 0


def test_restart_keeps_the_swapped_in_model(tmp_path, broker, store, pictures):
    config = daemon_config(tmp_path, store, pictures, broker.port, fps=20)
    with Probe(broker.host, broker.port) as probe:
        with DaemonProcess("-c", str(config), "--stdout") as daemon:
            daemon.next_result(30)
            wait_online(probe)
            assert ask(probe, {"name": BIRDS})["ok"] is True
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(15) == 0
        assert json.loads((store / "state.json").read_text())["model"]["path"].endswith(f"{BIRDS}.tflite")
        with DaemonProcess("-c", str(config), "--stdout") as again:
            assert again.next_result(30)["model"]["name"] == BIRDS
            again.wait_for_log(r"was swapped in last time: using it")
            again.signal(signal.SIGTERM)
            assert again.wait(15) == 0
    # Changing model.path in the configuration wins over the remembered swap.
    config.write_text(config.read_text().replace(f'path = "{V2}.tflite"', 'path = "other.tflite"'))
    shutil.copy(model(V2), store / "other.tflite")
    with DaemonProcess("-c", str(config), "--stdout") as third:
        assert third.next_result(30)["model"]["name"] == "other"
        third.signal(signal.SIGTERM)
        assert third.wait(15) == 0


def test_store_watch_and_sighup(tmp_path, broker, store, pictures):
    config = daemon_config(tmp_path, store, pictures, broker.port, fps=20, extra="watch = true")
    with Probe(broker.host, broker.port) as probe:
        probe.subscribe(f"{PREFIX}/event")
        with DaemonProcess("-c", str(config), "--stdout") as daemon:
            daemon.next_result(30)
            # A file dropped into the store (written elsewhere, then moved in) is swapped to.
            staging = tmp_path / "new_birds.tflite"
            shutil.copy(model(BIRDS), staging)
            os.replace(staging, store / "new_birds.tflite")
            event = json.loads(probe.expect(f"{PREFIX}/event", timeout=30).payload)
            while event["event"] != "model_swapped":
                event = json.loads(probe.expect(f"{PREFIX}/event", timeout=30).payload)
            assert event["model"] == "new_birds" and event["trigger"] == "watch"
            # SIGHUP with a changed model.path swaps too.
            config.write_text(config.read_text().replace(f'path = "{V2}.tflite"', f'path = "{BIRDS}.tflite"'))
            daemon.signal(signal.SIGHUP)
            event = json.loads(probe.expect(f"{PREFIX}/event", timeout=30).payload)
            while event["event"] != "model_swapped":
                event = json.loads(probe.expect(f"{PREFIX}/event", timeout=30).payload)
            assert event["model"] == BIRDS and event["trigger"] == "reload"
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(15) == 0
