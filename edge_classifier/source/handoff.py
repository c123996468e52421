"""The hand-over of frames from the capture thread to the consumer thread.

One small class, two policies:

- ``overwrite=True`` (live sources): a one-frame slot where the latest frame wins.
  ``put`` never blocks; a frame the consumer had not taken yet is replaced and
  counted in ``dropped``, so a slow consumer never builds a backlog of stale frames.
- ``overwrite=False`` (files): a bounded FIFO. ``put`` blocks while it is full
  (backpressure on the reader) and nothing is ever dropped.

Both sides meet on one ``threading.Condition``; ``close`` wakes everyone and makes
``get`` return None once the remaining frames are taken.
"""

from __future__ import annotations

import collections
import threading
import time

from edge_classifier.source.base import Frame

__all__ = ["Handoff"]


class Handoff:
    """A thread-safe frame hand-over between one producer and one consumer."""

    def __init__(self, *, overwrite: bool, capacity: int = 2) -> None:
        if capacity < 1:
            raise ValueError(f"Invalid handoff capacity: {capacity}")
        self.overwrite = overwrite
        self.capacity = 1 if overwrite else capacity
        self.dropped = 0
        self._frames: collections.deque[Frame] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, frame: Frame, stop: threading.Event) -> bool:
        """Hand ``frame`` over; called from the producer (capture) thread.

        Blocks while a FIFO is full, until there is room or ``stop`` is set or the
        handoff is closed; returns False if the frame was not handed over then.
        """
        with self._cond:
            if self.overwrite:
                if self._frames:
                    self._frames.clear()
                    self.dropped += 1
            else:
                while len(self._frames) >= self.capacity:
                    if self._closed or stop.is_set():
                        return False
                    # Woken by get() taking a frame, or by close(); the timeout lets
                    # a stop() that only set the event be noticed too.
                    self._cond.wait(0.1)
            if self._closed:
                return False
            self._frames.append(frame)
            # Crossing: wake the consumer thread waiting in get().
            self._cond.notify_all()
            return True

    def get(self, timeout: float) -> Frame | None:
        """The next frame; called from the consumer thread.

        None if none arrived within ``timeout`` seconds, or at once when the handoff
        is closed and empty.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._frames:
                remaining = deadline - time.monotonic()
                if self._closed or remaining <= 0:
                    return None
                self._cond.wait(remaining)
            frame = self._frames.popleft()
            # Crossing: wake the producer if it waits for room.
            self._cond.notify_all()
            return frame

    def __len__(self) -> int:
        with self._cond:
            return len(self._frames)

    def close(self) -> None:
        """No more frames will be put; wakes both sides. Idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
