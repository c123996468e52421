"""HTTP MJPEG read part by part (``source.reduced_decode``), against a real MJPEG server on
127.0.0.1: reduced frames, stalls, refused parts, a server that goes away, what is not MJPEG."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import pytest
from support.mjpeg import MjpegServer
from support.testdata import image

from edge_classifier.config.schema import MqttConfig, SourceConfig
from edge_classifier.errors import SourceError
from edge_classifier.preprocess.decode import ImageLimits
from edge_classifier.source import Capture, open_source
from edge_classifier.source.mjpeg import MjpegSource
from edge_classifier.source.opencv import OpenCVSource

FULL_HD = cv2.imencode(".jpg", cv2.resize(cv2.imread(str(image("cat_720p.jpg"))), (1920, 1080)))[1].tobytes()


@pytest.fixture
def camera() -> Iterator[MjpegServer]:
    server = MjpegServer(jpeg=FULL_HD).start()
    yield server
    server.stop()


def opened(url: str, reduced: bool, **config: Any) -> Any:
    source = open_source(SourceConfig(kind="opencv", uri=url, name="door", reduced_decode=reduced,
                                      stall_timeout=2, **config), MqttConfig(), input_size=(224, 224))
    source.open()
    return source


def test_frames_decoded_at_a_reduced_scale_or_whole(camera: MjpegServer) -> None:
    reduced = opened(camera.url, True)
    try:
        assert isinstance(reduced, MjpegSource) and reduced.live
        frames = [reduced.read() for _ in range(3)]
    finally:
        reduced.close()
    assert all(f is not None and f.image.shape == (270, 480, 3) and f.source == "door" for f in frames)
    assert [f.index for f in frames if f is not None] == [1, 2, 3]
    whole = opened(camera.url, False)  # the option off: FFmpeg inside OpenCV, as before
    try:
        assert isinstance(whole, OpenCVSource)
        frame = whole.read()
    finally:
        whole.close()
    assert frame is not None and frame.image.shape == (1080, 1920, 3)
    # The same picture either way: the reduced frame is the whole one, scaled.
    assert frames[0] is not None
    smaller = cv2.resize(frame.image, (480, 270), interpolation=cv2.INTER_AREA).astype(np.int16)
    assert float(np.abs(smaller - frames[0].image.astype(np.int16)).mean()) < 4
    kept = opened(camera.url, True, roi=(0, 0, 640, 480))  # a roi names full-size pixels
    try:
        frame = kept.read()
    finally:
        kept.close()
    assert frame is not None and frame.image.shape == (1080, 1920, 3)


def test_a_stalled_stream_is_a_source_error_in_time(camera: MjpegServer) -> None:
    source = opened(camera.url, True)
    try:
        assert source.read() is not None
        camera.stalled.set()
        with pytest.raises(SourceError, match=r"nothing for 2 s.*source.stall_timeout"):
            while True:  # the parts already sent come first
                source.read()
    finally:
        source.close()


def test_parts_over_max_bytes_are_refused_counted_and_end_a_read_in_time(camera: MjpegServer) -> None:
    source = MjpegSource(camera.url, name="door", read_timeout=1, limits=ImageLimits(max_bytes=len(FULL_HD) - 1))
    source.open()
    try:
        with pytest.raises(SourceError, match=r"only refused parts for 1 s"):
            source.read()
    finally:
        source.close()
    assert source.rejected >= 5 and source.rejects.counts == {"too many bytes": source.rejected}


def test_server_lost_then_back(camera: MjpegServer) -> None:
    lost, back = threading.Event(), threading.Event()
    names: list[str] = []

    def on_event(name: str, details: dict[str, Any]) -> None:
        names.append(name)
        {"source_lost": lost, "source_back": back}[name].set()

    source = MjpegSource(camera.url, name="door", read_timeout=2, reduce_to=(224, 224))
    with Capture(source, on_event=on_event, retry_initial=0.05, retry_max=0.2) as capture:
        assert capture.get(timeout=5) is not None
        camera.stop()
        assert lost.wait(5), "capture did not notice the server going away"
        camera.start()
        assert back.wait(5), "capture did not reconnect"
        frame = capture.get(timeout=5)
        assert frame is not None and frame.image.shape == (270, 480, 3)
    assert names == ["source_lost", "source_back"]


class _Plain(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/missing":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=b")
        self.end_headers()
        # A part without Content-Length, then nothing.
        self.wfile.write(b"--b\r\nContent-Type: image/jpeg\r\n\r\n" + FULL_HD[:100])

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def plain() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Plain)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_http_errors_and_parts_without_a_length_are_named(plain: str) -> None:
    source = MjpegSource(f"{plain}/missing", name="door", read_timeout=2)
    with pytest.raises(SourceError, match="HTTP 404"):
        source.open()
    source = MjpegSource(f"{plain}/stream", name="door", read_timeout=2)
    source.open()
    try:
        with pytest.raises(SourceError, match=r"a part without Content-Length .*reduced_decode"):
            source.read()
    finally:
        source.close()


def test_what_is_not_multipart_goes_to_opencv_for_that_connection(tmp_path) -> None:
    # A video file over HTTP (not an MJPEG stream): FFmpeg reads it, whole, as without the option.
    writer = cv2.VideoWriter(str(tmp_path / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    assert writer.isOpened(), "this OpenCV build cannot write MJPG/avi"
    for value in (40, 120, 200):
        writer.write(np.full((48, 64, 3), value, np.uint8))
    writer.release()

    class Files(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        source = MjpegSource(f"http://127.0.0.1:{server.server_address[1]}/clip.avi", name="clip", read_timeout=5)
        source.open()
        try:
            frame = source.read()
        finally:
            source.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert frame is not None and frame.image.shape == (48, 64, 3) and abs(float(frame.image.mean()) - 40) < 4
