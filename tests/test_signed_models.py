"""Signed models: with model.trusted_keys pinned, every path that makes a file the running
model refuses one without a valid signature (start, command, watch, SIGHUP, URL download,
`models pull`). Real keys (cryptography's ed25519), the real daemon, a real broker."""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial

import pytest
from support.broker import Probe
from support.daemon import DaemonProcess, write_config
from support.testdata import image, model

from edge_classifier.store.signing import generate_key, sign_model, verify_model

PREFIX = "edge-classifier/signedpi"
V1 = "mobilenet_v1_0.25_128_quant"
BIRDS = "mobilenet_v2_1.0_224_inat_bird_quant"
V050 = "mobilenet_v1_0.5_160_quant"


@pytest.fixture
def keys(tmp_path):
    mine, theirs = tmp_path / "mine.pem", tmp_path / "theirs.pem"
    return (mine, generate_key(mine)), (theirs, generate_key(theirs))


@pytest.fixture
def store(tmp_path, keys):
    (mine, _), (theirs, _) = keys
    folder = tmp_path / "models"
    folder.mkdir()
    for name in (V1, BIRDS, V050):
        shutil.copy(model(name), folder / f"{name}.tflite")
    sign_model(folder / f"{V1}.tflite", mine)
    sign_model(folder / f"{V050}.tflite", theirs)  # signed, but by a key that is not pinned
    return folder


def config(tmp_path, store, port, public: str, *, path: str = f"{V1}.tflite", watch: bool = False):
    pictures = tmp_path / "pics"
    pictures.mkdir(exist_ok=True)
    shutil.copy(image("parrot.jpg"), pictures / "parrot.jpg")
    return write_config(tmp_path / "config.toml", f"""
[device]
id = "signedpi"
[source]
kind = "images"
uri = "{pictures}"
loop = true
fps = 20
[model]
path = "{path}"
dir = "{store}"
accelerator = "cpu"
watch = {"true" if watch else "false"}
file_urls = "{tmp_path / "offered"}"
trusted_keys = ["{public}"]
[mqtt]
host = "127.0.0.1"
port = {port}
[publish]
stats_interval = 0
""")


def online(probe: Probe) -> None:
    with Probe(probe.host, probe.port) as status:
        status.subscribe(f"{PREFIX}/status")
        while status.expect(f"{PREFIX}/status", timeout=30).text != "online":
            pass


def ask(probe: Probe, payload: dict) -> dict:
    return json.loads(probe.request(f"{PREFIX}/cmd/model", json.dumps(payload).encode(), timeout=60).payload)


def event_for(probe: Probe, name: str) -> dict:
    while True:
        event = json.loads(probe.expect(f"{PREFIX}/event", timeout=30).payload)
        if event["event"] in ("model_rejected", "model_swapped") and event["model"].startswith(name):
            return event


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def server(tmp_path) -> Iterator[str]:
    offered = tmp_path / "offered"
    offered.mkdir()
    handler = partial(_Quiet, directory=str(offered))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, name="test-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_every_swap_path_refuses_what_is_not_signed_by_a_pinned_key(tmp_path, broker, store, keys, server):
    (mine, public), _ = keys
    offered = tmp_path / "offered"
    path = config(tmp_path, store, broker.port, public, watch=True)
    with Probe(broker.host, broker.port) as probe:
        probe.subscribe(f"{PREFIX}/event")
        with DaemonProcess("-c", str(path), "--stdout") as daemon:
            daemon.next_result(30)
            online(probe)
            unsigned = ask(probe, {"name": BIRDS})
            other_key = ask(probe, {"name": V050})
            shutil.copy(store / f"{V1}.tflite", store / "renamed.tflite.tmp")
            shutil.copy(store / f"{V1}.tflite.sig", store / "renamed.tflite.sig")
            (store / "renamed.tflite.tmp").rename(store / "renamed.tflite")
            renamed = event_for(probe, "renamed.tflite")  # the watcher's attempt
            # URL downloads: without a signature beside it, and with one.
            shutil.copy(model(BIRDS), offered / f"{BIRDS}.tflite")
            url = f"{server}/{BIRDS}.tflite"
            no_sig = ask(probe, {"url": url, "sha256": sha(offered / f"{BIRDS}.tflite")})
            before = sha(store / f"{BIRDS}.tflite")
            sign_model(offered / f"{BIRDS}.tflite", mine)
            signed = ask(probe, {"url": url, "sha256": sha(offered / f"{BIRDS}.tflite")})
            # SIGHUP to a configuration naming an unsigned model.
            (store / "plain.tflite").write_bytes(model(V1).read_bytes())
            path.write_text(path.read_text().replace(f'path = "{V1}.tflite"', 'path = "plain.tflite"'))
            daemon.signal(signal.SIGHUP)
            reloaded = event_for(probe, "plain")
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(15) == 0
    assert unsigned["ok"] is False and f"{BIRDS}.tflite is not signed" in unsigned["error"], unsigned
    assert other_key["ok"] is False and "which is not in model.trusted_keys" in other_key["error"], other_key
    assert renamed["event"] == "model_rejected" and "signature is for the file name" in renamed["reason"], renamed
    assert no_sig["ok"] is False and "is not signed" in no_sig["error"], no_sig
    assert sha(store / f"{BIRDS}.tflite") == before  # the refused download changed nothing
    assert signed["ok"] is True and signed["model"] == BIRDS, signed
    assert verify_model(store / f"{BIRDS}.tflite", [public]) is None  # its signature came with it
    assert reloaded["event"] == "model_rejected" and "plain.tflite is not signed" in reloaded["reason"], reloaded


def test_an_unsigned_model_does_not_start(tmp_path, broker, store, keys):
    (_, public), _ = keys
    path = config(tmp_path, store, broker.port, public, path=f"{BIRDS}.tflite")
    with DaemonProcess("-c", str(path)) as daemon:
        code = daemon.wait(60)
    assert code == 65
    assert f"{BIRDS}.tflite is not signed" in daemon.log


def test_models_pull_refuses_an_unsigned_download(tmp_path, store, keys):
    (mine, public), _ = keys
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    shutil.copy(model(V050), mirror / f"{V050}.tflite")
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(f'[models."{V050}"]\nfile = "pulled.tflite"\nurl = "https://example.invalid/{V050}.tflite"\n'
                       f'sha256 = "{sha(mirror / f"{V050}.tflite")}"\n')
    (mirror / "pulled.tflite").write_bytes((mirror / f"{V050}.tflite").read_bytes())
    cfg = write_config(tmp_path / "pull.toml", f'[model]\ndir = "{store}"\ntrusted_keys = ["{public}"]\n')

    def pull() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "edge_classifier", "models", "pull", V050, "-c", str(cfg),
                               "--catalog", str(catalog), "--mirror", str(mirror)], capture_output=True, text=True,
                              timeout=120)

    refused = pull()
    assert refused.returncode == 65 and "pulled.tflite is not signed" in refused.stderr, refused.stderr
    assert not (store / "pulled.tflite").exists()
    sign_model(mirror / "pulled.tflite", mine)
    done = pull()
    assert done.returncode == 0, done.stderr
    assert verify_model(store / "pulled.tflite", [public]) is None
