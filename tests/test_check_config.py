"""``check-config``: every problem of a config in one run, by key path, exit 78."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def check(*args: str, cwd=None, env=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_classifier", "check-config", *args],
                          capture_output=True, text=True, timeout=60, check=False, cwd=cwd, env=env)


def test_reports_all_problems_at_once(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(
        """
[mqtt]
port = 70000
qos = "1"
hots = "broker"
[model]
accelerator = "tpu"
threads = 0
[source]
kind = "images"
rotate = 45
roi = [1, 2]
[classify]
threshold = -0.5
[nonsense]
"""
    )
    done = check("-c", str(config))
    assert done.returncode == 78
    lines = done.stderr.splitlines()
    assert lines[0] == f"{config}: 9 problems"
    expected = {
        "mqtt.port: must be <= 65535, not 70000",
        "mqtt.qos: must be an integer, not a string",
        "mqtt.hots: unknown key (did you mean 'host'?)",
        "model.accelerator: must be one of 'auto', 'cpu', 'edgetpu', not 'tpu'",
        "model.threads: must be >= 1, not 0",
        "source.rotate: must be one of 0, 90, 180, 270, not 45",
        "source.roi: must be empty or [x, y, width, height], not [1, 2]",
        "classify.threshold: must be >= 0, not -0.5",
        "nonsense: unknown key (known keys: device, source, model, classify, mqtt, publish, commands, "
        "homeassistant, learn, web, sources)",
    }
    assert set(lines[1:]) == expected


def test_invalid_toml_is_78_with_position(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("[mqtt\nport = 1\n")
    done = check("-c", str(config))
    assert done.returncode == 78
    assert "invalid TOML" in done.stderr
    assert "line 1" in done.stderr


def test_missing_model_file_is_reported(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[model]\npath = "gone.tflite"\n')
    done = check("-c", str(config))
    assert done.returncode == 78
    assert f"model.path: {tmp_path / 'models' / 'gone.tflite'}: model file not found" in done.stderr


def test_shipped_config_is_valid():
    done = check("-c", str(REPO / "config.toml"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{REPO / 'config.toml'}: ok"


def test_lookup_order_env_then_cwd(tmp_path):
    env_config = tmp_path / "env.toml"
    env_config.write_text("[mqtt]\nport = 0\n")
    cwd_dir = tmp_path / "cwd"
    cwd_dir.mkdir()
    (cwd_dir / "config.toml").write_text("[mqtt]\nport = -1\n")
    import os

    env = {**os.environ, "EDGE_CLASSIFIER_CONFIG": str(env_config)}
    assert "not 0" in check(cwd=cwd_dir, env=env).stderr
    env.pop("EDGE_CLASSIFIER_CONFIG")
    assert "not -1" in check(cwd=cwd_dir, env=env).stderr


def test_secret_values_are_never_printed(tmp_path):
    """A secret with a wrong type is reported by key, without echoing the value."""
    import dataclasses

    from edge_classifier.config.fields import setting

    @dataclasses.dataclass(frozen=True)
    class WithSecret:
        password: str = setting(
            "", "a secret", secret=True, check=lambda v: f"{v!r} is too short" if len(v) < 8 else None
        )

    from edge_classifier.config.loader import _build

    problems: list[str] = []
    _build(WithSecret, {"password": "hunter2"}, "mqtt.", problems)
    assert problems == ["mqtt.password: <secret> is too short"]
    assert "hunter2" not in repr(WithSecret(password="hunter2!"))


def test_shipped_config_documents_every_key():
    """config.toml names every key of the schema (with its comment), so it stays the reference."""
    import dataclasses
    import tomllib
    import typing

    from edge_classifier.config.schema import Config

    data = tomllib.loads((REPO / "config.toml").read_text())
    missing = []

    def walk(cls, table, prefix):
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            kind = hints[field.name]
            if dataclasses.is_dataclass(kind):
                walk(kind, table.get(field.name, {}), f"{prefix}{field.name}.")
            elif field.name == "sources":  # [[sources]]: [source]'s keys, shown commented out
                if "[[sources]]" not in (REPO / "config.toml").read_text():
                    missing.append("sources")
            elif field.name not in table:
                missing.append(prefix + field.name)

    walk(Config, data, "")
    assert missing == []


# --- the source as it is now: warnings, not errors (the daemon waits for it) -------------


def test_warns_about_a_source_that_does_not_exist(tmp_path):
    from support.testdata import model

    base = f'[model]\npath = "{model("mobilenet_v1_0.25_128_quant")}"\ndir = "{tmp_path}"\n[source]\n'
    for source, warning in (
        ('kind = "opencv"\nuri = "/dev/video98"', "source.uri: /dev/video98: no such device /dev/video98"),
        ('kind = "opencv"\nuri = "98"', "source.uri: 98: no such device /dev/video98"),
        (f'kind = "images"\nuri = "{tmp_path}/missing"', f"source.uri: {tmp_path}/missing: no such folder"),
        ('kind = "opencv"\nuri = "/srv/clip.mp4"', "source.uri: /srv/clip.mp4: no such video file"),
    ):
        config = tmp_path / "config.toml"
        config.write_text(base + source)
        done = check("-c", str(config))
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"{config}: ok (1 warning)"
        assert done.stderr.startswith(f"warning: {warning}"), done.stderr


def test_no_warning_for_a_source_that_is_there(tmp_path):
    from support.testdata import image, model

    folder = tmp_path / "pics"
    folder.mkdir()
    (folder / "parrot.jpg").write_bytes(image("parrot.jpg").read_bytes())
    config = tmp_path / "config.toml"
    config.write_text(f'[model]\npath = "{model("mobilenet_v1_0.25_128_quant")}"\ndir = "{tmp_path}"\n'
                      f'[source]\nkind = "images"\nuri = "{folder}"\n')
    done = check("-c", str(config))
    assert (done.returncode, done.stdout.strip(), done.stderr) == (0, f"{config}: ok", "")


EXAMPLES = sorted((REPO / "docs" / "examples").glob("*.toml"))


def test_there_is_an_example_per_common_setup():
    assert {p.stem for p in EXAMPLES} >= {"pi-camera-coral", "usb-webcam", "rtsp-camera", "mqtt-snapshots",
                                         "home-assistant"}





@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_config_examples_pass_check_config(example, tmp_path):
    from support.testdata import MODELS

    # As on a device, except that the model store is the test data (same file names).
    text = example.read_text()
    assert 'dir = "/var/lib/edge-classifier/models"' in text
    config = tmp_path / example.name
    config.write_text(text.replace("/var/lib/edge-classifier/models", str(MODELS)))
    done = check("-c", str(config))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{config}: ok"), done.stdout
    for line in done.stderr.splitlines():  # only the camera-is-not-here kind of warning
        assert line.startswith("warning: source."), line
