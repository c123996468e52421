"""The Pi camera source against a fake ``picamera2`` module shaped like the real API
(no camera can exist here), and the real failure when the package is missing."""

from __future__ import annotations

import sys
import time
import types
from collections.abc import Iterator
from typing import Any, ClassVar

import cv2
import numpy as np
import pytest

from edge_classifier.config.schema import MqttConfig, SourceConfig
from edge_classifier.errors import ConfigError, SourceError
from edge_classifier.source import open_source
from edge_classifier.source.auto import AutoSource
from edge_classifier.source.picamera2 import Picamera2Source


def half_red_half_blue(width: int, height: int) -> np.ndarray:
    """An RGB image: left half pure red, right half pure blue."""
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[:, : width // 2, 0] = 255
    rgb[:, width // 2 :, 2] = 255
    return rgb


def i420_with_stride(rgb: np.ndarray, stride: int) -> np.ndarray:
    """What picamera2 returns for a YUV420 stream: planar Y, U, V (I420), each row padded
    to the stride (U and V to stride/2), as a (height * 3/2, stride) array."""
    height, width = rgb.shape[:2]
    flat = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).reshape(-1)
    y = flat[: width * height].reshape(height, width)
    quarter = (width // 2) * (height // 2)
    u = flat[width * height : width * height + quarter].reshape(height // 2, width // 2)
    v = flat[width * height + quarter :].reshape(height // 2, width // 2)

    def pad(plane: np.ndarray, to: int) -> np.ndarray:
        return np.pad(plane, ((0, 0), (0, to - plane.shape[1])), constant_values=7)

    planes = [pad(y, stride).reshape(-1), pad(u, stride // 2).reshape(-1), pad(v, stride // 2).reshape(-1)]
    return np.concatenate(planes).reshape(height * 3 // 2, stride)


class FakePicamera2:
    """Shaped like ``picamera2.Picamera2``: the constructor opens the camera (and fails
    like the real one with no camera), ``create_video_configuration`` returns a dict,
    ``capture_array(name, wait=...)`` returns the stream's array in its format."""

    attached: ClassVar[list[dict[str, Any]]] = [{"Model": "imx708", "Id": "/base/soc/i2c0mux/i2c@1/imx708@1a"}]
    instances: ClassVar[list[FakePicamera2]] = []

    def __init__(self, camera_num: int = 0, verbose_console: Any = None, tuning: Any = None) -> None:
        if camera_num >= len(self.attached):
            # The real one logs and raises this when libcamera lists no such camera.
            raise RuntimeError("Camera __init__ sequence did not complete.")
        self.camera_num = camera_num
        self.camera_properties = {"Model": self.attached[camera_num]["Model"],
                                  "PixelArraySize": (4608, 2592)}
        self.camera_config: dict[str, Any] | None = None
        self.started = False
        self.closed = False
        self.calls: list[str] = []
        FakePicamera2.instances.append(self)

    @staticmethod
    def global_camera_info() -> list[dict[str, Any]]:
        return list(FakePicamera2.attached)

    def create_video_configuration(self, main: dict[str, Any] | None = None,
                                   lores: dict[str, Any] | None = None, raw: Any = None,
                                   transform: Any = None, colour_space: Any = None,
                                   buffer_count: int = 6, controls: dict[str, Any] | None = None,
                                   display: str | None = "main", encode: str | None = "main",
                                   queue: bool = True, sensor: Any = None,
                                   use_case: str = "video") -> dict[str, Any]:
        main = {"format": "XBGR8888", "size": (1280, 720), **(main or {})}
        if lores is not None:
            lores = {"format": "YUV420", "size": (320, 240), **lores}
        return {"use_case": use_case, "main": main, "lores": lores, "raw": raw,
                "controls": dict(controls or {}), "buffer_count": buffer_count}

    def configure(self, camera_config: dict[str, Any] | None = None) -> None:
        self.calls.append("configure")
        self.camera_config = camera_config

    def start(self, config: Any = None, show_preview: bool = False) -> None:
        if self.camera_config is None:
            raise RuntimeError("Camera has not been configured")
        self.calls.append("start")
        self.started = True

    def capture_array(self, name: str = "main", wait: Any = None, signal_function: Any = None) -> np.ndarray:
        if not self.started:
            raise RuntimeError("Camera is not running")
        self.calls.append(f"capture_array:{name}")
        assert self.camera_config is not None
        stream = self.camera_config[name]
        width, height = stream["size"]
        rgb = half_red_half_blue(width, height)
        if stream["format"] == "YUV420":
            return i420_with_stride(rgb, stride=(width + 63) // 64 * 64)
        if stream["format"] == "BGR888":
            return rgb  # libcamera's BGR888 is R, G, B in memory
        if stream["format"] == "RGB888":
            return np.ascontiguousarray(rgb[:, :, ::-1])
        raise AssertionError(f"the source asked for {stream['format']}")

    def stop(self) -> None:
        self.calls.append("stop")
        self.started = False

    def close(self) -> None:
        self.calls.append("close")
        self.closed = True


@pytest.fixture
def fake_picamera2(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakePicamera2]]:
    module = types.ModuleType("picamera2")
    module.Picamera2 = FakePicamera2  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "picamera2", module)
    FakePicamera2.instances = []
    monkeypatch.setattr(FakePicamera2, "attached", list(FakePicamera2.attached))
    yield FakePicamera2


def test_lores_stream_at_model_size(fake_picamera2: type[FakePicamera2]) -> None:
    source = open_source(SourceConfig(kind="picamera2", fps=15), MqttConfig(), input_size=(224, 224))
    assert source.name == "cam0" and source.live
    source.open()
    frame = source.read()
    source.close()
    source.close()
    camera = fake_picamera2.instances[0]
    config = camera.camera_config
    assert config is not None
    assert config["lores"]["size"] == (224, 224) and config["lores"]["format"] == "YUV420"
    assert config["main"]["format"] == "BGR888"
    assert config["controls"] == {"FrameRate": 15.0}
    assert "capture_array:lores" in camera.calls
    assert camera.calls[-2:] == ["stop", "close"] and camera.closed
    assert frame is not None and frame.rgb and frame.index == 1 and frame.source == "cam0"
    assert frame.image.shape == (224, 224, 3)
    # I420 decoded as I420: red stays red (channel 0), blue stays blue, stride padding cut off
    left, right = frame.image[100, 20], frame.image[100, 200]
    assert left[0] > 200 and left[2] < 60, left
    assert right[2] > 200 and right[0] < 60, right


def test_transforms_use_main_instead_of_lores(fake_picamera2: type[FakePicamera2]) -> None:
    config = SourceConfig(kind="picamera2", rotate=90, width=640, height=480)
    source = open_source(config, MqttConfig(), input_size=(224, 224))
    source.open()
    frame = source.read()
    source.close()
    camera = fake_picamera2.instances[0]
    assert camera.camera_config is not None
    assert camera.camera_config["lores"] is None
    assert camera.camera_config["main"] == {"format": "BGR888", "size": (640, 480)}
    assert frame is not None and frame.rgb and frame.image.shape == (480, 640, 3)
    assert frame.image[10, 10, 0] == 255  # RGB order: red in channel 0, no swap needed


def test_no_camera_attached_is_a_source_error(fake_picamera2: type[FakePicamera2]) -> None:
    fake_picamera2.attached = []
    source = Picamera2Source(name="cam0")
    with pytest.raises(SourceError, match="Pi camera 0"):
        source.open()
    source.close()


def test_capture_failure_is_a_source_error_and_closes(fake_picamera2: type[FakePicamera2]) -> None:
    source = Picamera2Source(name="cam0", lores_size=(96, 96))
    source.open()
    camera = fake_picamera2.instances[0]
    camera.started = False  # as if the camera stopped under us
    with pytest.raises(SourceError, match="capture failed"):
        source.read()
    source.close()
    assert camera.closed


def test_missing_package_is_a_clear_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    source = open_source(SourceConfig(kind="picamera2"), MqttConfig())
    with pytest.raises(ConfigError, match="needs the picamera2 package"):
        source.open()
    source.close()


def test_picamera2_uri_must_be_a_camera_number() -> None:
    with pytest.raises(ConfigError, match=r"source\.uri"):
        open_source(SourceConfig(kind="picamera2", uri="/dev/video0"), MqttConfig())


def test_auto_without_any_camera_fails_clearly_and_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    source = open_source(SourceConfig(kind="auto"), MqttConfig())
    assert source.name == "cam0"
    started = time.monotonic()
    with pytest.raises(SourceError, match=r"no camera found \(picamera2 is not installed; no /dev/video"):
        source.open()
    assert time.monotonic() - started < 2
    source.close()


def test_auto_prefers_the_pi_camera(fake_picamera2: type[FakePicamera2]) -> None:
    source = AutoSource(name="cam0", lores_size=(96, 96), devices=lambda: [],
                        has_picamera2=lambda: True)
    source.open()
    frame = source.read()
    source.close()
    assert isinstance(source, AutoSource)
    assert frame is not None and frame.image.shape == (96, 96, 3) and frame.index == 1
    assert fake_picamera2.instances[0].closed


def test_auto_falls_back_to_the_first_device_that_opens(fake_picamera2: type[FakePicamera2],
                                                        tmp_path: Any) -> None:
    fake_picamera2.attached = []  # picamera2 installed, but no Pi camera
    video = tmp_path / "video7.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    for _ in range(3):
        writer.write(np.zeros((24, 32, 3), np.uint8))
    writer.release()
    source = AutoSource(name="cam0", devices=lambda: [str(tmp_path / "video3"), str(video)],
                        has_picamera2=lambda: True)
    source.open()
    frames = [source.read(), source.read()]
    source.close()
    assert [f.index for f in frames if f] == [1, 2]
    assert all(f is not None and f.image.shape == (24, 32, 3) for f in frames)
