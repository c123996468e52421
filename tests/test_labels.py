"""Label files in both common formats, and labels embedded in the model."""

from __future__ import annotations

import pytest
from support.testdata import labels, model

from edge_classifier.engine import embedded_labels, parse_labels, read_labels
from edge_classifier.errors import InputMissingError, LabelsError


def test_plain_format_line_number_is_the_id():
    assert parse_labels("background\ncat\n\n") == ["background", "cat"]


def test_numbered_formats():
    assert parse_labels("0  background\n1  cat\n") == ["background", "cat"]
    assert parse_labels("0:background\n1: tabby, tabby cat\n") == ["background", "tabby, tabby cat"]
    assert parse_labels("0 zero\n2 two\n") == ["zero", "1", "two"]  # a missing id is its number


def test_numbered_requires_every_line_numbered():
    assert parse_labels("1 cat\ndog\n") == ["1 cat", "dog"]


def test_duplicate_id_is_an_error(tmp_path):
    path = tmp_path / "dup.txt"
    path.write_text("0 a\n0 b\n")
    with pytest.raises(LabelsError, match=r"dup.txt: class id 0 appears twice"):
        read_labels(path)


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(LabelsError, match="empty"):
        read_labels(empty)
    with pytest.raises(InputMissingError, match="not found"):
        read_labels(tmp_path / "absent.txt")


def test_embedded_labels_equal_the_shipped_files():
    name = "mobilenet_v2_1.0_224_inat_bird_quant"
    assert embedded_labels(model(name)) == read_labels(labels(name))
    assert len(embedded_labels(model("mobilenet_v2_1.0_224_quant")) or []) == 1001


def test_model_without_metadata_has_no_embedded_labels():
    assert embedded_labels(model("mobilenet_v1_1.0_224_quant_embedding_extractor")) is None
