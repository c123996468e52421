"""Few-shot learning by weight imprinting, on the real extractor model and the shared images."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from support.testdata import REPO, V1_025, V2, image, model
from support.variants import CLASSES, EXTRACTOR, variants

from edge_classifier.config.loader import parse_config
from edge_classifier.config.schema import LearnConfig, ModelConfig
from edge_classifier.errors import InputMissingError, LearnError, ModelError
from edge_classifier.learn import (
    Embedder,
    ExtractorId,
    LearnedHead,
    export_head,
    import_head,
    load_head,
    open_embedder,
    read_head,
    save_head,
)


@pytest.fixture(scope="module")
def embedder():
    with Embedder.open(EXTRACTOR) as opened:
        yield opened


@pytest.fixture(scope="module")
def extractor(embedder) -> ExtractorId:
    return ExtractorId.of(embedder.info, embedder.size)


@pytest.fixture(scope="module")
def examples(embedder) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(1234)
    return {label: [embedder.embed(v) for v in variants(label, 5, rng)] for label in CLASSES}


@pytest.fixture(scope="module")
def held_out(embedder) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(98765)  # other crops, flips and brightness than the examples
    return {label: [embedder.embed(v) for v in variants(label, 12, rng)] for label in CLASSES}


@pytest.fixture(scope="module")
def head(examples, extractor) -> LearnedHead:
    learned = LearnedHead(extractor.size)
    for label, embeddings in examples.items():
        learned = learned.with_examples(label, embeddings)
    return learned


def test_embeddings_are_normalised_and_rgb_flag_matches(embedder):
    bgr = cv2.imread(str(image("cat.bmp")))
    vector = embedder.embed(bgr)
    assert vector.dtype == np.float32 and vector.shape == (1024,)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    assert np.all(vector >= 0)  # after ReLU6: why cosines lie in [0, 1]
    assert np.allclose(embedder.embed(bgr[:, :, ::-1].copy(), rgb=True), vector)


def check_held_out(head: LearnedHead, held_out: dict[str, list[np.ndarray]], embedder: Embedder) -> float:
    """At least 90% of the held-out variants top-1, unrelated pictures under the threshold with
    a margin; returns the top-1 rate."""
    total = correct = 0
    worst_own = 1.0
    for label, embeddings in held_out.items():
        for embedding in embeddings:
            best = head.best(embedding)
            total += 1
            correct += best is not None and best[0] == label
            worst_own = min(worst_own, dict(head.score(embedding))[label])
    assert correct / total >= 0.9, f"top-1 {correct}/{total}"
    rng = np.random.default_rng(7)
    gradient = np.dstack([np.tile(np.linspace(0, 255, 224).astype(np.uint8), (224, 1))] * 3)
    unrelated = {
        "grace_hopper": cv2.imread(str(image("grace_hopper.bmp"))),
        "noise": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
        "gradient": gradient,
    }
    for name, picture in unrelated.items():
        embedding = embedder.embed(picture)
        assert head.best(embedding) is None, (name, head.score(embedding))
        assert head.score(embedding)[0][1] < head.threshold - 0.2 < worst_own, name
    return correct / total


def test_held_out_variants_classified_and_unrelated_unknown(head, held_out, embedder):
    assert check_held_out(head, held_out, embedder) == 1.0  # 36/36 with the extractor


@pytest.mark.parametrize("name", [V2, V1_025])
def test_held_out_with_the_models_own_penultimate_layer(name):
    # learn.extractor = "model": the same examples and held-out variants, embedded by the
    # classifier's penultimate tensor (one invoke gives it with the scores).
    with Embedder.open(model(name), from_model=True) as own:
        assert own.from_model and own.size == {V2: 1280, V1_025: 256}[name]
        examples = {label: [own.embed(v) for v in variants(label, 5, np.random.default_rng(1234))]
                    for label in CLASSES}
        held_out = {label: [own.embed(v) for v in variants(label, 12, np.random.default_rng(98765))]
                    for label in CLASSES}
        learned = LearnedHead(own.size)
        for label, embeddings in examples.items():
            learned = learned.with_examples(label, embeddings)
        assert check_held_out(learned, held_out, own) == 1.0  # as with the extractor


def test_a_head_from_the_extractor_is_refused_by_the_model_with_what_to_do(tmp_path, head, extractor):
    path = tmp_path / "head.json"
    save_head(path, head, extractor)
    with Embedder.open(model(V2), from_model=True) as own:
        made_by_model = ExtractorId.of(own.info, own.size)
    with pytest.raises(LearnError, match=r"1024 values from mobilenet_v1_1.0_224_quant_embedding_extractor, "
                                         r"but mobilenet_v2_1.0_224_quant makes 1280; .*learn.extractor set "
                                         r"back to what made them"):
        load_head(path, made_by_model)
    assert len(load_head(path, extractor)) == len(head)  # with the extractor configured, it works as before


def test_the_model_source_refuses_what_has_no_penultimate_layer():
    with pytest.raises(ModelError, match=r"learn.extractor = 'model': .*embedding_extractor.tflite: cannot expose "
                                         r"its penultimate layer.*set learn.extractor to an embedding extractor"):
        Embedder.open(EXTRACTOR, from_model=True)


def test_an_extractor_with_an_edgetpu_twin_falls_back_to_the_cpu_through_the_real_delegate(tmp_path):
    # The _edgetpu twin beside the extractor is tried first; libedgetpu is not installed here,
    # so load_delegate raises the real OSError and the CPU file runs (both links, not copies).
    (tmp_path / EXTRACTOR.name).symlink_to(EXTRACTOR)
    twin = tmp_path / EXTRACTOR.name.replace(".tflite", "_edgetpu.tflite")
    twin.symlink_to(model(V1_025).with_name(f"{V1_025}_edgetpu.tflite"))
    learn = LearnConfig(extractor=str(tmp_path / EXTRACTOR.name))
    with open_embedder(learn, ModelConfig(accelerator="auto")) as embedder:
        assert embedder.info.accelerator == "cpu" and not embedder.from_model
        assert embedder.info.path == tmp_path / EXTRACTOR.name
        assert embedder.info.fallback is not None and "libedgetpu" in embedder.info.fallback
        assert embedder.size == 1024
    with open_embedder(learn, ModelConfig(accelerator="cpu")) as embedder:
        assert embedder.info.fallback is None  # not even tried


def test_scores_sorted_and_calibrated(head, held_out):
    scores = head.score(held_out["bird"][0])
    assert scores[0][0] == "bird"
    assert [s for _, s in scores] == sorted((s for _, s in scores), reverse=True)
    assert all(0.0 <= s <= 1.0 for _, s in scores)


def test_per_class_threshold(head, held_out, examples):
    embedding = held_out["cat"][0]
    assert head.best(embedding) is not None
    strict = head.with_examples("cat", examples["cat"][:1], threshold=1.0)
    assert strict.threshold_of("cat") == 1.0 and strict.threshold_of("bird") == 0.5
    assert strict.best(embedding) is None or strict.best(embedding)[0] != "cat"
    assert strict.with_examples("cat", examples["cat"][1:2]).threshold_of("cat") == 1.0  # kept
    with pytest.raises(LearnError, match="no examples"):
        head.with_examples("cat", [])


def test_two_batches_equal_one(examples, extractor):
    cats = examples["cat"]
    once = LearnedHead(extractor.size).with_examples("cat", cats)
    twice = LearnedHead(extractor.size).with_examples("cat", cats[:2]).with_examples("cat", cats[2:])
    assert once.entries["cat"].count == twice.entries["cat"].count == 5
    assert np.allclose(once.entries["cat"].total, twice.entries["cat"].total)
    assert np.allclose(once.entries["cat"].mean, twice.entries["cat"].mean)


def test_max_examples_keeps_a_moving_average(examples, extractor):
    capped = LearnedHead(extractor.size, max_examples=3).with_examples("cat", examples["cat"])
    assert capped.entries["cat"].count == 3
    assert np.linalg.norm(capped.entries["cat"].total) <= 3.0 + 1e-9


def test_forget_and_classes(head):
    assert head.classes() == [("bird", 5), ("cat", 5), ("flower", 5)]
    smaller = head.without("bird")
    assert smaller.classes() == [("cat", 5), ("flower", 5)]
    assert head.classes() == [("bird", 5), ("cat", 5), ("flower", 5)]  # the old head is unchanged
    with pytest.raises(LearnError, match="no learned class 'dog'"):
        head.without("dog")
    with pytest.raises(LearnError, match="invalid label"):
        head.with_examples(" cat", [np.ones(head.size)])


def test_save_load_round_trip(tmp_path, head, extractor, held_out):
    path = tmp_path / "head.json"
    save_head(path, head, extractor)
    loaded = load_head(path, extractor)
    assert loaded.classes() == head.classes()
    for embedding in held_out["flower"][:3]:
        assert [label for label, _ in loaded.score(embedding)] == [label for label, _ in head.score(embedding)]
        assert np.allclose([s for _, s in loaded.score(embedding)], [s for _, s in head.score(embedding)], atol=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == ["head.json"]  # no temporary left behind


def test_export_and_import_merge_or_replace(tmp_path, head, extractor):
    path, copy = tmp_path / "head.json", tmp_path / "exported.json"
    save_head(path, head, extractor)
    export_head(path, copy)
    merged = import_head(copy, path, extractor)
    assert merged.classes() == [("bird", 10), ("cat", 10), ("flower", 10)]
    save_head(copy, head.without("cat").without("flower"), extractor)
    replaced = import_head(copy, path, extractor, replace=True)
    assert replaced.classes() == [("bird", 5)]
    assert load_head(path, extractor).classes() == [("bird", 5)]


def _corrupt(document: dict, how: str) -> str:
    if how == "version":
        document["version"] = 2
    elif how == "size":
        document["embedding_size"] = 512
    elif how == "sha":
        document["extractor"]["sha256"] = "0" * 64
    elif how == "vector":
        document["classes"][0]["sum"] = base64.b64encode(b"\0" * 16).decode()
    text = json.dumps(document)
    if how == "truncated":
        text = text[: len(text) // 2]
    if how == "corrupt":
        text = "\x00garbage" + text
    return text


@pytest.mark.parametrize(("how", "message"), [
    ("version", "unsupported learned head format version 2"),
    ("size", "512"),
    ("sha", "must be taught again"),
    ("vector", "4 values, but embedding_size is 1024"),
    ("truncated", "corrupt or truncated JSON"),
    ("corrupt", "corrupt or truncated JSON"),
])
def test_file_validation_names_the_file(tmp_path, head, extractor, how, message):
    path = tmp_path / "head.json"
    save_head(path, head, extractor)
    path.write_text(_corrupt(json.loads(path.read_text()), how))
    with pytest.raises(LearnError, match=message) as caught:
        load_head(path, extractor)
    assert str(caught.value).startswith(f"{path}: ")
    assert caught.value.exit_code == 65


def test_missing_file_is_input_missing(tmp_path):
    with pytest.raises(InputMissingError, match="learned head file not found"):
        read_head(tmp_path / "nope.json")


def test_config_resolves_learn_paths_like_model_path(tmp_path):
    config = parse_config({"model": {"dir": "store"}, "learn": {"head": "sub/h.json"}}, base_dir=tmp_path)
    assert config.learn.extractor == "model"  # the default: the classifier's own penultimate layer
    named = parse_config({"model": {"dir": "store"}, "learn": {"extractor": "x_embedding_extractor.tflite"}},
                         base_dir=tmp_path)
    assert named.learn.extractor == str(tmp_path / "store" / "x_embedding_extractor.tflite")
    assert config.learn.head == str(tmp_path / "sub" / "h.json")
    assert config.learn.enabled is False and config.learn.threshold == 0.5


def _learn(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_classifier", "learn", *args, "-c", str(config)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


def test_cli_add_list_forget_export_import(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(f'[model]\ndir = "store"\n[learn]\nextractor = "{EXTRACTOR}"\n')
    head_file = tmp_path / "store" / "learned_head.json"

    done = _learn(config, "add", "cat", str(image("cat.bmp")), str(image("cat_720p.jpg")))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"label": "cat", "added": 2, "count": 2, "classes": {"cat": 2},
                                       "head": str(head_file)}
    assert _learn(config, "add", "bird", str(image("bird.bmp")), "--threshold", "0.6").returncode == 0

    listed = json.loads(_learn(config, "list").stdout)
    assert listed["classes"] == [{"label": "bird", "count": 1, "threshold": 0.6},
                                 {"label": "cat", "count": 2, "threshold": 0.5}]

    exported = tmp_path / "exported.json"
    assert _learn(config, "export", str(exported)).returncode == 0
    done = _learn(config, "forget", "cat")
    assert done.returncode == 0 and json.loads(done.stdout)["classes"] == {"bird": 1}
    done = _learn(config, "import", str(exported))
    assert done.returncode == 0 and json.loads(done.stdout)["classes"] == {"bird": 2, "cat": 2}
    done = _learn(config, "import", str(exported), "--replace")
    assert json.loads(done.stdout)["classes"] == {"bird": 1, "cat": 2}

    missing = _learn(config, "add", "dog", str(tmp_path / "nope.jpg"))
    assert missing.returncode == 66 and "nope.jpg" in missing.stderr
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    unreadable = _learn(config, "add", "dog", str(tmp_path / "bad.jpg"))
    assert unreadable.returncode == 65 and "bad.jpg" in unreadable.stderr
    unknown = _learn(config, "forget", "dog")
    assert unknown.returncode == 65 and "no learned class 'dog'" in unknown.stderr
    (tmp_path / "broken.json").write_text("{")
    broken = _learn(config, "import", str(tmp_path / "broken.json"))
    assert broken.returncode == 65 and "broken.json" in broken.stderr
    assert json.loads(_learn(config, "list").stdout)["classes"][1] == {"label": "cat", "count": 2, "threshold": 0.5}
