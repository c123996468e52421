"""The outbox's bounds: sized by time at the configured rate, within a byte cap.

A bound in messages means nothing to a user; "ten minutes of results" does. So unless
``publish.spool_max_messages`` is set, the outbox holds ``publish.spool_max_seconds`` of
results at the rate the configuration allows (``source.fps``, lowered by
``publish.min_interval``), and never more than ``publish.spool_max_bytes``. With
``source.fps = 0`` (as fast as the pipeline goes) the rate is not known up front:
:data:`ASSUMED_FPS`, a camera's usual rate, stands in.
"""

from __future__ import annotations

import math

from edge_classifier.config.schema import Config

__all__ = ["ASSUMED_FPS", "MIN_MESSAGES", "spool_bounds"]

ASSUMED_FPS = 30.0
MIN_MESSAGES = 1000  # room for events and a burst even at a slow rate


def results_per_second(config: Config) -> float:
    """The most results per second the configuration lets through."""
    rate = config.source.fps if config.source.fps > 0 else ASSUMED_FPS
    if config.publish.min_interval > 0:
        rate = min(rate, 1.0 / config.publish.min_interval)
    return rate


def spool_bounds(config: Config) -> tuple[int, int]:
    """(max_messages, max_bytes) for the outbox or the disk spool."""
    publish = config.publish
    if publish.spool_max_messages > 0:
        return publish.spool_max_messages, publish.spool_max_bytes
    messages = max(MIN_MESSAGES, math.ceil(publish.spool_max_seconds * results_per_second(config)))
    return messages, publish.spool_max_bytes
