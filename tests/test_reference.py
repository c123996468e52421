"""The reference table of ../shared/testdata/README.md, reproduced on the real models.

Through the Python API and through the real ``edge-classifier classify`` command, with
embedded labels and with every label-file format.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict

import cv2
import pytest
from support.classifiers import opened_once
from support.testdata import REFERENCE, image, labels, model

from edge_classifier.classifier import Classifier
from edge_classifier.engine import parse_labels

TOLERANCE = 0.1  # the README: scores move by up to about 0.1 between resize methods and runtimes


def check_against_reference(top: list[tuple[int, float]], expected: list[tuple[int, float]]) -> None:
    assert top, "no predictions"
    assert top[0][0] == expected[0][0], f"top-1 is {top[0]}, expected {expected[0]}"
    scores = dict(top)
    for class_id, score in expected:
        if score >= 0.05:  # smaller reference scores may fall under top-k / ordering noise
            assert class_id in scores, f"class {class_id} ({score}) missing from {top}"
            assert scores[class_id] == pytest.approx(score, abs=TOLERANCE)


@pytest.fixture(scope="module")
def classifiers():
    with opened_once(top_k=5, threshold=0.0) as opened:
        def get(name: str) -> Classifier:
            classifier = opened(name)
            assert classifier.label_source == "embedded"
            return classifier

        yield get


@pytest.mark.parametrize(("name", "picture", "expected"), REFERENCE, ids=[f"{m}-{i}" for m, i, _ in REFERENCE])
def test_python_api_reproduces_reference(classifiers, name, picture, expected):
    classifier = classifiers(name)
    result = classifier.classify(cv2.imread(str(image(picture))))
    check_against_reference([(p.id, p.score) for p in result.top], expected)
    assert result.model.name == name
    assert result.model.accelerator == "cpu"


def test_embedded_labels_name_the_reference_classes(classifiers):
    birds = classifiers("mobilenet_v2_1.0_224_inat_bird_quant")
    assert birds.labels[964] == "background"
    assert birds.labels[659] == "Poecile atricapillus (Black-capped Chickadee)"
    assert classifiers("mobilenet_v2_1.0_224_quant").labels[286] == "Egyptian cat"


def run_classify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_classifier", "classify", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )


BY_MODEL: dict[str, list[tuple[str, list[tuple[int, float]]]]] = defaultdict(list)
for _name, _picture, _expected in REFERENCE:
    BY_MODEL[_name].append((_picture, _expected))


@pytest.mark.parametrize("name", sorted(BY_MODEL))
def test_classify_command_reproduces_reference(name, tmp_path):
    rows = BY_MODEL[name]
    pictures = [str(image(p)) for p, _ in rows]
    done = run_classify("--model", str(model(name)), "--top-k", "5", "--threshold", "0", *pictures)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["image"] for line in lines] == pictures
    for line, (_, expected) in zip(lines, rows, strict=True):
        assert set(line) == {"image", "top", "model", "latency_ms"}
        assert set(line["model"]) == {"name", "sha256", "accelerator"}
        assert line["model"]["name"] == name
        assert len(line["model"]["sha256"]) == 64
        assert set(line["latency_ms"]) == {"inference", "total"}
        assert 0 < line["latency_ms"]["inference"] <= line["latency_ms"]["total"]
        scores = [entry["score"] for entry in line["top"]]
        assert scores == sorted(scores, reverse=True)
        check_against_reference([(e["id"], e["score"]) for e in line["top"]], expected)


def test_contract_defaults_top3_threshold(tmp_path):
    """The CONTRACT's example: cat.bmp on mobilenet_v2 gives 286 then 282 at the defaults."""
    config = tmp_path / "config.toml"
    config.write_text("[classify]\ntop_k = 3\nthreshold = 0.05\n")
    done = run_classify("-c", str(config), "--model", str(model("mobilenet_v2_1.0_224_quant")), str(image("cat.bmp")))
    assert done.returncode == 0, done.stderr
    top = json.loads(done.stdout)["top"]
    assert [(e["id"], e["label"]) for e in top] == [(286, "Egyptian cat"), (282, "tabby, tabby cat")]
    assert all(e["score"] >= 0.05 for e in top)


def _write_formats(tmp_path, name):
    plain = labels(name).read_text().splitlines()
    files = {
        "plain": labels(name),
        "numbered-spaces": tmp_path / "spaces.txt",
        "numbered-colon": tmp_path / "colon.txt",
    }
    files["numbered-spaces"].write_text("".join(f"{i}  {label}\n" for i, label in enumerate(plain)))
    files["numbered-colon"].write_text("".join(f"{i}:{label}\n" for i, label in enumerate(plain)))
    return files


@pytest.mark.parametrize("fmt", ["plain", "numbered-spaces", "numbered-colon"])
def test_every_label_file_format_gives_the_reference(tmp_path, fmt):
    name = "mobilenet_v2_1.0_224_inat_bird_quant"
    path = _write_formats(tmp_path, name)[fmt]
    assert parse_labels(path.read_text())[964] == "background"
    done = run_classify("--model", str(model(name)), "--labels", str(path), str(image("bird.bmp")),
                        str(image("cat.bmp")))
    assert done.returncode == 0, done.stderr
    bird, cat = (json.loads(line) for line in done.stdout.splitlines())
    assert bird["top"][0]["id"] == 659
    assert bird["top"][0]["label"] == "Poecile atricapillus (Black-capped Chickadee)"
    assert cat["top"][0] == {"id": 964, "label": "background", "score": pytest.approx(0.824, abs=TOLERANCE)}


def test_labels_file_wins_over_embedded(tmp_path):
    custom = tmp_path / "custom.txt"
    custom.write_text("".join(f"class-{i}\n" for i in range(1001)))
    done = run_classify("--model", str(model("mobilenet_v2_1.0_224_quant")), "--labels", str(custom),
                        str(image("parrot.jpg")))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["top"][0]["label"] == "class-89"


def test_model_without_labels_reports_ids(tmp_path):
    """Stripping the appended ZIP leaves a model with no labels: the label is the id as a string."""
    data = model("mobilenet_v1_0.25_128_quant").read_bytes()
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(data[: data.rfind(b"PK\x03\x04")])
    done = run_classify("--model", str(bare), str(image("parrot.jpg")))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["top"][0] == {"id": 89, "label": "89", "score": pytest.approx(0.828, abs=0.1)}


def test_sidecar_labels_win_over_embedded_in_classify(tmp_path):
    """A `name.txt` beside the model is used, as the daemon and the model store do."""
    name = "mobilenet_v1_0.25_128_quant"
    copy = tmp_path / f"{name}.tflite"
    copy.write_bytes(model(name).read_bytes())
    (tmp_path / f"{name}.txt").write_text("".join(f"sidecar-{i}\n" for i in range(1001)))
    done = run_classify("--model", str(copy), str(image("parrot.jpg")))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["top"][0]["label"] == "sidecar-89"
