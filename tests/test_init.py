"""``edge-classifier init``: a config that runs on this device, checked by the daemon's loader."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from support.testdata import MODELS

from edge_classifier.cli.init import detect_source, source_from_flag
from edge_classifier.config import load_config
from edge_classifier.errors import ConfigError
from edge_classifier.source.auto import V4L2Device, capture_devices


def init(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_classifier", "init", *args], capture_output=True,
                          text=True, timeout=60, check=False, cwd=cwd)


def test_writes_absolute_paths_that_load_from_anywhere(tmp_path: Path) -> None:
    output = tmp_path / "etc" / "config.toml"
    done = init("-o", str(output), "--models-dir", str(MODELS), "--mqtt-host", "broker.lan",
                "--model", "mobilenet_v1_0.25_128_quant.tflite", "--source", "/dev/video7", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "source opencv /dev/video7" in done.stdout
    data = tomllib.loads(output.read_text())
    assert data["source"] == {"kind": "opencv", "uri": "/dev/video7", "fps": 5.0}
    assert data["model"]["path"] == str(MODELS / "mobilenet_v1_0.25_128_quant.tflite")
    assert data["model"]["dir"] == str(MODELS)
    assert data["mqtt"] == {"host": "broker.lan", "port": 1883}
    assert oct(output.stat().st_mode & 0o777) == "0o640"
    # Loaded from another folder, nothing resolves against /etc: the paths are absolute.
    config, _ = load_config(str(output))
    assert config.model.path == str(MODELS / "mobilenet_v1_0.25_128_quant.tflite")
    # A second init keeps the file; --force replaces it.
    again = init("-o", str(output), "--models-dir", str(MODELS), cwd=tmp_path)
    assert again.returncode == 78
    assert again.stderr.strip() == f"edge-classifier: {output}: exists; keeping it (--force replaces it)"
    forced = init("-o", str(output), "--models-dir", str(MODELS), "--force", "--source", "mqtt:esp32/+/jpeg")
    assert forced.returncode == 0, forced.stderr
    assert tomllib.loads(output.read_text())["source"]["kind"] == "mqtt"


def test_without_a_camera_the_config_waits_with_auto(tmp_path: Path) -> None:
    choice = detect_source(picamera2_cameras=lambda: 0, v4l2=lambda: [])
    assert choice.kind == "auto"
    assert "no camera found" in choice.note
    done = init("-o", "-", "--models-dir", str(MODELS), "--source", "auto")
    assert done.returncode == 0, done.stderr
    assert 'kind = "auto"' in done.stdout


def test_detection_order_picamera2_then_v4l2() -> None:
    webcam = V4L2Device("/dev/video2", "uvcvideo", "HD Webcam", capture=True)
    assert detect_source(picamera2_cameras=lambda: 1, v4l2=lambda: [webcam]).kind == "picamera2"
    chosen = detect_source(picamera2_cameras=lambda: 0, v4l2=lambda: [webcam])
    assert (chosen.kind, chosen.uri) == ("opencv", "/dev/video2")
    assert "HD Webcam" in chosen.note


def test_capture_devices_skips_codecs_metadata_and_raw_pi_sensors(tmp_path: Path) -> None:
    for n in (0, 1, 10, 11, 2):
        (tmp_path / f"video{n}").touch()
    described = {
        "video0": V4L2Device("", "unicam", "unicam", capture=True),  # the Pi camera's raw Bayer node
        "video1": V4L2Device("", "uvcvideo", "HD Webcam", capture=False),  # the webcam's metadata node
        "video2": V4L2Device("", "uvcvideo", "HD Webcam", capture=True),
        "video10": V4L2Device("", "bcm2835-codec", "decode", capture=False),
        "video11": None,  # cannot be opened
    }
    found = capture_devices(str(tmp_path / "video*"), query=lambda path: described[Path(path).name])
    assert [device.card for device in found] == ["HD Webcam"]


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="needs /dev/null")
def test_query_v4l2_on_a_node_that_is_not_v4l2() -> None:
    from edge_classifier.source.auto import query_v4l2

    assert query_v4l2("/dev/null") is None  # ENOTTY: not a camera
    assert query_v4l2("/dev/video-does-not-exist") is None


def test_bad_flags_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--source: /nowhere/x: no such file"):
        source_from_flag("/nowhere/x")
    with pytest.raises(ConfigError, match="mqtt: needs a topic filter"):
        source_from_flag("mqtt:")
    done = init("-o", "-", "--models-dir", str(MODELS), "--model", "nope.tflite")
    assert done.returncode == 78
    assert "--model: nope.tflite: model file not found" in done.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    done = init("-o", "-", "--models-dir", str(empty))
    assert done.returncode == 78
    assert "no .tflite model there" in done.stderr


def test_picamera2_counts_pi_cameras_not_usb_webcams(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    from edge_classifier.cli.init import _picamera2_cameras

    # Shaped like Picamera2.global_camera_info() on a Pi 5: a CSI camera and a UVC webcam.
    csi = {"Model": "imx708", "Location": 2, "Rotation": 180, "Num": 0,
           "Id": "/base/axi/pcie@120000/rp1/i2c@88000/imx708@1a"}
    uvc = {"Model": "HD Pro Webcam C920", "Location": 2, "Rotation": 0, "Num": 1,
           "Id": "/base/axi/pcie@120000/rp1/usb@200000-1:1.0-046d:082d"}
    attached: list[dict[str, object]] = [csi, uvc]

    class Picamera2:
        @staticmethod
        def global_camera_info() -> list[dict[str, object]]:
            return list(attached)

    module = types.ModuleType("picamera2")
    module.Picamera2 = Picamera2  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "picamera2", module)
    assert _picamera2_cameras() == 1
    attached.remove(csi)
    assert _picamera2_cameras() == 0  # only the webcam: V4L2 takes it
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import fails (absent, or numpy ABI)
    assert _picamera2_cameras() == 0
