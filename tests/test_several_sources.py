"""Issue 12: several `[[sources]]` in one daemon, fair turns, per-source results; SIGHUP
adds and removes sources while the others keep running. The real daemon process, real
image folders, a real MJPEG-over-HTTP server and a real Mosquitto."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import cv2
import numpy as np
import pytest
from support.broker import Probe
from support.daemon import REPO, DaemonProcess
from support.device import ask as ask_device
from support.device import daemon_config, wait_online
from support.mjpeg import MjpegServer

PREFIX = "edge-classifier/multicam"
DEMO_MODEL = REPO / "models" / "demo_shapes_mobilenet_v2_035_96_quant.tflite"


@pytest.fixture
def mjpeg():
    server = MjpegServer().start()
    yield server
    server.stop()


def folder(path: Path, count: int) -> Path:
    path.mkdir()
    for i in range(count):
        picture = np.full((64, 64, 3), 10 + 20 * i, np.uint8)
        cv2.imwrite(str(path / f"img{i:02d}.png"), picture)
    return path


def images(name: str, path: Path) -> str:
    return f'[[sources]]\nname = "{name}"\nkind = "images"\nuri = "{path}"\n'


def config(tmp_path: Path, port: int, tables: str) -> Path:
    return daemon_config(tmp_path / "config.toml", device="multicam", port=port, model=DEMO_MODEL, sources=tables,
                         extra="[publish]\nstats_interval = 0\n")


def test_four_sources_together_then_sighup_changes_two(tmp_path, broker, mjpeg):
    counts = {"door": 5, "yard": 7, "garage": 9}
    dirs = {name: folder(tmp_path / name, n) for name, n in counts.items()}
    web = f'[[sources]]\nname = "porch"\nkind = "opencv"\nuri = "{mjpeg.url}"\nfps = 10\n'
    tables = "".join(images(name, path) for name, path in dirs.items()) + web
    path = config(tmp_path, broker.port, tables)
    with Probe(broker.host, broker.port) as probe, DaemonProcess("-c", str(path), "--stdout") as daemon:
        probe.subscribe(f"{PREFIX}/source/door/result", f"{PREFIX}/source/porch/result")
        seen: dict[str, list[int]] = {name: [] for name in (*counts, "porch")}
        while any(len(seen[name]) < n for name, n in counts.items()) or len(seen["porch"]) < 3:
            result = daemon.next_result(30)
            seen[result["source"]].append(result["frame"])
        # A file source gets every frame, in order; the camera beside them gets its turns.
        for name, n in counts.items():
            assert seen[name] == list(range(1, n + 1)), (name, seen)
        assert seen["porch"] == sorted(seen["porch"])
        # The per-source result topics carry the same results.
        door = [json.loads(probe.expect(f"{PREFIX}/source/door/result", timeout=10).payload) for _ in range(5)]
        assert [r["frame"] for r in door] == [1, 2, 3, 4, 5] and {r["source"] for r in door} == {"door"}
        assert json.loads(probe.expect(f"{PREFIX}/source/porch/result", timeout=10).payload)["source"] == "porch"
        state = ask(probe, "status", {})["state"]
        assert set(state["inputs"]) == {"door", "yard", "garage", "porch"}
        assert {name: state["sources"][name]["classified"] for name in counts} == counts
        porch_before = state["sources"]["porch"]["frames"]

        # SIGHUP: drop door, add attic; yard, garage and porch keep running untouched.
        attic = folder(tmp_path / "attic", 3)
        tables = "".join(images(name, dirs[name]) for name in ("yard", "garage")) + images("attic", attic) + web
        config(tmp_path, broker.port, tables)
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_log("sources: -door \\+attic", timeout=20)
        daemon.wait_for_log("configuration applied", timeout=20)
        attic_frames, porch_frames = [], []
        while len(attic_frames) < 3 or not porch_frames:
            result = daemon.next_result(30)
            assert result["source"] in ("attic", "porch"), result  # yard, garage ended and were not restarted
            (attic_frames if result["source"] == "attic" else porch_frames).append(result["frame"])
        assert attic_frames == [1, 2, 3]
        assert 1 not in porch_frames and max(porch_frames) > porch_before  # porch never restarted
        state = ask(probe, "status", {})["state"]
        assert set(state["inputs"]) == {"yard", "garage", "attic", "porch"}
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(15) == 0


def online(probe: Probe) -> None:
    """Wait for the daemon's retained ``online``: its command subscription is in place then.

    (With only file sources a first result can come before MQTT is connected.)"""
    if getattr(probe, "_multicam_online", False):
        return
    probe.subscribe(f"{PREFIX}/status")
    wait_online(probe, PREFIX)
    probe._multicam_online = True  # type: ignore[attr-defined]


def ask(probe: Probe, name: str, arguments: dict) -> dict:
    online(probe)
    return ask_device(probe, PREFIX, name, arguments, timeout=10)


def test_commands_name_a_source(tmp_path, broker):
    tables = "".join(images(name, folder(tmp_path / name, 4)) + "loop = true\nfps = 20\n" for name in ("a", "b"))
    path = config(tmp_path, broker.port, tables)
    with Probe(broker.host, broker.port) as probe, DaemonProcess("-c", str(path), "--stdout") as daemon:
        sources = {daemon.next_result(30)["source"] for _ in range(10)}
        assert sources == {"a", "b"}
        assert ask(probe, "pause", {"source": "a"}) == {"command": "pause", "ok": True, "paused": True, "source": "a"}
        # Frames of a already handed over (its lane holds 2, the workers 2 more) may still come.
        after = [daemon.next_result(30)["source"] for _ in range(30)]
        assert after[-20:] == ["b"] * 20 and after.count("a") <= 4, after
        state = ask(probe, "status", {})["state"]
        assert state["inputs"]["a"]["paused"] is True and state["inputs"]["b"]["paused"] is False
        assert state["paused"] is False  # the daemon as a whole still classifies
        snap = ask(probe, "snapshot", {"source": "a"})  # a paused source's camera stays open
        assert snap["ok"] and snap["source"] == "a", snap
        missing = ask(probe, "pause", {"source": "attic"})
        assert missing["ok"] is False and "no source named 'attic' (running: a, b)" in missing["error"]
        assert ask(probe, "resume", {"source": "a"})["paused"] is False
        while daemon.next_result(30)["source"] != "a":
            pass
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(15) == 0


def test_the_fps_command_is_refused_with_several_sources(tmp_path, broker):
    tables = "".join(images(name, folder(tmp_path / name, 2)) + "loop = true\nfps = 5\n" for name in ("a", "b"))
    with Probe(broker.host, broker.port) as probe, \
            DaemonProcess("-c", str(config(tmp_path, broker.port, tables)), "--stdout") as daemon:
        daemon.next_result(30)
        reply = ask(probe, "config", {"fps": 30})
        assert reply["ok"] is False and "each source has its own fps" in reply["error"], reply
        assert ask(probe, "config", {"top_k": 2})["ok"] is True  # the other settings still change
