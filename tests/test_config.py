"""The config tree: defaults that run, types, ranges, key paths, derived values."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from edge_classifier.config import Config, parse_config
from edge_classifier.errors import ConfigError


def test_defaults_are_valid_and_frozen(tmp_path):
    config = parse_config({}, tmp_path)
    assert config.classify.top_k == 3
    assert config.mqtt.topic_prefix == f"edge-classifier/{config.device.id}"
    assert config.mqtt.client_id == f"edge-classifier-{config.device.id}"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.classify.top_k = 5  # type: ignore[misc]


def test_paths_are_relative_to_the_config_file(tmp_path):
    config = parse_config({"model": {"path": "m.tflite", "labels": "l.txt"},
                           "source": {"kind": "images", "uri": "pics"}}, tmp_path)
    assert config.model.path == str(tmp_path / "models" / "m.tflite")
    assert config.model.labels == str(tmp_path / "l.txt")
    assert config.source.uri == str(tmp_path / "pics")
    absolute = parse_config({"model": {"path": "/opt/m.tflite"}}, tmp_path)
    assert absolute.model.path == "/opt/m.tflite"
    nested = parse_config({"model": {"path": "sub/m.tflite"}}, tmp_path)
    assert Path(nested.model.path) == tmp_path / "sub" / "m.tflite"


def test_device_id_fills_the_topic_prefix(tmp_path):
    config = parse_config({"device": {"id": "pi-kitchen"}}, tmp_path)
    assert config.mqtt.topic_prefix == "edge-classifier/pi-kitchen"


@pytest.mark.parametrize(("data", "problem"), [
    ({"device": {"id": "a/b"}}, "device.id: 'a/b' is not a valid device id"),
    ({"mqtt": {"topic_prefix": "a/#"}}, "mqtt.topic_prefix: must not contain the wildcards"),
    ({"model": {"device": "usb:x"}}, "model.device: must be '', 'usb', 'usb:N', 'pci' or 'pci:N'"),
    ({"source": {"retry_initial": 10.0, "retry_max": 1.0}}, "source.retry_initial: must be <= source.retry_max"),
    ({"source": {"kind": "images"}}, "source.uri: must name a directory or glob of images"),
    ({"classify": {"allow": ["cat"], "deny": ["cat"]}}, "classify.deny: labels both allowed and denied: cat"),
    ({"classify": {"allow": ["cat", 3]}}, "classify.allow: item 1 must be a string, not an integer"),
    ({"mqtt": "localhost"}, "mqtt: must be a table ([mqtt]), not a string"),
    ({"source": {"fps": True}}, "source.fps: must be a number, not a boolean"),
])
def test_each_problem_is_named_by_key_path(tmp_path, data, problem):
    with pytest.raises(ConfigError) as caught:
        parse_config(data, tmp_path, source="cfg.toml")
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems
    assert caught.value.exit_code == 78
    assert str(caught.value).startswith("cfg.toml: ")


def test_integers_are_accepted_for_floats(tmp_path):
    assert parse_config({"source": {"fps": 5}}, tmp_path).source.fps == 5.0


def test_the_tree_is_all_dataclasses():
    assert all(dataclasses.is_dataclass(f.type) or isinstance(f.type, str) for f in dataclasses.fields(Config))


def test_several_edge_tpus(tmp_path):
    config = parse_config({"model": {"devices": ["usb:0", "usb:1", "pci:0"]}}, tmp_path)
    assert config.model.devices == ("usb:0", "usb:1", "pci:0")
    from edge_classifier.daemon.models import worker_count

    assert worker_count(config.model, "edgetpu") == 3
    for bad, problem in ((["usb:0", "usb:0"], "lists a device twice"), (["tpu"], "each must be")):
        with pytest.raises(ConfigError, match=problem):
            parse_config({"model": {"devices": bad}}, tmp_path)
