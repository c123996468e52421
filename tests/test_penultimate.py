"""A classifier's penultimate tensor as its second output: the flatbuffer rewrite on the real
models, the real runtime on the result, and refusals of everything else (the store is hostile)."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest
from support.testdata import BIRDS, MODELS, V1_025, V1_050, V2, image, model
from support.variants import EXTRACTOR

from edge_classifier.classifier import Classifier, resolve_labels
from edge_classifier.engine import Engine
from edge_classifier.engine.penultimate import find_penultimate, read_model, with_embedding
from edge_classifier.errors import ModelError

# model -> (embedding size, the last layer)
CLASSIFIERS = {V2: (1280, "CONV_2D"), V1_025: (256, "CONV_2D"), V1_050: (512, "CONV_2D"),
               BIRDS: (1280, "FULLY_CONNECTED")}


@pytest.mark.parametrize("name", list(CLASSIFIERS))
def test_the_rewritten_model_gives_the_same_scores_and_the_embedding(name):
    size, layer = CLASSIFIERS[name]
    data = read_model(model(name))
    rewritten, found = with_embedding(data, name)
    assert (found.size, found.layer) == (size, layer)
    assert rewritten[: len(data)] != data and len(rewritten) <= len(data) + 3 + 12  # one offset, one vector
    plain = Engine.open(model(name), accelerator="cpu")
    both = Engine.open(model(name), accelerator="cpu", embedding=True)
    assert plain.embedding_info is None and plain.embedding() is None
    assert both.embedding_info is not None and int(np.prod(both.embedding_info.shape)) == size
    assert both.info == plain.info  # the same model as far as results and status say
    labels, origin = resolve_labels(both.info, None)
    assert origin == "embedded"  # read from the file on disk, not from the rewritten bytes
    classifier = Classifier(plain, labels)
    for picture in ("cat.bmp", "parrot.jpg"):
        tensor = classifier.prepare(cv2.imread(str(image(picture))))
        assert np.array_equal(plain.invoke(tensor), both.invoke(tensor))
        embedding = both.embedding()
        assert embedding is not None and embedding.size == size and embedding.any()
    plain.close()
    both.close()


def test_a_compiled_model_on_its_cpu_twin_gives_the_embedding():
    engine = Engine.open(MODELS / f"{V1_025}_edgetpu.tflite", accelerator="auto", embedding=True)
    assert engine.info.accelerator == "cpu" and engine.info.path == model(V1_025)  # no libedgetpu here
    assert engine.embedding_info is not None and engine.embedding_refused is None


@pytest.mark.parametrize(("path", "message"), [
    (EXTRACTOR, "not softmax/reshape over a conv or fully-connected layer"),
    (MODELS / f"{V1_025}_edgetpu.tflite", "a custom operator before the output"),
    (MODELS / "model_invoking_error.tflite", "custom operator"),
    (MODELS / "imagenet_labels.txt", "not a TFLite flatbuffer"),
])
def test_what_is_not_a_plain_classifier_is_refused_by_name(path, message):
    with pytest.raises(ModelError, match=f"{path.name}: cannot expose its penultimate layer: .*{message}"):
        find_penultimate(path.read_bytes(), str(path))


def test_the_engine_says_why_not_and_runs_the_model_as_it_is():
    engine = Engine.open(EXTRACTOR, accelerator="cpu", embedding=True)
    assert engine.embedding_info is None and engine.embedding() is None
    assert engine.embedding_refused is not None and "cannot expose its penultimate layer" in engine.embedding_refused
    assert engine.invoke(np.zeros((1, 224, 224, 3), np.uint8)).size == 1024


def _refused_or_found(data: bytes) -> None:
    """Whatever the bytes, the reader answers with a result or a ModelError, nothing else."""
    try:
        found = find_penultimate(data, "hostile.tflite")
    except ModelError as exc:
        assert str(exc).startswith("hostile.tflite: cannot expose its penultimate layer: ")
    else:
        assert found.size >= 2 and 0 <= found.outputs_field < len(data)


def test_truncated_files_are_refused(tmp_path):
    data = read_model(model(V1_025))
    for length in [0, 3, 7, 8, 12, 64, 1000]:
        with pytest.raises(ModelError, match="cannot expose its penultimate layer"):
            find_penultimate(data[:length], "hostile.tflite")
    # Cut further on, the tables the reader follows may all be there (the weights and the
    # labels' ZIP come last): then the runtime's verifier refuses the file, as without learning,
    # or (cut inside the ZIP only) the model is whole and runs.
    refused = 0
    for length in range(2000, len(data), len(data) // 23):
        _refused_or_found(data[:length])
        cut = tmp_path / "cut.tflite"
        cut.write_bytes(data[:length])
        try:
            engine = Engine.open(cut, accelerator="cpu", embedding=True)
        except ModelError as exc:
            assert "cut.tflite" in str(exc)
            refused += 1
        else:
            assert engine.invoke(np.zeros((1, 128, 128, 3), np.uint8)).size == 1001
            engine.close()
    assert refused >= 20


def test_corrupted_files_never_crash_the_reader():
    data = read_model(model(V1_025))
    rng = np.random.default_rng(15)
    # The tables and vectors the reader follows sit in the first and last parts of the file
    # (root, vtables, subgraph, operators; the weights are in between): flip bytes everywhere.
    for _ in range(400):
        corrupt = bytearray(data)
        for at in rng.integers(0, len(data), size=int(rng.integers(1, 8))):
            corrupt[int(at)] = int(rng.integers(0, 256))
        _refused_or_found(bytes(corrupt))
    for _ in range(200):  # offsets pointed at the far end or past it
        corrupt = bytearray(data)
        at = int(rng.integers(0, 4096)) & ~3
        struct.pack_into("<I", corrupt, at, int(rng.integers(len(data) - 64, 2**32 - 1)))
        _refused_or_found(bytes(corrupt))


def test_offsets_outside_the_file_name_the_problem():
    data = bytearray(read_model(model(V1_025)))
    struct.pack_into("<I", data, 0, len(data) + 100)  # the root table past the end
    with pytest.raises(ModelError, match=r"an offset points outside the file"):
        find_penultimate(bytes(data), "hostile.tflite")
