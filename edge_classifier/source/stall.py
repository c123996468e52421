"""A read that can be given up on: a live capture's ``read()`` on a thread of its own.

``cv2.VideoCapture.read()`` blocks until a frame comes. FFmpeg's read timeout bounds it for
network streams, but loosely (RTSP over UDP counts it three times over: 30 s for 10), and a
V4L2 device whose camera froze may block for good. :class:`StallGuard` runs every read of one
capture on thread ``opencv-read-<name>`` and lets the caller wait at most ``timeout`` seconds:
past that it raises :class:`StalledError` and abandons the capture, which the reader thread
releases itself once the stuck read returns (the capture is only ever touched by one thread;
releasing it under a read in progress is not safe in OpenCV).

Threads: the caller and the reader cross through two one-slot queues (a request, a result).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from edge_classifier.errors import SourceError

__all__ = ["StallGuard", "StalledError"]

T = TypeVar("T")

_READ, _CLOSE = "read", "close"


class StalledError(SourceError):
    """No frame within the stall timeout."""


class StallGuard(Generic[T]):
    def __init__(self, read: Callable[[], T], release: Callable[[], None], *, name: str, timeout: float) -> None:
        if timeout <= 0:
            raise ValueError(f"stall timeout must be positive, not {timeout}")
        self.timeout = timeout
        self._read = read
        self._release = release
        self._requests: queue.Queue[str] = queue.Queue(maxsize=1)
        self._results: queue.Queue[tuple[bool, T | BaseException]] = queue.Queue(maxsize=1)
        self._abandoned = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"opencv-read-{name}", daemon=True)
        self._thread.start()

    def read(self) -> T:
        """The next read's result (its exception re-raised); StalledError after ``timeout``."""
        if self._closed:
            raise SourceError("read after close")
        # Crossing: ask the reader thread for one read, wait for its answer.
        self._requests.put(_READ)
        try:
            ok, value = self._results.get(timeout=self.timeout)
        except queue.Empty:
            self._closed = True
            self._abandoned.set()  # the reader releases the capture when (if) its read returns
            raise StalledError(f"no frame for {self.timeout:g} s (stalled)") from None
        if not ok:
            assert isinstance(value, BaseException)
            raise value
        return value  # type: ignore[return-value]

    def close(self, wait: float = 2.0) -> None:
        """Release the capture (on the reader thread) and end it; waits up to ``wait`` unless a
        read is stuck. Idempotent."""
        if self._closed:
            return  # closed before, or abandoned: the reader releases when its read returns
        self._closed = True
        self._requests.put(_CLOSE)
        self._thread.join(wait)

    def _run(self) -> None:
        try:
            while self._requests.get() == _READ:
                try:
                    result: tuple[bool, T | BaseException] = (True, self._read())
                except BaseException as exc:  # handed to the caller, who decides
                    result = (False, exc)
                if self._abandoned.is_set():
                    return  # nobody waits for it any more
                self._results.put(result)
        finally:
            self._release()
