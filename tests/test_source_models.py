"""Issue 12: a `[[sources]]` table names its own model. The real daemon on real LiteRT models
(../shared/testdata, copied into a store under tmp_path), a real Mosquitto: each camera's
results come from its own model with the reference top-1; a swap for one camera leaves the
other's alone; SIGHUP moves a camera to another model without restarting it; an unknown
model name is refused by check-config and at start."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support import device
from support.broker import Probe
from support.daemon import DaemonProcess, write_config
from support.device import daemon_config, wait_online
from support.testdata import BIRDS, V1_025, V1_050, image, model

PREFIX = "edge-classifier/twomodels"
# bird.bmp: ImageNet models say 20 (chickadee); the iNaturalist birds model says 659.
TOP1 = {V1_050: 20, BIRDS: 659, V1_025: None}


@pytest.fixture
def store(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    for name in (V1_025, V1_050, BIRDS):
        shutil.copy(model(name), folder / f"{name}.tflite")
    return folder


def pictures(path: Path) -> Path:
    path.mkdir()
    shutil.copy(image("bird.bmp"), path / "bird.bmp")
    return path


def config(tmp_path: Path, store: Path, port: int, front: str, yard: str) -> Path:
    tables = "".join(f'''
[[sources]]
name = "{name}"
kind = "images"
uri = "{tmp_path / name}"
loop = true
fps = 8
{f'model = "{chosen}"' if chosen else ""}
''' for name, chosen in (("front", front), ("yard", yard)))
    return daemon_config(tmp_path / "config.toml", device="twomodels", port=port, model=f"{V1_025}.tflite",
                         store=store, sources=tables, extra="""
[classify]
top_k = 1
threshold = 0.0
[publish]
stats_interval = 1
""")


def ask(probe: Probe, name: str, arguments: dict, timeout: float = 20) -> dict:
    return device.ask(probe, PREFIX, name, arguments, timeout)


def online(probe: Probe) -> None:
    probe.subscribe(f"{PREFIX}/status")
    wait_online(probe, PREFIX)


def next_of(daemon: DaemonProcess, wanted: dict[str, str], count: int = 3) -> dict[str, list[dict]]:
    """Results until each source in ``wanted`` gave ``count`` in a row from the model it names."""
    seen: dict[str, list[dict]] = {name: [] for name in wanted}
    while any(len(seen[name]) < count for name in wanted):
        result = daemon.next_result(30)
        name = result["source"]
        if result["model"]["name"] == wanted[name]:
            seen[name].append(result)
        else:
            seen[name] = []  # still the model before a swap: results in a row count
    return seen


def test_two_cameras_on_two_models_swap_one_and_sighup(tmp_path, broker, store):
    pictures(tmp_path / "front")
    pictures(tmp_path / "yard")
    path = config(tmp_path, store, broker.port, front=V1_050, yard=BIRDS)
    with Probe(broker.host, broker.port) as probe, DaemonProcess("-c", str(path), "--stdout") as daemon:
        # Each camera on its own model from the first frame on: every result says which, and
        # its top-1 is that model's reference answer.
        first: dict[str, dict] = {}
        while len(first) < 2:
            result = daemon.next_result(30)
            first.setdefault(result["source"], result)
        for name, chosen in (("front", V1_050), ("yard", BIRDS)):
            assert first[name]["model"]["name"] == chosen, first[name]
            assert first[name]["top"][0]["id"] == TOP1[chosen], first[name]
        online(probe)
        state = ask(probe, "status", {})["state"]
        assert {k: v["name"] for k, v in state["source_models"].items()} == {"front": V1_050, "yard": BIRDS}
        assert state["model"]["name"] == V1_025  # [model], used by sources without their own
        # {prefix}/stats says the same, beside [model]'s name.
        probe.subscribe(f"{PREFIX}/stats")
        stats = json.loads(probe.expect(f"{PREFIX}/stats", timeout=10).payload)
        assert stats["model"] == V1_025
        assert stats["source_models"] == {
            "front": {"model": V1_050, "accelerator": "cpu", "fallback": None},
            "yard": {"model": BIRDS, "accelerator": "cpu", "fallback": None}}, stats

        # A swap naming front: front moves to the birds model (onto yard's set: shared), yard
        # keeps its model, and [model] is untouched.
        reply = ask(probe, "model", {"name": f"{BIRDS}.tflite", "source": "front"})
        assert reply["ok"] is True and reply["source"] == "front" and reply["model"] == BIRDS, reply
        seen = next_of(daemon, {"front": BIRDS, "yard": BIRDS})
        assert {r["top"][0]["id"] for r in seen["front"]} == {TOP1[BIRDS]}
        state = ask(probe, "status", {})["state"]
        assert {k: v["name"] for k, v in state["source_models"].items()} == {"front": BIRDS, "yard": BIRDS}
        assert state["model"]["name"] == V1_025
        # Frames of one source still leave in order.
        frames = [r["frame"] for r in seen["front"]]
        assert frames == sorted(frames)

        # Refused: a source that does not exist, a model not in the store.
        reply = ask(probe, "model", {"name": f"{V1_050}.tflite", "source": "attic"})
        assert reply["ok"] is False and "attic" in reply["error"], reply
        reply = ask(probe, "model", {"name": "nope.tflite", "source": "yard"})
        assert reply["ok"] is False and "nope" in reply["error"], reply

        # SIGHUP: the file moves yard to V1_050 (reopened: nothing ran it any more). front's
        # table did not change: it keeps the model its swap gave it. Neither camera restarts.
        yard_before = max(r["frame"] for r in seen["yard"])
        config(tmp_path, store, broker.port, front=V1_050, yard=V1_050)
        mark = len(daemon.log_lines)
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_log("configuration applied", timeout=30, after=mark)
        assert not any("sources: " in line for line in daemon.log_lines[mark:]), "a camera was restarted"
        seen = next_of(daemon, {"front": BIRDS, "yard": V1_050})
        assert {r["top"][0]["id"] for r in seen["yard"]} == {TOP1[V1_050]}
        assert min(r["frame"] for r in seen["yard"]) > yard_before  # the same camera, counting on
        state = ask(probe, "status", {})["state"]
        assert {k: v["name"] for k, v in state["source_models"].items()} == {"front": BIRDS, "yard": V1_050}

        # A swap without source swaps [model] only (which no camera uses here: its smoke
        # inference confirms it).
        reply = ask(probe, "model", {"name": f"{V1_050}.tflite"})
        assert reply["ok"] is True and "source" not in reply, reply
        state = ask(probe, "status", {})["state"]
        assert state["model"]["name"] == V1_050
        assert {k: v["name"] for k, v in state["source_models"].items()} == {"front": BIRDS, "yard": V1_050}
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(15) == 0


def test_an_unknown_model_is_refused_by_check_config_and_at_start(tmp_path, broker, store):
    pictures(tmp_path / "front")
    pictures(tmp_path / "yard")
    path = config(tmp_path, store, broker.port, front=V1_050, yard="mobilenet_v9")
    checked = subprocess.run([sys.executable, "-m", "edge_classifier", "check-config", "-c", str(path)],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 78, checked
    assert "sources[1].model: source 'yard'" in checked.stderr + checked.stdout
    assert "mobilenet_v9" in checked.stderr + checked.stdout
    with DaemonProcess("-c", str(path)) as daemon:
        assert daemon.wait(30) == 78
        assert any("sources[1].model" in line and "mobilenet_v9" in line for line in daemon.log_lines)
    # A model in the one-camera [source] is refused too: model.path says it there.
    single = write_config(tmp_path / "single.toml", f"""
[source]
kind = "images"
uri = "{tmp_path / 'front'}"
model = "{V1_050}"
[model]
dir = "{store}"
""")
    checked = subprocess.run([sys.executable, "-m", "edge_classifier", "check-config", "-c", str(single)],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 78 and "source.model: only [[sources]]" in checked.stderr + checked.stdout


def collect(probe: Probe, events: dict[str, list[str]], name: str, count: int) -> None:
    """Read ``{prefix}/event`` until ``count`` events ``name`` came, keeping the models of those in ``events``."""
    while len(events[name]) < count:
        event = json.loads(probe.expect(f"{PREFIX}/event", timeout=60).payload)
        if event["event"] in events:
            events[event["event"]].append(event["model"])


def isolated_config(tmp_path: Path, store: Path, port: int) -> Path:
    """front on [model] (V1_025), yard on V1_050, both in supervised workers (model.isolate: the Edge
    TPU's worker code, with the CPU model, as tests/test_fallback.py does)."""
    pictures(tmp_path / "front")
    pictures(tmp_path / "yard")
    text = config(tmp_path, store, port, front="", yard=V1_050).read_text()
    text = text.replace('accelerator = "cpu"', 'accelerator = "auto"\nisolate = true\ninvoke_timeout = 0.5\n'
                        'recover_initial = 1.0\nrecover_max = 2.0')
    return write_config(tmp_path / "config.toml", text)


def engine_children(pid: int) -> list[int]:
    """The daemon's spawned engine processes (not multiprocessing's resource tracker)."""
    children = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as listed:
            children += [int(child) for child in listed.read().split()]
    found = []
    for child in children:
        try:
            with open(f"/proc/{child}/cmdline", "rb") as cmdline:
                if b"spawn_main" in cmdline.read():
                    found.append(child)
        except FileNotFoundError:
            pass  # gone meanwhile
    return found


def test_each_model_falls_back_and_recovers_on_its_own(tmp_path, broker, store):
    """Both sets run in supervised worker processes and both fail at their 15th invoke."""
    path = isolated_config(tmp_path, store, broker.port)
    fault = tmp_path / "fault"
    fault.write_text("raise@15")
    with Probe(broker.host, broker.port) as probe:
        probe.subscribe(f"{PREFIX}/event")
        with DaemonProcess("-c", str(path), "--stdout", env={"EDGE_CLASSIFIER_WORKER_FAULT_FILE": str(fault)}) \
                as daemon:
            events: dict[str, list[str]] = {"accelerator_fallback": [], "accelerator_back": []}
            collect(probe, events, "accelerator_fallback", 2)
            fault.unlink()  # healthy again from the next attempt on
            collect(probe, events, "accelerator_back", 2)
            assert sorted(events["accelerator_fallback"]) == sorted(events["accelerator_back"]) == [V1_025, V1_050]
            # Each camera still on its own model, with its answer, frames in order.
            seen = next_of(daemon, {"front": V1_025, "yard": V1_050}, count=5)
            assert {r["top"][0]["id"] for r in seen["yard"]} == {TOP1[V1_050]}
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(15) == 0
        assert "frame_failed" not in daemon.log


def test_two_models_share_one_engine_host_and_both_recover_when_it_is_killed(tmp_path, broker, store):
    """The Edge TPU's way (one child for every TPU interpreter of the daemon), shown on the CPU
    models: $EDGE_CLASSIFIER_WORKER_HOST=shared puts the isolated workers in the engine host."""
    path = isolated_config(tmp_path, store, broker.port)
    with Probe(broker.host, broker.port) as probe:
        probe.subscribe(f"{PREFIX}/event")
        with DaemonProcess("-c", str(path), "--stdout", env={"EDGE_CLASSIFIER_WORKER_HOST": "shared"}) as daemon:
            seen = next_of(daemon, {"front": V1_025, "yard": V1_050}, count=2)
            assert {r["top"][0]["id"] for r in seen["yard"]} == {TOP1[V1_050]}
            assert daemon.proc is not None
            host = engine_children(daemon.proc.pid)
            assert len(host) == 1, host  # both models' interpreters in one child
            os.kill(host[0], signal.SIGKILL)
            events: dict[str, list[str]] = {"accelerator_fallback": [], "accelerator_back": []}
            collect(probe, events, "accelerator_fallback", 2)
            collect(probe, events, "accelerator_back", 2)
            assert sorted(events["accelerator_fallback"]) == sorted(events["accelerator_back"]) == [V1_025, V1_050]
            again = engine_children(daemon.proc.pid)
            assert len(again) == 1 and again != host, again
            seen = next_of(daemon, {"front": V1_025, "yard": V1_050}, count=5)
            assert {r["top"][0]["id"] for r in seen["yard"]} == {TOP1[V1_050]}
            assert all(r["model"]["accelerator"] == "cpu" for results in seen.values() for r in results)
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(15) == 0
        assert "frame_failed" not in daemon.log
        assert daemon.log.count("killed by SIGKILL") >= 2, daemon.log  # each set saw the host die


def test_a_store_file_replaced_on_disk_reloads_the_set_running_it(tmp_path, broker, store):
    import hashlib
    import os

    pictures(tmp_path / "front")
    pictures(tmp_path / "yard")
    text = config(tmp_path, store, broker.port, front="", yard=BIRDS).read_text()
    path = write_config(tmp_path / "config.toml",
                        text.replace('accelerator = "cpu"', 'accelerator = "cpu"\nwatch = true'))
    with Probe(broker.host, broker.port) as probe, DaemonProcess("-c", str(path), "--stdout") as daemon:
        probe.subscribe(f"{PREFIX}/event")
        before = next_of(daemon, {"front": V1_025, "yard": BIRDS}, count=2)
        front_sha = before["front"][0]["model"]["sha256"]
        # A new version of the birds model (here: the 0.5 ImageNet model's bytes) lands in the store.
        staging = tmp_path / "staging.tflite"
        shutil.copy(model(V1_050), staging)
        os.replace(staging, store / f"{BIRDS}.tflite")
        new_sha = hashlib.sha256((store / f"{BIRDS}.tflite").read_bytes()).hexdigest()
        while True:
            event = json.loads(probe.expect(f"{PREFIX}/event", timeout=60).payload)
            if event["event"] in ("model_swapped", "model_rejected"):
                break
        assert event["event"] == "model_swapped" and event["trigger"] == "watch", event
        while (result := daemon.next_result(30))["source"] != "yard" or result["model"]["sha256"] != new_sha:
            pass
        assert result["top"][0]["id"] == TOP1[V1_050]  # the new file's answer
        for _ in range(6):  # front stays on [model], untouched
            result = daemon.next_result(30)
            if result["source"] == "front":
                assert result["model"]["sha256"] == front_sha
        online(probe)
        state = ask(probe, "status", {})["state"]
        assert state["model"]["name"] == V1_025 and state["source_models"]["yard"]["name"] == BIRDS
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(15) == 0
