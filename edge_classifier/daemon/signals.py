"""The daemon's control queue: signals and command requests, acted on by the main loop.

As in gunicorn's arbiter, a signal handler does nothing that could deadlock or re-enter
(no logging, no locks): it only puts the signal number on a ``queue.SimpleQueue``, whose
``put`` is safe to call from a signal handler. Command requests arrive on the same queue
from paho's network thread, so the main loop has one place to wait.
"""

from __future__ import annotations

import queue
import signal
from types import FrameType, TracebackType
from typing import Any

__all__ = ["ControlQueue"]

HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class ControlQueue:
    """Installs handlers for SIGTERM, SIGINT and SIGHUP while in its ``with`` block."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self._queue.put(signum)  # NO logging here: just queue the signal

    def put(self, item: Any) -> None:
        """Queue a non-signal item (a command request); any thread."""
        self._queue.put(item)

    def get(self, timeout: float) -> Any:
        """The next signal number or item, or None after ``timeout`` seconds."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def __enter__(self) -> ControlQueue:
        for signum in HANDLED:
            self._previous[signum] = signal.signal(signum, self._handler)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()
