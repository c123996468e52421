"""The outbox's default bounds hold a stated time of results at the configured rate."""

from __future__ import annotations

import dataclasses

from edge_classifier.config.schema import Config, PublishConfig, SourceConfig
from edge_classifier.publish.bounds import ASSUMED_FPS, MIN_MESSAGES, spool_bounds


def config(fps: float = 0.0, **publish: object) -> Config:
    return dataclasses.replace(Config(), source=SourceConfig(fps=fps),
                               publish=dataclasses.replace(PublishConfig(), **publish))


def test_default_holds_ten_minutes_at_the_configured_fps() -> None:
    assert spool_bounds(config(fps=10)) == (6000, 16 * 1024 * 1024)
    assert spool_bounds(config(fps=30, spool_max_seconds=60)) == (1800, 16 * 1024 * 1024)


def test_unlimited_fps_assumes_a_camera_rate() -> None:
    assert spool_bounds(config(fps=0))[0] == 600 * ASSUMED_FPS


def test_min_interval_lowers_the_rate_but_never_below_the_floor() -> None:
    assert spool_bounds(config(fps=30, min_interval=0.5))[0] == 1200
    assert spool_bounds(config(fps=0.1))[0] == MIN_MESSAGES


def test_an_explicit_message_bound_wins() -> None:
    assert spool_bounds(config(fps=30, spool_max_messages=20, spool_max_bytes=4096)) == (20, 4096)
