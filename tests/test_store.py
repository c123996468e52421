"""The model store: safe names, listing, validation (in a child process), downloads, catalog, state."""

from __future__ import annotations

import hashlib
import http.server
import logging
import os
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.testdata import MODELS, TESTDATA, model

from edge_classifier.errors import ConfigError, DownloadError, InputMissingError, StoreError
from edge_classifier.store import (
    StateFile,
    fetch_url,
    list_models,
    load_catalog,
    pull,
    resolve_name,
    sandbox,
    sidecar_labels,
    state_path,
    validate_model,
)
from edge_classifier.store.catalog import parse_catalog

REPO = Path(__file__).resolve().parents[1]
V1 = "mobilenet_v1_0.25_128_quant"
V1_TPU = "mobilenet_v1_0.25_128_quant_edgetpu"
V1_050_TPU = "mobilenet_v1_0.5_160_quant_edgetpu"
BROKEN = "model_invoking_error"
SUMS = {line.split()[1]: line.split()[0] for line in (TESTDATA / "SHA256SUMS").read_text().splitlines()}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def store(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    return folder


def add(store: Path, *models: str) -> None:
    for name in models:
        shutil.copy(model(name), store / f"{name}.tflite")


# --- names ---------------------------------------------------------------------------------

def test_resolve_name_with_or_without_suffix(store):
    add(store, V1)
    assert resolve_name(store, V1) == store / f"{V1}.tflite"
    assert resolve_name(store, f"{V1}.tflite") == store / f"{V1}.tflite"
    assert resolve_name(store, "new", must_exist=False) == store / "new.tflite"


@pytest.mark.parametrize(("name", "reason"), [
    ("../x.tflite", "path traversal"),
    ("..", "path traversal"),
    ("sub/x.tflite", "path separators"),
    ("..\\x.tflite", "path traversal"),
    ("/etc/passwd", "absolute paths"),
    ("labels.txt", "not a .tflite"),
    ("model.onnx", "not a .tflite"),
    (".hidden.tflite", "hidden"),
    (".x.tflite.abc.partial", "hidden"),
    ("", "empty"),
])
def test_resolve_name_refusals_name_the_name_and_the_reason(store, name, reason):
    (store / "labels.txt").write_text("a\n")
    with pytest.raises(StoreError, match=reason) as caught:
        resolve_name(store, name, must_exist=False)
    assert repr(name) in str(caught.value)


def test_resolve_name_refuses_a_symlink_out_of_the_store(store, tmp_path):
    outside = tmp_path / "outside.tflite"
    shutil.copy(model(V1), outside)
    (store / "escape.tflite").symlink_to(outside)
    with pytest.raises(StoreError, match=r"'escape': it resolves to .*outside the store"):
        resolve_name(store, "escape")
    add(store, V1)
    (store / "alias.tflite").symlink_to(store / f"{V1}.tflite")  # inside the store: fine
    assert resolve_name(store, "alias") == store / "alias.tflite"


def test_resolve_name_missing_model(store):
    with pytest.raises(InputMissingError, match=r"no absent\.tflite in the model store"):
        resolve_name(store, "absent")


def test_sidecar_labels_and_twin_sidecar(store):
    add(store, V1, V1_TPU)
    assert sidecar_labels(store / f"{V1}.tflite") is None
    (store / f"{V1}_labels.txt").write_text("a\n")
    assert sidecar_labels(store / f"{V1}.tflite") == store / f"{V1}_labels.txt"
    assert sidecar_labels(store / f"{V1_TPU}.tflite") == store / f"{V1}_labels.txt"  # the twin's
    (store / f"{V1_TPU}.txt").write_text("b\n")
    assert sidecar_labels(store / f"{V1_TPU}.tflite") == store / f"{V1_TPU}.txt"  # its own first


# --- listing -------------------------------------------------------------------------------

def test_list_models_describes_each_file_and_lists_broken_ones(store):
    add(store, V1, V1_TPU, V1_050_TPU, BROKEN)
    (store / "corrupt.tflite").write_bytes(model(V1).read_bytes()[:4000])
    (store / "text.tflite").write_text("not a model")
    (store / ".hidden.tflite").write_bytes(model(V1).read_bytes())
    (store / "catalog.toml").write_text("")
    entries = {e.name: e for e in list_models(store, store / f"{V1}.tflite")}
    assert sorted(entries) == sorted([f"{V1}.tflite", f"{V1_TPU}.tflite", f"{V1_050_TPU}.tflite",
                                      f"{BROKEN}.tflite", "corrupt.tflite", "text.tflite"])
    cpu = entries[f"{V1}.tflite"]
    assert (cpu.active, cpu.accelerator, cpu.twin, cpu.labels, cpu.error) == (True, "cpu", True, "embedded", None)
    assert (cpu.input_shape, cpu.input_dtype, cpu.classes) == ((1, 128, 128, 3), "uint8", 1001)
    assert (cpu.size, cpu.sha256) == (model(V1).stat().st_size, SUMS[f"models/{V1}.tflite"])
    tpu = entries[f"{V1_TPU}.tflite"]
    assert (tpu.active, tpu.accelerator, tpu.twin, tpu.classes, tpu.error) == (False, "edgetpu", True, 1001, None)
    lonely = entries[f"{V1_050_TPU}.tflite"]
    assert lonely.accelerator == "edgetpu" and not lonely.twin
    assert "CPU twin mobilenet_v1_0.5_160_quant.tflite is not in the store" in lonely.error
    assert "fake-op-double" in entries[f"{BROKEN}.tflite"].error
    assert "not a valid TFLite model" in entries["corrupt.tflite"].error
    assert "no TFL3" in entries["text.tflite"].error


def test_list_models_sidecar_wins_and_mismatch_is_an_error(store):
    add(store, V1)
    (store / f"{V1}.txt").write_text("a\nb\nc\n")
    (entry,) = list_models(store, in_process=True)
    assert entry.labels == "sidecar"
    assert "3 but the model has 1001 outputs" in entry.error


# --- validation ------------------------------------------------------------------------------

def test_a_good_model_validates_in_a_child_with_a_timed_smoke_inference(store):
    add(store, V1)
    report = validate_model(store / f"{V1}.tflite", expected_sha256=SUMS[f"models/{V1}.tflite"], max_bytes=10**7)
    assert report.ok, report.problems
    assert report.isolated and report.probe_ms is not None and report.smoke_ms is not None
    assert (report.classes, report.labels, report.edgetpu) == (1001, "embedded", False)
    quick = validate_model(store / f"{V1}.tflite", in_process=True)
    assert quick.ok and not quick.isolated


def test_every_problem_is_collected(store):
    path = store / "text.tflite"
    path.write_bytes(b"hello, this is not a flatbuffer at all")
    report = validate_model(path, max_bytes=10, expected_sha256="0" * 64)
    assert not report.ok
    assert len(report.problems) == 3
    assert all(problem.startswith(str(path)) for problem in report.problems)
    text = "\n".join(report.problems)
    assert "over the limit of 10 bytes" in text and "no TFL3" in text
    assert f"expected {'0' * 64}" in text and hashlib.sha256(path.read_bytes()).hexdigest() in text


@pytest.mark.parametrize("in_process", [False, True])
def test_truncated_and_custom_op_models(store, in_process):
    truncated = store / "truncated.tflite"
    truncated.write_bytes(model(V1).read_bytes()[:100_000])
    add(store, BROKEN)
    (problem,) = validate_model(truncated, in_process=in_process).problems
    assert "truncated.tflite: not a valid TFLite model" in problem
    (problem,) = validate_model(store / f"{BROKEN}.tflite", in_process=in_process).problems
    assert "custom op 'fake-op-double'" in problem


def test_label_count_mismatch_sidecar_and_given(store, tmp_path):
    add(store, V1)
    (store / f"{V1}_labels.txt").write_text("cat\ndog\nbird\n")
    (problem,) = validate_model(store / f"{V1}.tflite", in_process=True).problems
    assert f"{V1}_labels.txt: sidecar labels file has 3 labels but the model {V1}.tflite has 1001 outputs" in problem
    given = tmp_path / "given.txt"
    given.write_text("a\nb\n")
    (problem,) = validate_model(store / f"{V1}.tflite", labels=given, in_process=True).problems
    assert "given.txt: labels file has 2 labels" in problem
    report = validate_model(store / f"{V1}.tflite", labels=MODELS / "imagenet_labels.txt", in_process=True)
    assert report.ok and report.labels == "file"


def test_edgetpu_model_with_and_without_its_twin(store):
    add(store, V1_TPU)
    (problem,) = validate_model(store / f"{V1_TPU}.tflite").problems
    assert f"{V1}.tflite is not beside it" in problem and "Edge TPU" in problem
    add(store, V1)
    report = validate_model(store / f"{V1_TPU}.tflite")
    assert report.ok and report.edgetpu and report.loaded == store / f"{V1}.tflite"
    assert any(f"its CPU twin {V1}.tflite runs" in note for note in report.notes)


def test_missing_and_directory(store):
    report = validate_model(store / "absent.tflite")
    assert report.missing and "not found" in report.problems[0]
    assert "not a regular file" in validate_model(store).problems[0]


def crash_with(monkeypatch, code: str) -> None:
    monkeypatch.setattr(sandbox, "PROBE_COMMAND", (sys.executable, "-c", code))


@pytest.mark.parametrize(("code", "signal_name"), [
    ("import os; os.abort()", "SIGABRT"),
    ("import ctypes; ctypes.string_at(0)", "SIGSEGV"),
])
def test_a_file_that_kills_the_loader_only_kills_the_child(store, monkeypatch, code, signal_name):
    add(store, V1)
    crash_with(monkeypatch, code)
    report = validate_model(store / f"{V1}.tflite")
    (problem,) = report.problems
    expected = f"the runtime crashed loading it (the probe process was killed by {signal_name})"
    assert problem == f"{store / f'{V1}.tflite'}: {expected}"


def test_a_loader_that_hangs_is_killed_after_the_timeout(store, monkeypatch):
    add(store, V1)
    crash_with(monkeypatch, "import time; time.sleep(60)")
    (problem,) = validate_model(store / f"{V1}.tflite", timeout=0.5).problems
    assert "did not finish within 0.5 s" in problem


def test_listing_goes_on_after_a_file_crashes_the_child(store, monkeypatch, tmp_path):
    add(store, V1, BROKEN)
    (store / "crash.tflite").write_bytes(model(V1).read_bytes())
    wrapper = tmp_path / "probe_wrapper.py"  # the real probe, except that "crash" files abort it
    wrapper.write_text(
        "import os, sys\n"
        "from edge_classifier.store.probe import main\n"
        "for arg in sys.argv[1:]:\n"
        "    if 'crash' in arg:\n"
        "        os.abort()\n"
        "    main([arg])\n"
    )
    monkeypatch.setattr(sandbox, "PROBE_COMMAND", (sys.executable, str(wrapper)))
    entries = {e.name: e for e in list_models(store)}
    assert "killed by SIGABRT" in entries["crash.tflite"].error
    assert entries[f"{V1}.tflite"].error is None and entries[f"{V1}.tflite"].classes == 1001
    assert "fake-op-double" in entries[f"{BROKEN}.tflite"].error


# --- catalog ---------------------------------------------------------------------------------

def test_the_repository_catalog_lists_every_model_with_its_sum():
    catalog = load_catalog(REPO / "models" / "catalog.toml")
    files = {entry.file for entry in catalog.values()}
    expected = {name.removeprefix("models/") for name in SUMS
                if name.endswith(".tflite") and "invoking_error" not in name}
    assert files == expected
    for entry in catalog.values():
        assert entry.sha256 == SUMS[f"models/{entry.file}"]
        assert entry.url == f"https://github.com/google-coral/test_data/raw/master/{entry.file}"
        if entry.labels:
            assert entry.labels_sha256 == SUMS[f"models/{entry.labels}"]
    assert catalog["mobilenet_v2_1.0_224_inat_bird_quant"].labels == "inat_bird_labels.txt"


def test_bad_catalog_entries_are_reported_by_key_path():
    data = {"models": {
        "a": {"file": "a.tflite", "url": "ftp://x/a.tflite", "sha256": "abc"},
        "b": {"file": "../b.tflite", "url": "https://x/b.tflite", "sha256": "0" * 64, "colour": "red"},
        "c": {"url": "https://x/c.tflite", "sha256": "0" * 64},
        "d": {"file": "d.tflite", "url": "https://x/d.tflite", "sha256": "0" * 64, "labels": "d.txt"},
    }, "extra": 1}
    with pytest.raises(ConfigError) as caught:
        parse_catalog(data, source="catalog.toml")
    problems = caught.value.problems
    for key in ("models.a.url", "models.a.sha256", "models.b.file", "models.b.colour", "models.c.file",
                "models.d.labels_url", "models.d.labels_sha256", "extra"):
        assert any(problem.startswith(f"{key}: ") for problem in problems), (key, problems)


# --- downloads -------------------------------------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    """/<file> from the test data; /oversize streams without a length; /drop stops halfway."""

    def do_GET(self) -> None:
        name = self.path.lstrip("/")
        try:
            if name == "oversize":
                self.send_response(200)
                self.end_headers()
                for _ in range(64):
                    self.wfile.write(b"x" * 65536)
            elif name == "drop":
                data = model(V1).read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
            elif (MODELS / name).is_file():
                data = (MODELS / name).read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            else:
                self.send_error(404)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading: that is what some tests want

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, name="test-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_fetch_from_a_local_http_server(store, server):
    path = fetch_url(f"{server}/{V1}.tflite", store, sha256=SUMS[f"models/{V1}.tflite"], max_bytes=10**7)
    assert path == store / f"{V1}.tflite" and sha(path) == SUMS[f"models/{V1}.tflite"]
    assert names(store) == [f"{V1}.tflite"]
    assert oct(path.stat().st_mode & 0o777) == oct(0o640)  # not world-readable


def test_fetch_sha_mismatch_names_both_sums_and_leaves_nothing(store, server):
    with pytest.raises(StoreError, match=f"expected {'1' * 64}, got {SUMS[f'models/{V1}.tflite']}"):
        fetch_url(f"{server}/{V1}.tflite", store, sha256="1" * 64)
    assert names(store) == []


@pytest.mark.parametrize(("path", "error", "message"), [
    ("oversize", StoreError, "more than the limit of 100000 bytes"),
    (f"{V1}.tflite", StoreError, "bytes announced, over the limit of 100000 bytes"),
    ("drop", DownloadError, "transfer cut short: 262799 of 525598 bytes"),
    ("absent.tflite", DownloadError, "HTTP 404"),
])
def test_fetch_failures_leave_nothing_behind(store, server, path, error, message):
    max_bytes = 100_000 if path != "drop" else 10**7
    with pytest.raises(error, match=message):
        fetch_url(f"{server}/{path}", store, sha256="0" * 64, max_bytes=max_bytes, timeout=5, name="x.tflite")
    assert names(store) == []


def test_fetch_refuses_other_schemes_and_unsafe_names(store):
    with pytest.raises(StoreError, match="ftp://"):
        fetch_url("ftp://example.com/x.tflite", store, sha256="0" * 64)
    with pytest.raises(StoreError, match="not a safe file name"):
        fetch_url("file:///tmp/.hidden.tflite", store, sha256="0" * 64)
    with pytest.raises(DownloadError, match="cannot download"):
        fetch_url("http://127.0.0.1:9/x.tflite", store, sha256="0" * 64, timeout=2)  # discard port: refused


def test_pull_from_a_mirror_directory_and_a_mirror_url(store, server):
    catalog = load_catalog(REPO / "models" / "catalog.toml")
    path = pull(V1, store, catalog=catalog, mirror=str(MODELS))
    assert path == store / f"{V1}.tflite" and sha(path) == SUMS[f"models/{V1}.tflite"]
    assert names(store) == [f"{V1}.tflite", f"{V1}_labels.txt"]
    assert pull(V1, store, catalog=catalog, mirror=str(MODELS)) == path  # already there: kept
    pull(V1_TPU, store, catalog=catalog, mirror=server)
    assert names(store) == [f"{V1}.tflite", f"{V1_TPU}.tflite", f"{V1}_labels.txt"]


def test_pull_refuses_a_tampered_mirror_copy_and_leaves_nothing(store, tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    data = bytearray(model(V1).read_bytes())
    data[5000] ^= 0xFF
    (mirror / f"{V1}.tflite").write_bytes(bytes(data))
    catalog = load_catalog(REPO / "models" / "catalog.toml")
    with pytest.raises(StoreError, match="sha256 mismatch"):
        pull(V1, store, catalog=catalog, mirror=str(mirror))
    assert names(store) == []
    with pytest.raises(StoreError, match="not in the catalog"):
        pull("nope", store, catalog=catalog, mirror=str(mirror))


def test_pull_keeps_a_different_existing_file_unless_forced(store):
    catalog = load_catalog(REPO / "models" / "catalog.toml")
    (store / f"{V1}.tflite").write_bytes(b"old")
    with pytest.raises(StoreError, match="--force"):
        pull(V1, store, catalog=catalog, mirror=str(MODELS))
    assert (store / f"{V1}.tflite").read_bytes() == b"old"
    pull(V1, store, catalog=catalog, mirror=str(MODELS), force=True)
    assert sha(store / f"{V1}.tflite") == SUMS[f"models/{V1}.tflite"]


# --- state -----------------------------------------------------------------------------------

def test_state_file_round_trip_is_atomic(store):
    state = StateFile(state_path(store))
    assert state.load() == {}
    assert state.active_model() is None
    state.remember_model(store / f"{V1}.tflite", "ab" * 32)
    state.save({**state.load(), "other": [1, 2]})
    assert state.load() == {"model": {"path": str(store / f"{V1}.tflite"), "sha256": "ab" * 32}, "other": [1, 2]}
    assert state.active_model() == (store / f"{V1}.tflite", "ab" * 32)
    assert names(store) == ["state.json"]  # no temporary file left behind


def test_state_is_saved_into_a_store_folder_that_does_not_exist_yet(tmp_path):
    # model.dir names a folder nothing has made yet: what the daemon remembers (the active
    # model, what Home Assistant was told) must not be lost for want of it.
    state = StateFile(tmp_path / "new" / "models" / "homeassistant.json")
    state.save({"announced": {"device_id": "cam"}})
    assert StateFile(tmp_path / "new" / "models" / "homeassistant.json").load() == {"announced": {"device_id": "cam"}}


@pytest.mark.parametrize("content", [b'{"model": {"path": "x"', b"[1, 2]", b"\xff\xfe\x00"])
def test_a_corrupt_state_file_is_an_empty_state_with_a_warning(store, caplog, content):
    state_path(store).write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="edge_classifier.store.state"):
        assert StateFile(state_path(store)).load() == {}
    assert str(state_path(store)) in caplog.text


def test_a_failed_state_save_keeps_the_old_state(store, monkeypatch):
    state = StateFile(state_path(store))
    state.save({"a": 1})

    def fail(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(StoreError, match="No space left on device"):
        state.save({"a": 2})
    assert state.load() == {"a": 1}
    assert names(store) == ["state.json"]
