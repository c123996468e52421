"""The capture thread: latest-frame-wins for live sources, backpressure for files,
backoff and events on failure, prompt stop, and a permanent error that ends it."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import numpy as np
import pytest

from edge_classifier.errors import ConfigError, SourceError
from edge_classifier.source import Capture, Frame
from edge_classifier.source.base import stamp


class CountingSource:
    """A source producing ``limit`` frames (or endless), each image filled with its index."""

    def __init__(self, *, live: bool, limit: int | None = None, interval: float = 0.0) -> None:
        self.name = "fake"
        self.live = live
        self.limit = limit
        self.interval = interval
        self.produced = 0
        self.closes = 0

    def open(self) -> None:
        pass

    def read(self) -> Frame | None:
        if self.limit is not None and self.produced >= self.limit:
            return None
        if self.interval:
            time.sleep(self.interval)
        self.produced += 1
        return stamp(np.full((4, 4, 3), self.produced % 256, np.uint8), rgb=False, source=self.name,
                     index=self.produced)

    def close(self) -> None:
        self.closes += 1


class BlockingSource:
    """A live source whose read blocks until released, as a hung driver would."""

    name = "stuck"
    live = True

    def __init__(self) -> None:
        self.reading = threading.Event()
        self.release = threading.Event()

    def open(self) -> None:
        pass

    def read(self) -> Frame | None:
        self.reading.set()
        self.release.wait(10)
        raise SourceError("released")

    def close(self) -> None:
        pass


class FailingSource:
    """A source whose open always fails."""

    name = "down"
    live = True

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.opens = 0

    def open(self) -> None:
        self.opens += 1
        raise self.error

    def read(self) -> Frame | None:
        raise AssertionError("never opened")

    def close(self) -> None:
        pass


def test_live_latest_frame_wins_with_slow_consumer() -> None:
    source = CountingSource(live=True, interval=0.002)
    with Capture(source) as capture:
        seen = []
        for _ in range(5):
            frame = capture.get(timeout=2)
            assert frame is not None
            seen.append(frame.index)
            time.sleep(0.05)  # a deliberately slow consumer
            # never a backlog: at most the one latest frame waits
            assert len(capture._handoff) <= 1
        fresh = capture.get(timeout=2)
        assert fresh is not None
        # the frame handed over is the newest: close to what the source has produced
        assert source.produced - fresh.index <= 3
    assert capture.dropped > 10
    assert capture.frames >= capture.dropped + 5
    assert seen == sorted(seen) and len(set(seen)) == 5
    assert source.closes >= 1


def test_non_live_delivers_every_frame_in_order() -> None:
    source = CountingSource(live=False, limit=40)
    with Capture(source) as capture:
        indexes = []
        while (frame := capture.get(timeout=2)) is not None:
            indexes.append(frame.index)
            if len(indexes) % 10 == 0:
                time.sleep(0.02)  # slow down now and then: the reader must wait, not drop
                assert source.produced - len(indexes) <= 3  # backpressure: a small buffer
        assert capture.ended.is_set()
    assert indexes == list(range(1, 41))
    assert capture.dropped == 0
    assert capture.frames == 40


def test_a_capped_file_frame_is_read_when_due_so_its_stamp_is_fresh() -> None:
    # A file frame waits for its turn and is read then: stamped at the read, it reaches the
    # consumer at once, not a whole period after its stamp (ts and latency_ms.total).
    source = CountingSource(live=False, limit=6)
    stamps, lags = [], []
    with Capture(source, fps=5) as capture:
        while (frame := capture.get(timeout=5)) is not None:
            lags.append(time.monotonic() - frame.captured)
            stamps.append(frame.captured)
    assert [b - a >= 0.19 for a, b in itertools.pairwise(stamps)] == [True] * 5  # 5 fps apart
    assert max(lags) < 0.1, lags  # a period is 0.2 s


def test_stop_is_prompt_while_source_blocks() -> None:
    source = BlockingSource()
    capture = Capture(source, join_timeout=0.2).start()
    assert source.reading.wait(2)
    started = time.monotonic()
    capture.close()
    assert time.monotonic() - started < 1.0
    source.release.set()  # let the thread finish
    assert capture.ended.wait(2)
    capture.close()


def test_stop_is_prompt_while_a_file_frame_waits_for_its_turn() -> None:
    # At 0.2 fps the next file frame is due in 5 s; stop() must not wait for it.
    source = CountingSource(live=False)
    capture = Capture(source, fps=0.2).start()
    assert capture.get(timeout=5) is not None  # the first frame; the second waits its turn
    started = time.monotonic()
    capture.close()
    assert capture.ended.wait(2)
    assert time.monotonic() - started < 1.0
    assert source.produced == 1
    capture.close()  # idempotent: the stop gate is released once


def test_stop_is_prompt_while_backing_off() -> None:
    lost = threading.Event()
    source = FailingSource(SourceError("camera unplugged"))
    capture = Capture(source, retry_initial=30, retry_max=60,
                      on_event=lambda name, details: lost.set()).start()
    assert lost.wait(2)
    started = time.monotonic()
    capture.close()
    assert time.monotonic() - started < 1.0
    assert capture.ended.is_set()
    assert source.opens == 1
    assert capture.failures == 1


def test_backoff_doubles_up_to_the_cap() -> None:
    source = FailingSource(SourceError("no"))
    events: list[str] = []
    opens: list[float] = []
    original = source.open

    def timed_open() -> None:
        opens.append(time.monotonic())
        original()

    source.open = timed_open  # type: ignore[method-assign]
    with Capture(source, retry_initial=0.02, retry_max=0.08,
                 on_event=lambda name, details: events.append(name)):
        deadline = time.monotonic() + 5
        while len(opens) < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
    gaps = [b - a for a, b in itertools.pairwise(opens)][:5]
    assert len(gaps) == 5
    assert gaps[0] >= 0.015 and gaps[1] >= 0.035 and gaps[2] >= 0.07
    assert all(g < 0.5 for g in gaps)  # capped at 0.08 (plus scheduling slack)
    assert events == ["source_lost"]  # reported once per outage, not per attempt


def test_config_error_ends_capture() -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    source = FailingSource(ConfigError(["source.kind: 'picamera2' needs the picamera2 package"]))
    with Capture(source, on_event=lambda name, details: events.append((name, details))) as capture:
        assert capture.ended.wait(2)
        assert capture.get(timeout=0.1) is None
    assert isinstance(capture.error, ConfigError)
    assert events[0][0] == "source_failed" and "picamera2" in events[0][1]["reason"]
    assert source.opens == 1


def test_transforms_applied_and_last_frame_kept() -> None:
    source = CountingSource(live=False, limit=1)
    with Capture(source, rotate=90, roi=(0, 0, 2, 3)) as capture:
        frame = capture.get(timeout=2)
        assert frame is not None
        assert frame.image.shape == (3, 2, 3)
        assert capture.last_frame is frame


def test_roi_outside_the_frame_fails_capture_with_a_clear_error() -> None:
    source = CountingSource(live=False, limit=3)
    with Capture(source, roi=(10, 10, 2, 2)) as capture:
        assert capture.ended.wait(2)
    assert capture.error is not None
    assert "[10, 10, 2, 2]" in str(capture.error) and "4x4" in str(capture.error)


def test_close_is_idempotent_and_works_unstarted() -> None:
    source = CountingSource(live=True)
    capture = Capture(source)
    capture.close()
    capture.close()
    assert capture.ended.is_set()
    assert source.closes == 1
    with pytest.raises(ValueError):
        Capture(source, retry_initial=2, retry_max=1)
