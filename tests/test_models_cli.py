"""``edge-classifier models list|validate|pull``: output, exit codes, nothing partial left behind."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from support.testdata import MODELS, model

from edge_classifier.store import StateFile, state_path

REPO = Path(__file__).resolve().parents[1]
V1 = "mobilenet_v1_0.25_128_quant"
V1_TPU = "mobilenet_v1_0.25_128_quant_edgetpu"


def models(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_classifier", "models", *args],
                          capture_output=True, text=True, timeout=120, check=False, cwd=REPO)


def errors(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in done.stderr.splitlines() if not line.startswith("INFO: Created TensorFlow Lite")]


def make_store(tmp_path: Path, *names: str) -> tuple[Path, Path]:
    store = tmp_path / "models"
    store.mkdir()
    for name in names:
        shutil.copy(model(name), store / f"{name}.tflite")
    config = tmp_path / "config.toml"
    config.write_text(f'[model]\ndir = "models"\npath = "{V1}.tflite"\n')
    return store, config


def test_list_marks_the_configured_model_then_the_remembered_one(tmp_path):
    store, config = make_store(tmp_path, V1, V1_TPU)
    (store / "bad.tflite").write_bytes(b"nope")
    done = models("list", "-c", str(config), "--json")
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in map(json.loads, done.stdout.splitlines())}
    assert rows[f"{V1}.tflite"]["active"] and not rows[f"{V1_TPU}.tflite"]["active"]
    assert rows[f"{V1_TPU}.tflite"]["accelerator"] == "edgetpu" and rows[f"{V1_TPU}.tflite"]["twin"]
    assert "no TFL3" in rows["bad.tflite"]["error"]
    StateFile(state_path(store)).remember_model(store / f"{V1_TPU}.tflite", "")
    table = models("list", "-c", str(config))
    assert table.returncode == 0, table.stderr
    active = [line for line in table.stdout.splitlines() if line.startswith("*")]
    assert len(active) == 1 and f"{V1_TPU}.tflite" in active[0] and "1x128x128x3 uint8" in active[0]


def test_validate_ok_and_every_problem_one_per_line(tmp_path):
    ok = models("validate", str(MODELS / f"{V1}.tflite"))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"{MODELS / f'{V1}.tflite'}: ok (cpu, input 1x128x128x3 uint8, 1001 classes")
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a model, and too big")
    done = models("validate", str(bad), "--sha256", "0" * 64, "--max-bytes", "5")
    assert done.returncode == 65
    lines = errors(done)
    assert len(lines) == 3 and all(line.startswith(f"edge-classifier: {bad}: ") for line in lines)
    labels = tmp_path / "three.txt"
    labels.write_text("a\nb\nc\n")
    done = models("validate", str(MODELS / f"{V1}.tflite"), "--labels", str(labels))
    assert done.returncode == 65 and "three.txt: labels file has 3 labels" in done.stderr
    assert models("validate", str(tmp_path / "absent.tflite")).returncode == 66


def test_pull_from_a_mirror_directory(tmp_path):
    store, config = make_store(tmp_path)
    catalog = str(REPO / "models" / "catalog.toml")
    done = models("pull", V1_TPU, "-c", str(config), "--catalog", catalog, "--mirror", str(MODELS))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in store.iterdir()) == [f"{V1}.tflite", f"{V1_TPU}.tflite", f"{V1}_labels.txt"]
    assert (store / f"{V1}.tflite").read_bytes() == model(V1).read_bytes()


def test_pull_refuses_a_tampered_mirror_and_leaves_nothing(tmp_path):
    store, config = make_store(tmp_path)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    data = bytearray(model(V1).read_bytes())
    data[1000] ^= 0x01
    (mirror / f"{V1}.tflite").write_bytes(bytes(data))
    catalog = str(REPO / "models" / "catalog.toml")
    done = models("pull", V1, "-c", str(config), "--catalog", catalog, "--mirror", str(mirror))
    assert done.returncode == 65
    (line,) = errors(done)
    assert "sha256 mismatch: expected cb273c23" in line
    assert list(store.iterdir()) == []
    done = models("pull", "nope", "-c", str(config), "--catalog", catalog)
    assert done.returncode == 65 and "not in the catalog" in done.stderr
