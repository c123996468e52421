"""Which model set classifies a frame: routes by source name and, for an mqtt wildcard source,
by its topic filter; rerouting hands back the sets no source uses any more. Real LiteRT
classifiers on the tiny test model."""

from __future__ import annotations

import numpy as np
import pytest
from support.testdata import V1_025, model

from edge_classifier.config.schema import ClassifyConfig, ModelConfig
from edge_classifier.daemon.models import open_model_set
from edge_classifier.daemon.modelsets import ModelSets, Route
from edge_classifier.source.base import stamp


@pytest.fixture
def three():
    config = ModelConfig(path=str(model(V1_025)), accelerator="cpu", threads=1)
    sets = [open_model_set(config, ClassifyConfig()) for _ in range(3)]
    yield sets
    for models in sets:
        models.close()


def frame(source: str):
    return stamp(np.zeros((8, 8, 3), np.uint8), rgb=True, source=source, index=1)


def test_frames_go_to_their_sources_set(three):
    default, birds, doors = three
    sets = ModelSets(default, {"birds": birds, "doors": doors},
                     {"feeder": Route("birds", "cams/+/feeder"), "door": Route("doors")})
    assert sets.for_frame(frame("door")) is doors
    assert sets.for_frame(frame("cams/garden/feeder")) is birds  # a wildcard's frames report the topic
    assert sets.for_frame(frame("cams/garden/gate")) is default
    assert sets.for_frame(frame("yard")) is default
    assert sets.key_of("feeder") == "birds" and sets.key_of("yard") == ""
    assert birds.key == "birds" and doors.key == "doors" and default.key == ""


def test_reroute_returns_the_sets_left_unused_and_never_the_default(three):
    default, birds, doors = three
    sets = ModelSets(default, {"birds": birds}, {"feeder": Route("birds")})
    unused = sets.reroute({"feeder": Route("doors"), "door": Route("")}, {"doors": doors})
    assert unused == [birds]
    assert sets.for_frame(frame("feeder")) is doors and sets.for_frame(frame("door")) is default
    assert set(sets.named()) == {"doors"} and doors.key == "doors"
    assert sets.reroute({}, {}) == [doors]
    assert sets.all() == (default,)
