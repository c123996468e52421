"""The real daemon as a child process against a real Mosquitto the suite starts."""

from __future__ import annotations

import json
import re
import shutil
import signal
import time

import cv2
import pytest
from support.broker import Probe
from support.daemon import DaemonProcess, write_config
from support.testdata import image, model

SMALL = model("mobilenet_v1_0.25_128_quant")
V2 = model("mobilenet_v2_1.0_224_quant")
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def config_text(*, source: str, model_path=V2, port: int = 1, device: str = "testpi", extra: str = "") -> str:
    return f"""
[device]
id = "{device}"
[source]
{source}
[model]
path = "{model_path}"
threads = 2
[classify]
top_k = 2
threshold = 0.0
[mqtt]
host = "127.0.0.1"
port = {port}
{extra}
"""


def expect_event(probe: Probe, name: str, timeout: float = 15.0) -> dict:
    """The next event called ``name`` (other events, e.g. accelerator_fallback, are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        left = max(0.1, deadline - time.monotonic())
        event = json.loads(probe.expect("edge-classifier/testpi/event", timeout=left).payload)
        if event["event"] == name:
            return event


def reference_images(folder, names=("bird.bmp", "cat.bmp", "parrot.jpg", "sunflower.bmp")):
    folder.mkdir(exist_ok=True)
    for index, name in enumerate(names):
        shutil.copy(image(name), folder / f"{index:02d}_{name}")
    return folder


def check_result(payload: dict, *, device: str, frame: int) -> None:
    assert set(payload) == {"schema", "device", "source", "frame", "ts", "model", "top", "latency_ms"}
    assert payload["schema"] == 1
    assert payload["device"] == device
    assert payload["frame"] == frame
    assert TS.match(payload["ts"]), payload["ts"]
    assert set(payload["model"]) == {"name", "sha256", "accelerator"}
    assert len(payload["model"]["sha256"]) == 64
    assert payload["model"]["accelerator"] == "cpu"
    assert 1 <= len(payload["top"]) <= 2
    assert all(set(t) == {"id", "label", "score"} for t in payload["top"])
    latency = payload["latency_ms"]
    assert 0 < latency["inference"] <= latency["total"]


def test_images_every_result_published_in_order_with_retained_status(tmp_path, broker):
    folder = reference_images(tmp_path / "pics")
    config = write_config(tmp_path / "config.toml", config_text(
        source=f'kind = "images"\nuri = "{folder}"', port=broker.port))
    with Probe(broker.host, broker.port) as probe:
        probe.subscribe("edge-classifier/testpi/#")
        with DaemonProcess("-c", str(config)) as daemon:
            assert daemon.wait(60) == 0, daemon.log
        assert probe.expect("edge-classifier/testpi/status").text == "online"
        results = [json.loads(m.payload) for m in probe.collect(4, topic_filter="edge-classifier/testpi/result")]
        assert probe.expect("edge-classifier/testpi/status").text == "offline"
    for number, payload in enumerate(results, start=1):
        check_result(payload, device="testpi", frame=number)
        assert payload["source"] == "pics"
        assert payload["model"]["name"] == "mobilenet_v2_1.0_224_quant"
    assert [r["top"][0]["label"] for r in results] == ["chickadee", "Egyptian cat", "macaw", "daisy"]
    assert results[1]["top"][0]["score"] == pytest.approx(0.84, abs=0.1)
    # The status is retained: a client arriving later still learns the daemon is offline.
    with Probe(broker.host, broker.port) as late:
        late.subscribe("edge-classifier/testpi/status")
        message = late.expect("edge-classifier/testpi/status")
        assert message.text == "offline"
        assert message.retain


def write_video(path, frames: int) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (640, 480))
    pictures = [cv2.resize(cv2.imread(str(image(n))), (640, 480)) for n in ("parrot.jpg", "bird.bmp")]
    for index in range(frames):
        writer.write(pictures[index % 2])
    writer.release()


def test_video_file_all_frames_in_order_on_stdout_and_mqtt(tmp_path, broker):
    video = tmp_path / "clip.avi"
    write_video(video, 12)
    config = write_config(tmp_path / "config.toml", config_text(
        source=f'kind = "opencv"\nuri = "{video}"', port=broker.port))
    with Probe(broker.host, broker.port) as probe:
        probe.subscribe("edge-classifier/testpi/result")
        with DaemonProcess("-c", str(config), "--stdout") as daemon:
            assert daemon.wait(60) == 0, daemon.log
            printed = [daemon.next_result(1) for _ in range(12)]
        received = [json.loads(m.payload) for m in probe.collect(12)]
    assert received == printed
    assert [r["frame"] for r in received] == list(range(1, 13))
    assert [r["top"][0]["id"] for r in received] == [89, 20] * 6
    assert {r["source"] for r in received} == {"clip.avi"}


def test_classifies_while_the_broker_is_unreachable(tmp_path):
    from support.broker import free_port

    folder = reference_images(tmp_path / "pics")
    config = write_config(tmp_path / "config.toml", config_text(
        source=f'kind = "images"\nuri = "{folder}"', port=free_port()))
    with DaemonProcess("-c", str(config), "--stdout") as daemon:
        labels = [daemon.next_result(30)["top"][0]["label"] for _ in range(4)]
        assert labels == ["chickadee", "Egyptian cat", "macaw", "daisy"]
        assert daemon.wait(30) == 0, daemon.log


def test_max_frames_stops_a_looping_source(tmp_path):
    folder = reference_images(tmp_path / "pics")
    config = write_config(tmp_path / "config.toml", config_text(
        source=f'kind = "images"\nuri = "{folder}"\nloop = true', model_path=SMALL,
        extra="enabled = false"))
    with DaemonProcess("-c", str(config), "--stdout", "--max-frames", "9") as daemon:
        assert daemon.wait(60) == 0, daemon.log
        frames = [daemon.next_result(1)["frame"] for _ in range(9)]
        assert daemon.results.empty()
    assert frames == list(range(1, 10))


def test_sigterm_under_load_exits_0_within_5s_and_delivers_everything(tmp_path, broker):
    folder = reference_images(tmp_path / "pics")
    config = write_config(tmp_path / "config.toml", config_text(
        source=f'kind = "images"\nuri = "{folder}"\nloop = true', model_path=SMALL, port=broker.port))
    with Probe(broker.host, broker.port) as probe:
        probe.subscribe("edge-classifier/testpi/#")
        with DaemonProcess("-c", str(config), "--stdout") as daemon:
            for _ in range(50):
                daemon.next_result()
            daemon.signal(signal.SIGTERM)
            started = time.monotonic()
            code = daemon.wait(10)
            elapsed = time.monotonic() - started
            assert code == 0, daemon.log
            assert elapsed < 5.0
            printed = 50
            while not daemon.results.empty():
                daemon.results.get_nowait()
                printed += 1
        # Every result the daemon produced reached the broker, then the status went offline.
        messages = []
        while True:
            message = probe.expect("edge-classifier/testpi/#", timeout=10)
            if message.topic.endswith("/status") and message.text == "offline":
                break
            if message.topic.endswith("/result"):
                messages.append(json.loads(message.payload))
    assert len(messages) == printed
    assert [m["frame"] for m in messages] == list(range(1, printed + 1))


def test_second_signal_forces_exit(tmp_path):
    """A daemon that cannot finish shutting down (frames stuck) is forced out by a second signal."""
    folder = reference_images(tmp_path / "pics")
    config = write_config(tmp_path / "config.toml", config_text(
        source=f'kind = "images"\nuri = "{folder}"\nloop = true', model_path=SMALL,
        extra="enabled = false"))
    with DaemonProcess("-c", str(config), "--stdout") as daemon:
        daemon.next_result()
        daemon.signal(signal.SIGINT)
        daemon.signal(signal.SIGINT)
        code = daemon.wait(10)
        assert code in (0, 1), daemon.log  # 0 when the first stop already finished


def test_sighup_bad_config_keeps_the_old_one_and_good_config_applies(tmp_path, broker):
    folder = reference_images(tmp_path / "pics")
    text = config_text(source=f'kind = "images"\nuri = "{folder}"\nloop = true\nfps = 50', model_path=SMALL,
                       port=broker.port)
    config = write_config(tmp_path / "config.toml", text)
    with Probe(broker.host, broker.port) as probe:
        probe.subscribe("edge-classifier/testpi/event")
        with DaemonProcess("-c", str(config), "--stdout") as daemon:
            daemon.next_result()
            config.write_text(text.replace("top_k = 2", "top_k = 'many'"))
            daemon.signal(signal.SIGHUP)
            daemon.wait_for_log(r"reload: keeping the running configuration: .*classify\.top_k: must be an integer")
            event = expect_event(probe, "config_rejected")
            assert "classify.top_k" in event["reason"]
            # Still classifying with the old settings.
            mark = daemon.results.qsize()
            for _ in range(mark + 3):
                result = daemon.next_result()
            assert len(result["top"]) == 2
            # A valid change applies without a restart: top_k 1 from some frame on.
            config.write_text(text.replace("top_k = 2", "top_k = 1"))
            daemon.signal(signal.SIGHUP)
            daemon.wait_for_log(r"reload: configuration applied")
            deadline = time.monotonic() + 10
            while len(daemon.next_result()["top"]) != 1:
                assert time.monotonic() < deadline
            assert all(len(daemon.next_result()["top"]) == 1 for _ in range(5))
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(10) == 0


def test_vanishing_image_folder_is_lost_then_back(tmp_path, broker):
    folder = reference_images(tmp_path / "pics")
    config = write_config(tmp_path / "config.toml", config_text(
        source=f'kind = "images"\nuri = "{folder}"\nloop = true\nfps = 20\nretry_initial = 0.1\nretry_max = 0.5',
        model_path=SMALL, port=broker.port))
    with Probe(broker.host, broker.port) as probe:
        probe.subscribe("edge-classifier/testpi/event")
        with DaemonProcess("-c", str(config), "--stdout") as daemon:
            daemon.next_result()
            moved = tmp_path / "away"
            folder.rename(moved)
            lost = expect_event(probe, "source_lost")
            assert lost["source"] == "pics"
            moved.rename(folder)
            back = expect_event(probe, "source_back")
            assert back["downtime_s"] > 0
            while not daemon.results.empty():  # what came before the loss
                daemon.results.get_nowait()
            assert daemon.next_result(10)["source"] == "pics"  # frames flow again
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(10) == 0


def test_bad_config_is_78_before_anything_starts(tmp_path):
    config = write_config(tmp_path / "config.toml", "[source]\nkind = 'webcam'\n")
    with DaemonProcess("-c", str(config)) as daemon:
        assert daemon.wait(30) == 78
    assert "source.kind: must be one of" in daemon.log


def test_missing_model_is_66(tmp_path):
    config = write_config(tmp_path / "config.toml", config_text(
        source=f'kind = "images"\nuri = "{tmp_path}"', model_path=tmp_path / "none.tflite"))
    with DaemonProcess("-c", str(config)) as daemon:
        assert daemon.wait(30) == 66
    assert "none.tflite: model file not found" in daemon.log




def test_http_mjpeg_camera_that_stops_and_comes_back(tmp_path, broker):
    """An IP camera (a real MJPEG-over-HTTP server) goes away mid-run and returns on the same port."""
    from support.mjpeg import MjpegServer

    parrot = cv2.imencode(".jpg", cv2.resize(cv2.imread(str(image("parrot.jpg"))), (640, 480)))[1].tobytes()
    camera = MjpegServer(jpeg=parrot).start()
    try:
        config = write_config(tmp_path / "config.toml", config_text(
            source=f'kind = "opencv"\nuri = "{camera.url}"\nretry_initial = 0.1\nretry_max = 0.5',
            model_path=SMALL, port=broker.port))
        with Probe(broker.host, broker.port) as probe:
            probe.subscribe("edge-classifier/testpi/event")
            with DaemonProcess("-c", str(config), "--stdout") as daemon:
                first = daemon.next_result(20)
                assert first["top"][0]["id"] == 89
                assert first["source"] == "127.0.0.1"
                camera.stop()
                assert expect_event(probe, "source_lost")["source"] == "127.0.0.1"
                camera = MjpegServer(port=camera.port, jpeg=parrot).start()
                expect_event(probe, "source_back")
                while not daemon.results.empty():
                    daemon.results.get_nowait()
                after = daemon.next_result(10)
                assert after["top"][0]["id"] == 89
                assert after["frame"] > first["frame"]
                daemon.signal(signal.SIGTERM)
                assert daemon.wait(10) == 0
    finally:
        camera.stop()
