"""The teardown, in reverse order of the startup and with a time limit: stop taking frames,
finish the frames in flight, deliver what is queued, say ``offline``.

Main thread. A second SIGTERM/SIGINT meanwhile forces the exit at once.
"""

from __future__ import annotations

import logging
import os
import signal
import time

from edge_classifier.daemon.pipeline import Pipeline
from edge_classifier.daemon.signals import ControlQueue
from edge_classifier.publish.connection import MqttConnection
from edge_classifier.publish.publisher import Publisher

__all__ = ["STOP_TIMEOUT", "shut_down"]

log = logging.getLogger(__name__)

STOP_TIMEOUT = 5.0  # SIGTERM to exit, at most


def shut_down(control: ControlQueue, pipeline: Pipeline | None, publisher: Publisher | None,
              connection: MqttConnection | None) -> None:
    """Stop within STOP_TIMEOUT: finish in-flight frames, deliver, say offline."""
    deadline = time.monotonic() + STOP_TIMEOUT - 0.5
    if pipeline is not None:
        pipeline.stop()
        pipeline.capture.stop()
        while not pipeline.join(0.05):
            if control.get(0) in (signal.SIGTERM, signal.SIGINT):
                _force_exit()
            if time.monotonic() > deadline - 2.0:
                log.warning("shutdown: frames still in flight after the time limit")
                break
        pipeline.capture.close()
    if publisher is not None:
        publisher.close(timeout=max(0.1, deadline - time.monotonic() - 1.0))
    if connection is not None:
        connection.close(timeout=max(0.1, deadline - time.monotonic()))


def _force_exit() -> None:
    log.warning("second signal: exiting now")
    logging.shutdown()
    os._exit(1)
