"""The teardown, in reverse order of the startup and with a time limit: stop taking frames,
finish the frames in flight, deliver what is queued, say ``offline``.

Main thread. A second SIGTERM/SIGINT meanwhile forces the exit at once.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

from edge_classifier.daemon.pipeline import Pipeline
from edge_classifier.daemon.signals import ControlQueue
from edge_classifier.publish.connection import MqttConnection
from edge_classifier.publish.publisher import Publisher

__all__ = ["SETTLE_TIMEOUT", "STOP_TIMEOUT", "settle_threads", "shut_down"]

log = logging.getLogger(__name__)

STOP_TIMEOUT = 5.0  # SIGTERM to exit, at most
SETTLE_TIMEOUT = 2.0  # then, for threads still running, at most


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


def settle_threads(timeout: float = SETTLE_TIMEOUT) -> int:
    """After the teardown, before the interpreter finalizes: wait up to ``timeout`` s for every
    other thread still running; returns how many are left.

    A daemon thread still inside a C++ library (OpenCV, LiteRT) at finalization is ended by
    pthread_exit, whose unwinding through C++ frames aborts the process ("terminate called
    without an active exception", exit by SIGABRT instead of 0). Every thread the daemon starts
    ends in its teardown; this is the last guard for one that was slow to."""
    deadline = time.monotonic() + timeout
    current = threading.current_thread()
    left = 0
    for thread in threading.enumerate():
        if thread is current or thread is threading.main_thread():
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            left += 1
            log.debug("shutdown: thread %s still running at exit", thread.name)
    return left
