"""The learned classes' quality figure: an estimate of held-out agreement from sum and count."""

from __future__ import annotations

import numpy as np
import pytest

from edge_classifier.learn import LearnedHead
from edge_classifier.web.quality import class_quality, held_out_cosine


def unit_rows(rng: np.random.Generator, centre: np.ndarray, spread: float, n: int) -> np.ndarray:
    rows = np.abs(centre + spread * rng.standard_normal((n, centre.size)))  # >= 0, as after ReLU6
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def exact_leave_one_out(rows: np.ndarray) -> float:
    total = rows.sum(axis=0)
    values = []
    for row in rows:
        rest = total - row
        values.append(float(row @ rest / np.linalg.norm(rest)))
    return float(np.mean(values))


@pytest.mark.parametrize(("spread", "n"), [(0.05, 5), (0.3, 10), (1.0, 20), (3.0, 3)])
def test_estimate_is_close_to_the_exact_leave_one_out_cosine(spread, n):
    rng = np.random.default_rng(7)
    rows = unit_rows(rng, rng.random(64), spread, n)
    estimate = held_out_cosine(rows.sum(axis=0), n)
    assert estimate == pytest.approx(exact_leave_one_out(rows), abs=0.02)


def test_one_example_has_no_figure_and_mixed_examples_score_low():
    rng = np.random.default_rng(3)
    a, b = rng.random(64), rng.random(64)
    head = LearnedHead(64).with_examples("tight", unit_rows(rng, a, 0.05, 6)) \
        .with_examples("one", unit_rows(rng, b, 0.05, 1)) \
        .with_examples("mixed", np.concatenate([unit_rows(rng, a * 0, 1.0, 3), unit_rows(rng, b, 0.05, 3)]))
    rows = {row["label"]: row for row in class_quality(head)}
    assert rows["one"]["held_out"] is None and rows["one"]["agrees"] is None
    assert rows["tight"]["held_out"] > 0.9 and rows["tight"]["agrees"] is True
    assert rows["mixed"]["held_out"] < rows["tight"]["held_out"]
    assert rows["tight"]["examples"] == 6 and rows["tight"]["nearest"] in ("one", "mixed")
