"""Postprocessing: dequantize, softmax only for non-probabilities, top-k, threshold, allow/deny."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edge_classifier.classifier import Classifier
from edge_classifier.engine.interpreter import ModelInfo, TensorInfo
from edge_classifier.postprocess import (
    LabelFilter,
    dequantize,
    is_probability,
    quantized_probability,
    score_table,
    softmax,
    to_scores,
    top_k,
)


def test_dequantize_is_scale_times_q_minus_zero_point():
    raw = np.array([0, 128, 255], np.uint8)
    np.testing.assert_allclose(dequantize(raw, 0.5, 128), [-64.0, 0.0, 63.5])
    floats = np.array([0.25, 0.75], np.float32)
    np.testing.assert_array_equal(dequantize(floats, 0.0, 0), floats)


def test_quantized_softmax_outputs_are_recognised_by_their_quantization():
    assert quantized_probability(np.uint8, 1 / 256, 0) is True
    assert quantized_probability(np.int8, 1 / 256, -128) is True
    assert quantized_probability(np.uint8, 0.1, 100) is False  # logits
    assert quantized_probability(np.float32, 0.0, 0) is None


def test_quantized_probabilities_are_not_softmaxed_even_when_they_sum_below_one():
    """Real uint8 outputs lose mass to rounding (0.78 seen): they must stay as they are."""
    raw = np.zeros(965, np.uint8)
    raw[659], raw[658] = 151, 40  # 0.59 and 0.156: sums to 0.75
    scores = to_scores(raw, 1 / 256, 0)
    assert scores[659] == pytest.approx(0.5898, abs=1e-4)


@pytest.mark.parametrize(("dtype", "zero_point"), [(np.uint8, 0), (np.int8, -128)])
def test_the_score_table_gives_exactly_what_to_scores_gives(dtype, zero_point):
    """An 8-bit softmax output's scores are one lookup of its raw bytes: every one of the 256
    values maps to the bits to_scores computes."""
    table = score_table(dtype, 1 / 256, zero_point)
    assert table is not None and table.shape == (256,) and table.dtype == np.float32
    info = np.iinfo(dtype)
    raw = np.arange(info.min, info.max + 1).astype(dtype).reshape(1, 256)
    np.testing.assert_array_equal(table[raw.reshape(-1).view(np.uint8)], to_scores(raw, 1 / 256, zero_point))


def test_no_score_table_where_a_softmax_or_a_wider_type_is_needed():
    assert score_table(np.uint8, 0.05, 100) is None  # quantized logits: a softmax over all of them
    assert score_table(np.int16, 1 / 65536, 0) is None
    assert score_table(np.float32, 0.0, 0) is None


def test_float_logits_get_a_softmax_and_float_probabilities_do_not():
    logits = np.array([2.0, 1.0, 0.1], np.float32)
    np.testing.assert_allclose(to_scores(logits, 0.0, 0), softmax(logits))
    assert softmax(logits).sum() == pytest.approx(1.0)
    probabilities = np.array([0.7, 0.2, 0.1], np.float32)
    np.testing.assert_array_equal(to_scores(probabilities, 0.0, 0), probabilities)
    assert not is_probability(np.array([0.7, 0.7], np.float32))


def test_quantized_logits_get_a_softmax():
    raw = np.array([200, 100, 0], np.uint8)
    scores = to_scores(raw, 0.05, 100)
    assert scores.sum() == pytest.approx(1.0)
    assert scores.argmax() == 0


def test_top_k_sorted_with_threshold_inclusive():
    scores = np.array([0.05, 0.5, 0.1, 0.3, 0.05], np.float32)
    assert top_k(scores, 3) == [(1, 0.5), (3, pytest.approx(0.3)), (2, pytest.approx(0.1))]
    assert [i for i, _ in top_k(scores, 5, threshold=np.float32(0.1))] == [1, 3, 2]  # >= keeps 0.1
    assert top_k(scores, 10, threshold=0.9) == []
    assert len(top_k(scores, 100)) == 5


def test_top_k_ties_at_the_k_th_place_go_to_the_lower_class_ids():
    # argpartition alone picks any of the classes tied with the k-th best.
    rng = np.random.default_rng(3)
    for _ in range(50):
        scores = rng.choice(np.array([0.0, 0.25, 0.5], np.float32), size=1001)
        expected = sorted(range(1001), key=lambda i: (-scores[i], i))[:3]
        assert [i for i, _ in top_k(scores, 3)] == expected


def test_allow_and_deny_lists_filter_before_top_k():
    labels = ["background", "cat", "dog", "car"]
    scores = np.array([0.4, 0.3, 0.2, 0.1], np.float32)
    deny = LabelFilter.build(labels, deny=["background"])
    assert [i for i, _ in top_k(scores, 2, allowed=deny)] == [1, 2]
    allow = LabelFilter.build(labels, allow=["car", "dog"])
    assert [i for i, _ in top_k(scores, 3, allowed=allow)] == [2, 3]
    both = LabelFilter.build(labels, allow=["car", "dog"], deny=["dog"])
    assert [i for i, _ in top_k(scores, 3, allowed=both)] == [3]


def test_unknown_filter_labels_are_named():
    with pytest.raises(ValueError, match="'cow'"):
        LabelFilter.build(["cat"], allow=["cow"])


def _classifier_for_output(dtype: type, zero_point: int, classes: int, **options: object) -> Classifier:
    """A Classifier over an 8-bit softmax output of ``classes`` (no interpreter: only its
    postprocessing is used)."""
    tensor = TensorInfo((1, 8, 8, 3), np.uint8, 1 / 128, 128)
    info = ModelInfo("stub", Path("stub.tflite"), "0" * 64, "cpu", Path("stub.tflite"), None, "none",
                     tensor, TensorInfo((1, classes), dtype, 1 / 256, zero_point), 1)
    engine = SimpleNamespace(info=info)
    return Classifier(engine, [f"class {i}" for i in range(classes)], **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype, zero_point", [(np.uint8, 0), (np.int8, -128)])
def test_predictions_from_raw_bytes_are_what_the_float_scores_give(dtype, zero_point):
    # predictions() picks straight from the raw bytes when a threshold leaves few classes;
    # it must give exactly pick(scores(raw)): same classes, order (ties by id) and scores.
    rng = np.random.default_rng(15)
    labels = [f"class {i}" for i in range(1001)]
    quick_used = 0
    for threshold, k, allow, deny in [(0.1, 3, (), ()), (0.01, 5, (), ()), (0.5, 1, (), ()), (0.1, 0, (), ()),
                                      (0.05, 10, (), ("class 7",)), (0.02, 3, tuple(labels[:500]), ()),
                                      (0.0, 3, (), ()), (0.001, 3, (), ())]:
        classifier = _classifier_for_output(dtype, zero_point, 1001, top_k=k, threshold=threshold,
                                            allow=allow, deny=deny)
        quick_used += classifier._quick is not None
        for case in range(60):
            raw = rng.integers(0, 3, 1001, dtype=np.uint8)  # mostly near zero, as a softmax is
            hot = rng.choice(1001, size=int(rng.integers(0, 8)), replace=False)
            raw[hot] = rng.integers(0, 256, hot.size, dtype=np.uint8)
            raw[rng.choice(hot, size=min(2, hot.size), replace=False)] = 200  # ties
            raw[7] = 255 if case % 2 else raw[7]
            output = (raw.astype(np.int16) + zero_point).astype(dtype).reshape(1, 1001)
            expected = classifier.pick(classifier.scores(output))
            assert classifier.predictions(output) == expected, (threshold, k, allow, deny, case)
    assert quick_used == 7  # every case but threshold 0 took the raw-byte path


def test_predictions_follow_a_reconfigured_threshold():
    classifier = _classifier_for_output(np.uint8, 0, 10, top_k=3, threshold=0.5)
    raw = np.array([[0, 100, 200, 0, 0, 0, 0, 0, 120, 0]], np.uint8)
    assert [p.id for p in classifier.predictions(raw)] == [2]
    classifier.reconfigure(top_k=2, threshold=0.3, allow=(), deny=("class 2",))
    assert [p.id for p in classifier.predictions(raw)] == [8, 1]
    assert classifier.predictions(raw) == classifier.pick(classifier.scores(raw))
