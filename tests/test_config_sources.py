"""`[[sources]]`: several cameras in one file, validated up front with every problem named."""

from __future__ import annotations

import pytest

from edge_classifier.config import parse_config
from edge_classifier.config.sources import sources_of
from edge_classifier.errors import ConfigError


def test_sources_tables_are_parsed_with_paths_made_absolute(tmp_path):
    config = parse_config({"sources": [
        {"name": "door", "kind": "images", "uri": "pics", "loop": True},
        {"name": "esp32", "kind": "mqtt", "uri": "cams/+", "fps": 2},
    ]}, tmp_path)
    assert [(s.name, s.kind, s.uri) for s in config.sources] == [
        ("door", "images", str(tmp_path / "pics")), ("esp32", "mqtt", "cams/+")]
    assert config.sources[1].fps == 2.0 and config.sources[0].loop is True
    assert sources_of(config) == config.sources


def test_the_one_camera_form_stays_valid(tmp_path):
    config = parse_config({"source": {"kind": "images", "uri": "pics"}}, tmp_path)
    assert config.sources == () and sources_of(config) == (config.source,)


def test_every_problem_is_named_by_its_table(tmp_path):
    with pytest.raises(ConfigError) as caught:
        parse_config({"source": {"kind": "auto"}, "sources": [
            {"name": "a", "kind": "images", "uri": "x"},
            {"name": "a", "kind": "images", "uri": "y"},
            {"kind": "mqtt", "uri": "t"},
            {"name": "cams/door", "kind": "picamera2", "fsp": 3},
        ]}, tmp_path)
    problems = caught.value.problems
    assert "sources: give one camera as [source] or several as [[sources]], not both" in problems
    assert "sources[1].name: 'a' names two sources; names must be unique" in problems
    assert "sources[2].name: is required in [[sources]] and must not be empty" in problems
    assert any(p.startswith("sources[3].name: must be 1-64 characters without '/'") for p in problems)
    assert any(p.startswith("sources[3].fsp: unknown key (did you mean 'fps'?)") for p in problems)


def test_cross_checks_run_per_table(tmp_path):
    with pytest.raises(ConfigError) as caught:
        parse_config({"sources": [{"name": "a", "kind": "mqtt"}, {"name": "b", "width": 640}]}, tmp_path)
    assert list(caught.value.problems) == [
        "sources[0].uri: must name a topic filter when sources[0].kind = 'mqtt'",
        "sources[1].width: width and height must be set together (or both 0)"]


@pytest.mark.parametrize("value", [{"name": "a"}, [], ["x"]])
def test_sources_must_be_an_array_of_tables(tmp_path, value):
    with pytest.raises(ConfigError, match=r"sources: must "):
        parse_config({"sources": value}, tmp_path)


def test_a_sources_model_must_be_in_the_store(tmp_path):
    store = tmp_path / "models"
    store.mkdir()
    (store / "birds.tflite").write_bytes(b"x")  # only the name is checked here; the file is opened at start
    tables = [{"name": "feeder", "kind": "images", "uri": "a", "model": "birds"},
              {"name": "door", "kind": "images", "uri": "b", "model": "birds.tflite"},
              {"name": "gate", "kind": "images", "uri": "c"}]
    config = parse_config({"sources": tables, "model": {"dir": "models"}}, tmp_path)
    assert [s.model for s in config.sources] == ["birds", "birds.tflite", ""]
    bad = [*tables, {"name": "yard", "kind": "images", "uri": "d", "model": "nope"},
           {"name": "roof", "kind": "images", "uri": "e", "model": "../birds.tflite"}]
    with pytest.raises(ConfigError) as caught:
        parse_config({"sources": bad, "model": {"dir": "models"}}, tmp_path)
    problems = caught.value.problems
    assert len(problems) == 2
    assert problems[0].startswith("sources[3].model: source 'yard': ") and "nope" in problems[0]
    assert problems[1].startswith("sources[4].model: source 'roof': ") and ".." in problems[1]
    with pytest.raises(ConfigError) as caught:
        parse_config({"source": {"kind": "images", "uri": "a", "model": "birds"}, "model": {"dir": "models"}}, tmp_path)
    assert caught.value.problems[0].startswith("source.model: only [[sources]]")
