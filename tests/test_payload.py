"""The result payload's fast encoder writes exactly what json.dumps of the dicts writes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_classifier.engine.interpreter import ModelInfo, TensorInfo
from edge_classifier.publish.payload import encode, encode_result, result_payload
from edge_classifier.results import Classification, Prediction, iso_timestamp
from edge_classifier.source.base import Frame

TENSOR = TensorInfo(shape=(1, 4), dtype=np.uint8, scale=1 / 256, zero_point=0)


def model(name: str = "mobilenet_v2_1.0_224_quant", accelerator: str = "cpu") -> ModelInfo:
    return ModelInfo(name, Path("m.tflite"), "ab" * 32, accelerator, Path("m.tflite"), None, "test", TENSOR, TENSOR, 1)


def frame(source: str = "cam0", index: int = 1234, timestamp: float = 1_700_000_000.123) -> Frame:
    return Frame(image=np.zeros((2, 2, 3), np.uint8), rgb=True, source=source, index=index, captured=10.0,
                 timestamp=timestamp)


def both(device: str, shot: Frame, result: Classification, now: float) -> tuple[bytes, bytes]:
    return encode_result(device, shot, result, now), encode(result_payload(device, shot, result, now))


def test_a_typical_result_is_byte_identical_and_valid_json() -> None:
    top = (Prediction(286, "Egyptian cat", 0.84), Prediction(282, "tabby, tabby cat", 0.094),
           Prediction(None, "my \"mug\" ☕", 0.5, learned=True))
    fast, slow = both("pi-kitchen", frame(), Classification(top, model(), 3.2, 5.0), 10.005)
    assert fast == slow
    body = json.loads(fast)
    assert body["top"][2] == {"id": None, "label": 'my "mug" ☕', "score": 0.5, "learned": True}
    assert body["latency_ms"] == {"inference": 3.2, "total": 5.0}
    assert body["model"]["accelerator"] == "cpu"


def test_the_model_object_follows_a_swap() -> None:
    shot = frame()
    for accelerator in ("cpu", "edgetpu", "cpu"):
        fast, slow = both("d", shot, Classification((), model(accelerator=accelerator), 1.0, 1.0), 10.0)
        assert fast == slow
        assert json.loads(fast)["model"]["accelerator"] == accelerator


def test_a_score_json_cannot_write_plainly_takes_the_slow_path() -> None:
    top = (Prediction(1, "x", float("nan")), Prediction(2, "y", 1))
    fast, slow = both("d", frame(), Classification(top, model(), float("inf"), 0.0), 10.0)
    assert fast == slow
    assert b"NaN" in fast and b"Infinity" in fast


def test_timestamps_across_seconds_match_strftime() -> None:
    for seconds in (1_700_000_000.999, 1_700_000_001.0, 1_700_000_000.5, 0.001, 1_799_999_999.25):
        whole = int(seconds)
        expected = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((seconds - whole) * 1000):03d}Z"
        assert iso_timestamp(seconds) == expected


labels = st.text(st.characters(codec="utf-8"), max_size=20)
scores = st.floats(min_value=0.0, max_value=1.0) | st.floats(allow_nan=True, allow_infinity=True)


@settings(max_examples=300, deadline=None)
@given(device=labels, source=labels, index=st.integers(1, 2**40), wall=st.floats(0, 4e9),
       top=st.lists(st.tuples(st.none() | st.integers(0, 2000), labels, scores, st.booleans()), max_size=5),
       inference=st.floats(0, 1e4), captured=st.floats(-1e3, 1e3), name=labels)
def test_any_result_is_byte_identical(device: str, source: str, index: int, wall: float, top: list, inference: float,
                                      captured: float, name: str) -> None:
    predictions = tuple(Prediction(i, label, score, learned) for i, label, score, learned in top)
    shot = Frame(np.zeros((1, 1, 3), np.uint8), True, source, index, captured, wall)
    fast, slow = both(device, shot, Classification(predictions, model(name), inference, 0.0), 12.5)
    assert fast == slow
