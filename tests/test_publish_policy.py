"""Publish modes, smoothing, telemetry readings and request parsing: the pure parts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_classifier.config import parse_config
from edge_classifier.config.runtime import apply_changes
from edge_classifier.control.requests import command_name, parse_arguments
from edge_classifier.daemon import telemetry
from edge_classifier.errors import ConfigError
from edge_classifier.postprocess.smoothing import ScoreWindow
from edge_classifier.publish.policy import PublishPolicy
from edge_classifier.results import Prediction


def top(*pairs):
    return [Prediction(i, label, score) for i, (label, score) in enumerate(pairs)]


def test_every_mode_publishes_all_but_respects_min_interval():
    policy = PublishPolicy("every", min_interval=1.0)
    decisions = [policy.decide(top(("cat", 0.9)), t) for t in (0.0, 0.5, 0.99, 1.0, 1.5, 2.2)]
    assert decisions == [True, False, False, True, False, True]
    assert policy.suppressed == 3


def test_change_mode_needs_a_new_label_leading_by_the_hysteresis():
    policy = PublishPolicy("change", hysteresis=0.1, heartbeat=0)
    assert policy.decide(top(("cat", 0.6), ("dog", 0.3)), 0)  # first result
    assert not policy.decide(top(("cat", 0.7), ("dog", 0.2)), 1)  # same label
    assert not policy.decide(top(("dog", 0.48), ("cat", 0.45)), 2)  # leads by 0.03 < 0.1
    assert policy.decide(top(("dog", 0.6), ("cat", 0.3)), 3)  # leads by 0.3
    assert not policy.decide(top(("dog", 0.9)), 4)
    assert policy.decide(top(("cat", 0.9)), 5)  # dog absent from this result: leads by 0.9


def test_change_mode_treats_an_empty_top_as_a_change_and_heartbeats():
    policy = PublishPolicy("change", heartbeat=10)
    assert policy.decide(top(("cat", 0.9)), 0)
    assert policy.decide([], 1)  # nothing above the threshold any more
    assert not policy.decide([], 5)
    assert policy.decide([], 11)  # heartbeat: 10 s without publishing
    assert not policy.decide([], 12)


def test_invalid_mode_is_named():
    with pytest.raises(ValueError, match="'sometimes'"):
        PublishPolicy("sometimes")


def test_score_window_averages_per_source_and_model():
    window = ScoreWindow(2)
    a = np.array([1.0, 0.0], np.float32)
    b = np.array([0.0, 1.0], np.float32)
    np.testing.assert_allclose(window.add(("cam", "m1"), a), [1, 0])
    np.testing.assert_allclose(window.add(("cam", "m1"), b), [0.5, 0.5])
    np.testing.assert_allclose(window.add(("cam", "m1"), b), [0, 1])  # a left the window
    np.testing.assert_allclose(window.add(("cam", "m2"), a), [1, 0])  # another model: its own window
    np.testing.assert_allclose(window.add(("cam", "m1"), np.ones(3, np.float32)), [1, 1, 1])  # shape changed


def test_percentile_nearest_rank():
    assert telemetry.percentile([], 50) is None
    assert telemetry.percentile([5.0], 95) == 5.0
    values = [float(v) for v in range(1, 101)]
    assert telemetry.percentile(values, 50) == 50.0
    assert telemetry.percentile(values, 95) == 95.0


def test_cpu_temperature_from_a_fake_thermal_tree(tmp_path):
    for index, (kind, milli) in enumerate([("acpitz", "27800"), ("x86_pkg_temp", "51000")]):
        zone = tmp_path / f"thermal_zone{index}"
        zone.mkdir()
        (zone / "type").write_text(kind + "\n")
        (zone / "temp").write_text(milli + "\n")
    assert telemetry.cpu_temperature(tmp_path) == 51.0
    assert telemetry.cpu_temperature(tmp_path / "absent") is None


def test_rss_is_read_from_proc():
    rss = telemetry.rss_mb()
    assert rss is not None and rss > 5


def test_runtime_changes_are_validated_like_the_file(tmp_path):
    config = parse_config({}, tmp_path)
    changed = apply_changes(config, {"top_k": 5, "fps": 2, "publish": {"mode": "change", "heartbeat": 30}})
    assert (changed.classify.top_k, changed.source.fps, changed.publish.mode) == (5, 2.0, "change")
    assert changed.mqtt == config.mqtt
    with pytest.raises(ConfigError) as caught:
        apply_changes(config, {"mode": "sometimes", "classify": {"top_k": 0}})
    assert set(caught.value.problems) == {
        "publish.mode: must be one of 'every', 'change', not 'sometimes'",
        "classify.top_k: must be >= 1, not 0",
    }
    with pytest.raises(ConfigError, match="no settings given"):
        apply_changes(config, {})


@pytest.mark.parametrize(("payload", "error"), [
    (b"", "empty payload: not a command"),  # how a retained command is cleared (issue 11)
    (b"   ", "empty payload: not a command"),
    (b'{"a": 1}', None),
    (b"x" * 11, "over the limit of 10"),
    (b"1" * 5 + b"e9999", "must be a JSON object"),
    (b"[" * 5000 + b"]" * 5000, "JSON"),
])
def test_parse_arguments(payload, error):
    max_payload = 10 if error and "limit" in error else 100_000
    arguments, problem = parse_arguments(payload, max_payload)
    if error is None:
        assert problem is None
        assert arguments == json.loads(payload)
    else:
        assert problem is not None and error in problem


def test_command_names_only_one_level_under_a_known_prefix():
    prefixes = ("edge-classifier/pi", "edge-classifier/all")
    assert command_name("edge-classifier/pi/cmd/status", prefixes) == "status"
    assert command_name("edge-classifier/all/cmd/pause", prefixes) == "pause"
    assert command_name("edge-classifier/pi/cmd/a/b", prefixes) is None
    assert command_name("other/cmd/status", prefixes) is None
    assert command_name("edge-classifier/pi/cmd/", prefixes) is None
