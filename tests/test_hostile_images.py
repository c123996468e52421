"""Images that try to hurt the device, fed to the real daemon through a real broker: bombs
whose headers claim 30000x30000, an empty payload, a flood of random bytes. Memory stays
bounded, the source never reconnects, the logs stay quiet, and classification goes on."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.bombs import jpeg_bomb, png_bomb
from support.broker import Probe
from support.daemon import REPO, DaemonProcess
from support.device import ask, daemon_config, jpeg, wait_online
from support.variants import EXTRACTOR

PREFIX = "edge-classifier/bombpi"
CAMERA = "cams/door/image"
DEMO_MODEL = REPO / "models" / "demo_shapes_mobilenet_v2_035_96_quant.tflite"
RSS_LIMIT_MB = 250
# Runs argv[1:] and reports its peak RSS: the wrapper's only child, so RUSAGE_CHILDREN is its.
PEAK_OF_CHILD = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
                 "print(f'PEAK_RSS_KB={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}', file=sys.stderr); "
                 "sys.exit(code)")


def config(tmp_path: Path, port: int, extra: str = "") -> Path:
    return daemon_config(tmp_path / "config.toml", device="bombpi", port=port, model=DEMO_MODEL,
                         sources='[source]\nkind = "mqtt"\nuri = "cams/+/image"',
                         extra="[publish]\nstats_interval = 0\n" + extra)


def peak_rss_mb(pid: int) -> float:
    """The process's high-water mark of resident memory (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


def test_bombs_empty_and_random_payloads_on_the_mqtt_source(tmp_path, broker):
    """Findings 2 and 7: the bombs are refused from their headers (peak RSS stays under
    250 MB), an empty payload is not a source failure, a flood of junk logs one line."""
    with Probe(broker.host, broker.port) as probe:
        probe.subscribe(f"{PREFIX}/status", f"{PREFIX}/result")
        with DaemonProcess("-c", str(config(tmp_path, broker.port))) as daemon:
            wait_online(probe, PREFIX)
            probe.publish(CAMERA, jpeg(np.full((96, 96, 3), 200, np.uint8)), qos=1)
            probe.expect(f"{PREFIX}/result", timeout=20)
            before = peak_rss_mb(daemon.proc.pid)
            probe.publish(CAMERA, png_bomb(30000, 30000), qos=1)
            probe.publish(CAMERA, jpeg_bomb(30000, 30000), qos=1)
            probe.publish(CAMERA, b"", qos=1)
            probe.publish(CAMERA, jpeg(np.full((96, 96, 3), 30, np.uint8)), qos=1)
            result = json.loads(probe.expect(f"{PREFIX}/result", timeout=30).payload)
            assert result["frame"] == 2  # the next good image is the next frame: nothing in between
            assert ask(probe, PREFIX, "status", {})["state"]["source"]["rejected"] == 3
            rng = np.random.default_rng(7)
            for _ in range(200):
                probe.publish(CAMERA, rng.integers(0, 256, 2000, dtype=np.uint8).tobytes(), qos=1)
            probe.publish(CAMERA, jpeg(np.full((96, 96, 3), 60, np.uint8)), qos=1)
            assert json.loads(probe.expect(f"{PREFIX}/result", timeout=30).payload)["frame"] == 3
            state = ask(probe, PREFIX, "status", {})["state"]
            peak = peak_rss_mb(daemon.proc.pid)
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(15) == 0
    print(f"\npeak RSS: {before:.0f} MB before the bombs, {peak:.0f} MB after")
    assert peak < RSS_LIMIT_MB
    # The junk the reader did not fall behind on is rejected (the rest dropped as too old).
    assert 3 < state["source"]["rejected"] <= 203 and state["source"]["failures"] == 0
    log = daemon.log
    assert "png header declares 30000x30000 = 900000000 pixels, over the limit of 40000000" in log
    assert "not a readable image (empty, 0 bytes)" in log  # the JPEG bomb has the PNG's reason: inside its line's 10 s
    assert log.count("listening on cams/+/image") == 1, "the source reconnected"
    assert "source failed" not in log and "Traceback" not in log
    # One line per reason: the bombs, the empty payload, the junk (rate-limited: not 200).
    assert log.count("mqtt source:") <= 6, log


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_oversized_payload_is_dropped_before_it_is_decoded(tmp_path, broker, protocol):
    """Under MQTT 5 the broker drops it (the source's Maximum Packet Size), under 3.1.1 the
    source does, uncopied; either way the source stays connected and the next image counts."""
    path = config(tmp_path, broker.port)
    text = path.read_text().replace('uri = "cams/+/image"', 'uri = "cams/+/image"\nmax_bytes = 65536')
    path.write_text(text.replace('port = ', f'protocol = "{protocol}"\nport = '))
    with Probe(broker.host, broker.port) as probe:
        probe.subscribe(f"{PREFIX}/status", f"{PREFIX}/result")
        with DaemonProcess("-c", str(path)) as daemon:
            wait_online(probe, PREFIX)
            probe.publish(CAMERA, b"\xff\xd8" + bytes(200_000), qos=1)
            probe.publish(CAMERA, jpeg(np.full((96, 96, 3), 30, np.uint8)), qos=1)
            result = json.loads(probe.expect(f"{PREFIX}/result", timeout=30).payload)
            assert result["frame"] == 1
            if protocol == "5":
                state = ask(probe, PREFIX, "status", {})["state"]
            else:  # a 3.1.1 daemon replies on {prefix}/reply/{name}
                probe.subscribe(f"{PREFIX}/reply/status")
                probe.publish(f"{PREFIX}/cmd/status", b"{}", qos=1)
                state = json.loads(probe.expect(f"{PREFIX}/reply/status", timeout=10).payload)["state"]
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(15) == 0
    assert state["source"]["failures"] == 0
    assert state["source"]["rejected"] == (0 if protocol == "5" else 1), state["source"]
    if protocol == "3.1.1":
        assert "200002 bytes, over the limit of 65536 bytes (source.max_bytes)" in daemon.log
    assert "Traceback" not in daemon.log


def test_bomb_inside_a_learn_command_is_refused(tmp_path, broker):
    """Finding 2: the same bomb in a learn command is refused with a reason; nothing learned."""
    head = tmp_path / "learned_head.json"
    extra = f'[learn]\nenabled = true\nextractor = "{EXTRACTOR}"\nhead = "{head}"\n'
    with Probe(broker.host, broker.port) as probe:
        probe.subscribe(f"{PREFIX}/status", f"{PREFIX}/result")
        with DaemonProcess("-c", str(config(tmp_path, broker.port, extra))) as daemon:
            wait_online(probe, PREFIX)
            images = [base64.b64encode(jpeg(np.full((64, 64, 3), 90, np.uint8))).decode(),
                      base64.b64encode(png_bomb(30000, 30000)).decode()]
            payload = json.dumps({"label": "bomb", "images": images, "request_id": "b1"}).encode()
            reply = json.loads(probe.request(f"{PREFIX}/cmd/learn", payload, timeout=30).payload)
            peak = peak_rss_mb(daemon.proc.pid)
            classes = json.loads(probe.request(f"{PREFIX}/cmd/classes", b"{}", timeout=10).payload)
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(15) == 0
    assert reply["ok"] is False and reply["request_id"] == "b1"
    assert "images[1]: png header declares 30000x30000" in reply["error"], reply
    assert classes["classes"] == {}
    assert peak < RSS_LIMIT_MB + 150  # the extractor (224x224 MobileNet v1) is bigger than the demo model


@pytest.mark.parametrize("kind", ["png", "jpeg"])
def test_classify_refuses_a_20000_square_bomb(tmp_path, kind):
    """Finding 2: `classify` of a 20000x20000 image: one clear error, exit 65, bounded memory."""
    bomb = tmp_path / f"bomb.{'png' if kind == 'png' else 'jpg'}"
    bomb.write_bytes(png_bomb(20000, 20000) if kind == "png" else jpeg_bomb(20000, 20000))
    good = tmp_path / "good.jpg"
    good.write_bytes(jpeg(np.full((96, 96, 3), 200, np.uint8)))
    command = [sys.executable, "-m", "edge_classifier", "classify", "--model", str(DEMO_MODEL),
               "--accelerator", "cpu", str(bomb), str(good)]
    child = subprocess.run([sys.executable, "-c", PEAK_OF_CHILD, *command], capture_output=True, text=True,
                           timeout=120, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    stdout, stderr = child.stdout, child.stderr
    peak = float(stderr.rsplit("PEAK_RSS_KB=", 1)[1]) / 1024
    print(f"\nclassify of a 20000x20000 {kind} bomb: peak RSS {peak:.0f} MB")
    assert child.returncode == 65, stderr
    assert f"{bomb}: {kind} header declares 20000x20000 = 400000000 pixels" in stderr
    assert json.loads(stdout.splitlines()[0])["image"] == str(good)  # the next image is still classified
    assert peak < RSS_LIMIT_MB, peak


def test_online_means_the_mqtt_source_is_subscribed(tmp_path, broker):
    """Issue 12: `online` came before the source's SUBACK, so the first image sent on it was
    lost. Three starts, each sending one image the moment the device says online."""
    path = config(tmp_path, broker.port)
    with Probe(broker.host, broker.port) as probe:
        probe.subscribe(f"{PREFIX}/status", f"{PREFIX}/result")
        for round in range(3):
            with DaemonProcess("-c", str(path)) as daemon:
                wait_online(probe, PREFIX)
                probe.publish(CAMERA, jpeg(np.full((96, 96, 3), 40 * round, np.uint8)), qos=1)
                assert json.loads(probe.expect(f"{PREFIX}/result", timeout=20).payload)["frame"] == 1
                daemon.signal(signal.SIGTERM)
                assert daemon.wait(15) == 0
            while probe.expect(f"{PREFIX}/status", timeout=10).text != "offline":
                pass
