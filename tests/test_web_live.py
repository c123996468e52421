"""The live view's bookkeeping in process: references kept, nothing built while nobody watches,
each stream gets only what it asked for."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from edge_classifier.daemon.pipeline import Outcome
from edge_classifier.engine.interpreter import ModelInfo, TensorInfo
from edge_classifier.results import Classification, Prediction
from edge_classifier.source.base import stamp
from edge_classifier.web.live import MAX_SOURCES, LiveView

TENSOR = TensorInfo((1, 96, 96, 3), np.uint8, 1.0, 0)
INFO = ModelInfo("m", Path("m.tflite"), "0" * 64, "cpu", Path("m.tflite"), None, "test", TENSOR, TENSOR, 1)


def outcome(index: int, source: str = "cam") -> Outcome:
    frame = stamp(np.full((60, 80, 3), index % 255, np.uint8), rgb=False, source=source, index=index)
    return Outcome(index, frame, Classification((Prediction(1, "x", 0.5),), INFO, 1.0, 2.0))


def test_keeps_a_reference_and_builds_nothing_without_a_viewer(monkeypatch):
    live = LiveView("dev", 480)
    built = []
    monkeypatch.setattr(live, "payload", lambda o: built.append(o) or {})
    first = outcome(1)
    live.observe(first)
    assert live.latest("cam") is first and live.latest("cam").frame.image is first.frame.image
    assert built == []  # no viewer, no stream: no payload, no JPEG
    for i in range(MAX_SOURCES + 5):
        live.observe(outcome(1, source=f"topic/{i}"))
    assert len(live.sources()) == MAX_SOURCES  # bounded whatever an MQTT source sends


def test_an_events_only_stream_is_not_woken_by_frames_and_a_results_stream_gets_them():
    live = LiveView("dev", 480)
    events_only, results = live.subscribe(results=False), live.subscribe(results=True)
    got: list = []
    waiter = threading.Thread(target=lambda: got.append(live.next_items(events_only, 5.0)))
    waiter.start()
    for i in range(1, 4):
        live.observe(outcome(i))
    assert [item[1]["frame"] for item in live.next_items(results, 1.0)] == [1, 2, 3]
    live.event({"event": "class_learned"})
    waiter.join(5)
    assert got == [[("event", {"event": "class_learned"})]]
    live.unsubscribe(events_only)
    live.unsubscribe(results)


def test_wait_newer_returns_the_next_frame_and_preview_is_encoded_once_per_frame():
    live = LiveView("dev", 40)
    live.observe(outcome(1))
    got: list = []
    waiter = threading.Thread(target=lambda: got.append(live.wait_newer("cam", 1, 5.0)))
    waiter.start()
    second = outcome(2)
    live.observe(second)  # whether the viewer waits already or not, frame 2 is what it gets
    waiter.join(5)
    assert got == [second]
    preview = live.preview(second)
    assert preview is live.preview(second)  # one encoding for every viewer of the frame
    assert (preview.width, preview.height, preview.scale) == (40, 30, 0.5) and preview.result["frame"] == 2
    assert live.wait_newer("cam", 2, 0.05) is None
