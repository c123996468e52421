"""The OpenCV source: a real video file (written here), and a real MJPEG-over-HTTP
server on 127.0.0.1 that is stopped and restarted under a running Capture."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from support.broker import free_port
from support.mjpeg import MjpegServer
from support.rtsp import RtspServer
from support.sources import read_all

from edge_classifier.config.schema import MqttConfig, SourceConfig
from edge_classifier.errors import SourceError
from edge_classifier.source import Capture, Frame, open_source
from edge_classifier.source.opencv import OpenCVSource, parse_uri
from edge_classifier.source.stall import StalledError, StallGuard

REPO = Path(__file__).resolve().parents[1]


def write_video(path: Path, values: list[int]) -> None:
    """An MJPG .avi, one 64x48 frame per value, each filled with that grey level."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    assert writer.isOpened(), "this OpenCV build cannot write MJPG/avi"
    for value in values:
        writer.write(np.full((48, 64, 3), value, np.uint8))
    writer.release()


def grey(frame: Frame) -> int:
    return round(float(frame.image.mean()))




def test_video_file_all_frames_then_none(tmp_path: Path) -> None:
    path = tmp_path / "video.avi"
    write_video(path, [0, 50, 100, 150, 200])
    source = open_source(SourceConfig(kind="opencv", uri=str(path)), MqttConfig())
    assert isinstance(source, OpenCVSource)
    assert source.name == "video.avi" and not source.live
    source.open()
    frames = read_all(source)
    assert source.read() is None
    source.close()
    source.close()
    assert [grey(f) for f in frames] == pytest.approx([0, 50, 100, 150, 200], abs=3)
    assert [f.index for f in frames] == [1, 2, 3, 4, 5]
    assert all(f.image.shape == (48, 64, 3) and not f.rgb for f in frames)


def test_video_file_loop_rewinds(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    write_video(path, [20, 120])
    source = OpenCVSource(str(path), name="clip", loop=True)
    source.open()
    frames = [source.read() for _ in range(5)]
    source.close()
    assert [grey(f) for f in frames if f] == pytest.approx([20, 120, 20, 120, 20], abs=3)
    assert [f.index for f in frames if f] == [1, 2, 3, 4, 5]


def test_missing_video_file_is_a_source_error(tmp_path: Path) -> None:
    source = OpenCVSource(str(tmp_path / "nope.mp4"), name="nope")
    with pytest.raises(SourceError, match=r"nope\.mp4"):
        source.open()
    source.close()


def test_video_file_removed_and_recreated_is_lost_then_back(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    write_video(path, [10, 20, 30])
    lost, back = threading.Event(), threading.Event()
    events: list[tuple[str, dict[str, Any]]] = []

    def on_event(name: str, details: dict[str, Any]) -> None:
        events.append((name, details))
        {"source_lost": lost, "source_back": back}[name].set()

    source = OpenCVSource(str(path), name="clip", loop=True)
    with Capture(source, on_event=on_event, retry_initial=0.02, retry_max=0.1) as capture:
        assert capture.get(timeout=5) is not None
        path.unlink()
        while not lost.wait(0.01):
            capture.get(timeout=0.01)  # keep the reader moving to the end of the file
        assert "does not exist" in events[0][1]["reason"]
        write_video(path, [240])
        assert back.wait(5)
        frame = capture.get(timeout=5)
        while frame is not None and grey(frame) < 200:
            frame = capture.get(timeout=5)
        assert frame is not None
    assert [name for name, _ in events] == ["source_lost", "source_back"]


def test_uri_kinds_and_names() -> None:
    assert parse_uri("") == ("device", 0)
    assert parse_uri("2") == ("device", 2)
    assert parse_uri("/dev/video1") == ("device", "/dev/video1")
    assert parse_uri("rtsp://cam/stream")[0] == "stream"
    assert parse_uri("HTTP://cam/video.mjpg")[0] == "stream"
    assert parse_uri("videos/a.mp4") == ("file", "videos/a.mp4")

    def name(uri: str) -> str:
        return open_source(SourceConfig(kind="opencv", uri=uri), MqttConfig()).name

    assert name("0") == "cam0"
    assert name("/dev/video2") == "video2"
    assert name("rtsp://user:secret@10.0.0.5:554/live") == "10.0.0.5"
    assert name("/data/video.mp4") == "video.mp4"
    assert open_source(SourceConfig(kind="opencv", uri="0", name="door"), MqttConfig()).name == "door"
    assert OpenCVSource("rtsp://cam", name="x").live and OpenCVSource("0", name="x").live


@pytest.fixture
def mjpeg() -> Any:
    server = MjpegServer().start()
    yield server
    server.stop()


def test_http_mjpeg_frames(mjpeg: MjpegServer) -> None:
    source = OpenCVSource(mjpeg.url, name="web", read_timeout=2, open_timeout=2)
    source.open()
    frames = [source.read() for _ in range(3)]
    source.close()
    assert all(f is not None and f.image.shape == (48, 64, 3) for f in frames)
    assert source.live


def test_http_mjpeg_server_lost_then_back(mjpeg: MjpegServer) -> None:
    lost, back = threading.Event(), threading.Event()
    events: list[tuple[str, dict[str, Any]]] = []

    def on_event(name: str, details: dict[str, Any]) -> None:
        events.append((name, details))
        {"source_lost": lost, "source_back": back}[name].set()

    source = OpenCVSource(mjpeg.url, name="web", read_timeout=2, open_timeout=2)
    with Capture(source, on_event=on_event, retry_initial=0.05, retry_max=0.2) as capture:
        assert capture.get(timeout=5) is not None
        mjpeg.stop()
        assert lost.wait(5), "capture did not notice the server going away"
        mjpeg.start()  # the same port again
        assert back.wait(5), "capture did not reconnect"
        first = capture.get(timeout=5)
        assert first is not None
        second = capture.get(timeout=5)
        assert second is not None and second.index > first.index
    assert [name for name, _ in events] == ["source_lost", "source_back"]
    assert events[0][1]["source"] == "web"
    assert capture.failures >= 1


def test_http_mjpeg_silent_server_times_out(mjpeg: MjpegServer) -> None:
    """A server that keeps the connection open but sends nothing fails the read after
    the read timeout instead of hanging the capture thread."""
    lost = threading.Event()
    reasons: list[str] = []

    def on_event(name: str, details: dict[str, Any]) -> None:
        if name == "source_lost":
            reasons.append(details["reason"])
            lost.set()

    source = OpenCVSource(mjpeg.url, name="web", read_timeout=0.5, open_timeout=0.5)
    with Capture(source, on_event=on_event, retry_initial=5, retry_max=5) as capture:
        assert capture.get(timeout=5) is not None
        mjpeg.stalled.set()
        assert lost.wait(5)
    assert "no frame for 0.5 s (stalled)" in reasons[0] and "source.stall_timeout" in reasons[0]


class Watch:
    """A capture's events, each with when it came (on_event is called from the capture thread)."""

    def __init__(self) -> None:
        self.lost, self.back = threading.Event(), threading.Event()
        self.events: dict[str, tuple[float, dict[str, Any]]] = {}

    def on_event(self, name: str, details: dict[str, Any]) -> None:
        self.events[name] = (time.monotonic(), details)
        {"source_lost": self.lost, "source_back": self.back}[name].set()


def test_a_stall_is_noticed_within_the_stall_timeout_and_downtime_counts_from_the_last_frame(
        mjpeg: MjpegServer) -> None:
    watch = Watch()
    lost, back, events, on_event = watch.lost, watch.back, watch.events, watch.on_event

    stall = 1.0
    source = OpenCVSource(mjpeg.url, name="web", read_timeout=stall, open_timeout=stall)
    with Capture(source, on_event=on_event, retry_initial=0.05, retry_max=0.2) as capture:
        assert capture.get(timeout=5) is not None
        mjpeg.stalled.set()
        stalled_at = time.monotonic()
        while not lost.wait(0.01):
            capture.get(timeout=0.01)  # the frames sent before the stall
        noticed = events["source_lost"][0] - stalled_at
        assert noticed < stall + 1.0, f"noticed {noticed:.2f} s after the stall"
        mjpeg.stalled.clear()
        assert back.wait(10)
    downtime = events["source_back"][1]["downtime_s"]
    # Without frames from before the stall was noticed until after it was over.
    assert downtime >= stall
    assert downtime >= events["source_back"][0] - stalled_at - 0.2


def test_native_opencv_and_ffmpeg_lines_are_silenced(tmp_path: Path) -> None:
    """A refused stream makes OpenCV print `[ WARN:0@...] global cap.cpp ...` and FFmpeg
    `[tcp @ 0x...] Connection ... refused` on stderr at every try: nothing of that is left."""
    code = textwrap.dedent("""
        import sys
        from edge_classifier.errors import SourceError
        from edge_classifier.source.opencv import OpenCVSource
        source = OpenCVSource(sys.argv[1], name="gone", open_timeout=0.5, read_timeout=0.5)
        for _ in range(3):
            try:
                source.open()
            except SourceError as exc:
                print(exc)
    """)
    child = subprocess.run([sys.executable, "-c", code, f"http://127.0.0.1:{free_port()}/x.mjpg"], cwd=REPO,
                           env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=60)
    assert child.stdout.count("cannot open stream") == 3, child.stdout
    assert child.stderr == "", child.stderr


def test_the_stall_guard_gives_up_and_the_stuck_capture_is_released_by_its_reader() -> None:
    """The guard around any blocking read (a V4L2 camera that froze blocks cap.read() for good)."""
    unblock, released = threading.Event(), threading.Event()
    threads: list[str] = []

    def read() -> tuple[bool, None]:
        unblock.wait(10)
        return True, None

    def release() -> None:
        threads.append(threading.current_thread().name)
        released.set()

    guard = StallGuard(read, release, name="cam0", timeout=0.2)
    started = time.monotonic()
    with pytest.raises(StalledError, match=r"no frame for 0\.2 s"):
        guard.read()
    assert time.monotonic() - started < 2
    guard.close()
    assert not released.is_set()  # still inside the read: not released under it
    unblock.set()
    assert released.wait(5)
    assert threads == ["opencv-read-cam0"]


def test_the_stall_guard_passes_reads_and_errors_through_and_closes() -> None:
    released = threading.Event()
    values = iter([(True, "a"), ValueError("driver")])

    def read() -> Any:
        value = next(values)
        if isinstance(value, Exception):
            raise value
        return value

    guard = StallGuard(read, released.set, name="cam1", timeout=2)
    assert guard.read() == (True, "a")
    with pytest.raises(ValueError, match="driver"):
        guard.read()
    guard.close()
    guard.close()
    assert released.is_set()


@pytest.fixture
def rtsp() -> Any:
    server = RtspServer().start()
    yield server
    server.close()


def test_a_frozen_rtsp_camera_is_noticed_within_the_stall_timeout(rtsp: RtspServer) -> None:
    """A real RTSP server (gst-rtsp-server) that stops sending with its session open: FFmpeg's own
    read timeout would count three times over UDP; the stall guard notices at the stall timeout."""
    watch = Watch()
    lost, back, events, on_event = watch.lost, watch.back, watch.events, watch.on_event

    stall = 2.0
    source = OpenCVSource(rtsp.url, name="door", read_timeout=stall, open_timeout=10)
    with Capture(source, on_event=on_event, retry_initial=0.1, retry_max=0.5) as capture:
        assert capture.get(timeout=20) is not None
        rtsp.stall()
        stalled_at = time.monotonic()
        while not lost.wait(0.01):
            capture.get(timeout=0.01)
        noticed = events["source_lost"][0] - stalled_at
        assert noticed < stall + 1.5, f"noticed {noticed:.2f} s after the camera froze"
        assert "stalled" in events["source_lost"][1]["reason"]
        rtsp.resume()
        assert back.wait(20)
        assert capture.get(timeout=10) is not None
    assert events["source_back"][1]["downtime_s"] >= stall


def test_native_logs_are_quieted_on_a_build_without_cv2_utils_logging(monkeypatch):
    """opencv-python-headless 4.11 (what pip picks beside bookworm's numpy 1.24; the field rig
    found it) has cv2.setLogLevel but no cv2.utils.logging: opening a camera must not fail there."""
    from edge_classifier.source import opencv

    calls: list[int] = []
    monkeypatch.setattr(cv2, "utils", type("utils", (), {})())  # 4.11's cv2.utils: no `logging`
    monkeypatch.setattr(cv2, "setLogLevel", calls.append, raising=False)
    opencv._quiet_native_logs()
    assert calls == [0]  # LOG_LEVEL_SILENT
