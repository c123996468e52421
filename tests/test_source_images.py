"""The image-file source: name order, loop, fps cap, unreadable and vanished files, empty dirs."""

from __future__ import annotations

import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from support.sources import read_all

from edge_classifier.config.schema import MqttConfig, SourceConfig
from edge_classifier.errors import SourceError
from edge_classifier.source import Capture, open_source
from edge_classifier.source.images import ImageSource


def write_images(directory: Path, values: list[int], suffix: str = ".png") -> None:
    """One 8x8 image per value, filled with it, named so that name order is value order."""
    directory.mkdir(parents=True, exist_ok=True)
    for n, value in enumerate(values):
        cv2.imwrite(str(directory / f"img{n:03d}{suffix}"), np.full((8, 8, 3), value, np.uint8))




def test_name_order_then_end(tmp_path: Path) -> None:
    write_images(tmp_path, [30, 10, 20])
    source = ImageSource(str(tmp_path), name="imgs")
    source.open()
    frames = read_all(source)
    source.close()
    assert [int(f.image[0, 0, 0]) for f in frames] == [30, 10, 20]  # img000, img001, img002
    assert [f.index for f in frames] == [1, 2, 3]
    assert all(f.source == "imgs" and not f.rgb and f.image.shape == (8, 8, 3) for f in frames)
    assert not source.live


def test_glob_selects_files(tmp_path: Path) -> None:
    write_images(tmp_path, [1, 2], suffix=".png")
    write_images(tmp_path / "sub", [3])
    (tmp_path / "notes.txt").write_text("x")
    source = ImageSource(str(tmp_path / "*.png"), name="g")
    source.open()
    assert len(read_all(source)) == 2
    source.close()


def test_loop_starts_over_and_keeps_counting(tmp_path: Path) -> None:
    write_images(tmp_path, [1, 2])
    source = ImageSource(str(tmp_path), name="imgs", loop=True)
    source.open()
    frames = [source.read() for _ in range(5)]
    source.close()
    assert [int(f.image[0, 0, 0]) for f in frames if f] == [1, 2, 1, 2, 1]
    assert [f.index for f in frames if f] == [1, 2, 3, 4, 5]


def test_unreadable_file_skipped_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_images(tmp_path, [1, 2, 3])
    (tmp_path / "img001.png").write_bytes(b"not an image at all")
    source = ImageSource(str(tmp_path), name="imgs")
    source.open()
    frames = read_all(source)
    source.close()
    assert [int(f.image[0, 0, 0]) for f in frames] == [1, 3]
    assert source.skipped == 1
    assert "img001.png" in caplog.text


def test_vanished_file_skipped(tmp_path: Path) -> None:
    write_images(tmp_path, [1, 2, 3])
    source = ImageSource(str(tmp_path), name="imgs")
    source.open()
    (tmp_path / "img001.png").unlink()
    assert [int(f.image[0, 0, 0]) for f in read_all(source)] == [1, 3]
    assert source.skipped == 0
    source.close()


def test_empty_directory_is_a_source_error(tmp_path: Path) -> None:
    source = ImageSource(str(tmp_path), name="imgs")
    with pytest.raises(SourceError, match=re.escape(f"no images in {tmp_path}")):
        source.open()
    source.close()
    source.close()


def test_fps_cap_is_honoured(tmp_path: Path) -> None:
    write_images(tmp_path, list(range(6)))
    config = SourceConfig(kind="images", uri=str(tmp_path), fps=20)
    with Capture.from_config(open_source(config, MqttConfig()), config) as capture:
        times = []
        while capture.get(timeout=2) is not None:
            times.append(time.monotonic())
        assert capture.ended.is_set()
    assert len(times) == 6
    # 6 frames at 20 fps span 5 periods = 0.25 s; generous bounds for a busy machine.
    assert 0.2 <= times[-1] - times[0] < 1.5


def test_default_name_is_the_directory(tmp_path: Path) -> None:
    write_images(tmp_path / "kitchen", [1])
    source = open_source(SourceConfig(kind="images", uri=str(tmp_path / "kitchen")), MqttConfig())
    assert source.name == "kitchen"
    glob_source = open_source(SourceConfig(kind="images", uri=f"{tmp_path}/kitchen/*.png"), MqttConfig())
    assert glob_source.name == "kitchen"


def test_directory_vanishing_is_lost_then_back(tmp_path: Path) -> None:
    directory = tmp_path / "imgs"
    write_images(directory, [1, 2])
    lost, back = threading.Event(), threading.Event()
    events: list[tuple[str, dict[str, Any]]] = []

    def on_event(name: str, details: dict[str, Any]) -> None:
        events.append((name, details))
        {"source_lost": lost, "source_back": back}[name].set()

    source = ImageSource(str(directory), name="imgs", loop=True)
    with Capture(source, on_event=on_event, retry_initial=0.02, retry_max=0.1) as capture:
        assert capture.get(timeout=5) is not None
        shutil.rmtree(directory)
        # Drain what is queued until the loss is reported (the handoff holds two frames).
        while not lost.wait(0.01):
            capture.get(timeout=0.01)
        assert "no images" in events[0][1]["reason"]
        write_images(directory, [7])
        assert back.wait(5)
        frame = capture.get(timeout=5)
        while frame is not None and int(frame.image[0, 0, 0]) != 7:
            frame = capture.get(timeout=5)
        assert frame is not None
        assert capture.failures >= 1
    assert [name for name, _ in events] == ["source_lost", "source_back"]
    assert events[1][1]["downtime_s"] > 0
