"""The hand-over of frames from capture threads to the pipeline: one slot per camera,
taken in turn.

Frames are kept in lanes, one per ``Frame.source`` (a source's name, or each topic of
an ``mqtt`` wildcard), and the consumer takes them round robin over the lanes that
hold a frame: a fast camera never starves a slow one, and within one lane frames
leave in the order they came (the per-source frame order). Of the lanes holding a frame,
the one whose source was served longest ago goes first. Two policies per lane:

- ``overwrite=True`` (live sources): a one-frame slot where the latest frame wins.
  ``put`` never blocks; a frame the consumer had not taken yet is replaced and
  counted in ``dropped`` (and passed to ``on_drop``), so a slow consumer never builds
  a backlog of stale frames.
- ``overwrite=False`` (files): a bounded FIFO. ``put`` blocks while the lane is full
  (backpressure on the reader) and nothing is ever dropped. A producer that found its lane
  full waits until the consumer has drained it to ``(capacity - 1) // 2`` frames (empty, for
  the default two), then fills it again: one wake-up of the reader thread per two frames
  instead of one per frame (each wake-up is a futex wake and two context switches, which
  cost the 2-core machine more than the file reader's own work on a cached image).

A lane exists only while it holds frames, so the handoff is bounded by the number of
cameras with a frame waiting. Several captures may share one handoff (``put`` takes
the policy per call). All sides meet on one ``threading.Condition``; ``close`` wakes
everyone and makes ``get`` return None once the remaining frames are taken.

Several consumers (the pipeline's workers) wait for a frame with ``wait_frame``, each with a
rank: a new frame wakes only the waiting consumer of the lowest rank, not all of them and not
the one that has waited longest. While worker 0 keeps up with the camera it takes every frame:
its interpreter stays warm in the caches and the other workers sleep until frames come faster
than one worker can take them (with the take lock as the queue, workers took frames in turn,
and each frame also woke the next worker to wait under the lock).
"""

from __future__ import annotations

import _thread
import collections
import threading
import time
from collections.abc import Callable
from typing import Any

from edge_classifier.service.watchdog import Intake
from edge_classifier.source.base import Frame

__all__ = ["Handoff"]

_REMEMBERED = 1024  # frame sources whose last turn is remembered


class Handoff:
    """A thread-safe frame hand-over between producers and one consuming side."""

    def __init__(self, *, overwrite: bool, capacity: int = 2,
                 on_drop: Callable[[Frame], None] | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"Invalid handoff capacity: {capacity}")
        self.overwrite = overwrite
        self.capacity = capacity
        """Frames a FIFO (file) lane holds; an overwrite lane holds one."""
        self._low = (capacity - 1) // 2  # a full FIFO lane is refilled from this many frames on
        self.dropped = 0
        self._on_drop = on_drop
        self._lanes: dict[str, collections.deque[Frame]] = {}
        # When each frame source was last served (a turn number), most recent last.
        self._served: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._turn = 0  # frames taken so far
        self._polled: float | None = None  # when the consumer last asked for a frame
        self._cond = threading.Condition()
        self._closed = False
        # Consumers sleeping in wait_frame: [rank, lock it blocks on], lowest rank first.
        self._sleepers: list[list[Any]] = []

    def put(self, frame: Frame, stop: threading.Event, *, overwrite: bool | None = None,
            on_drop: Callable[[Frame], None] | None = None) -> bool:
        """Hand ``frame`` over into its source's lane; called from a producer (capture) thread.

        ``overwrite`` (default: the handoff's) picks the lane's policy. Blocks while a
        FIFO lane is full, until there is room or ``stop`` is set or the handoff is
        closed; returns False if the frame was not handed over then.
        """
        overwrite = self.overwrite if overwrite is None else overwrite
        dropped: Frame | None = None
        with self._cond:
            lane = self._lanes.get(frame.source)
            if overwrite:
                if lane:
                    dropped = lane.popleft()
                    lane.clear()
                    self.dropped += 1
            elif lane is not None and len(lane) >= self.capacity:
                while lane is not None and len(lane) > self._low:
                    if self._closed or stop.is_set():
                        return False
                    # Woken by get() draining the lane to the low-water mark, or by close();
                    # the timeout lets a stop() that only set the event be noticed too.
                    self._cond.wait(0.1)
                    lane = self._lanes.get(frame.source)
            if self._closed:
                return False
            if lane is None:
                lane = self._lanes[frame.source] = collections.deque()
            lane.append(frame)
            # Crossing: wake the consumer thread waiting in get(), and of those waiting in
            # wait_frame the one of the lowest rank (one frame, one consumer).
            self._cond.notify_all()
            if self._sleepers:
                self._sleepers.pop(0)[1].release()
        callback = on_drop or self._on_drop
        if dropped is not None and callback is not None:
            callback(dropped)
        return True

    def get(self, timeout: float) -> Frame | None:
        """The next frame, round robin over the lanes; called from the consumer side.

        None if none arrived within ``timeout`` seconds, or at once when the handoff
        is closed and empty.
        """
        # The consumer's side (one pipeline worker at a time, under the pipeline's take lock);
        # the main loop reads _polled and _turn through `intake` for the watchdog.
        self._polled = now = time.monotonic()
        deadline = now + timeout
        with self._cond:
            while not self._lanes:
                remaining = deadline - time.monotonic()
                if self._closed or remaining <= 0:
                    return None
                self._cond.wait(remaining)
            # The lane served longest ago goes first (never served: in arrival order). Plain
            # arrival order favoured the cameras whose frames come first in each period when
            # several cameras run in step; this keeps every share fair.
            served = self._served
            name = min(self._lanes, key=lambda key: served.get(key, -1))
            lane = self._lanes.pop(name)
            frame = lane.popleft()
            if lane:
                self._lanes[name] = lane
            self._turn += 1
            served[name] = self._turn
            served.move_to_end(name)
            if len(served) > _REMEMBERED:
                served.popitem(last=False)  # a camera not served for this long starts afresh
            if len(lane) <= self._low:
                # Crossing: wake a producer that waits for its lane to drain (see put).
                self._cond.notify_all()
            return frame

    def wait_frame(self, timeout: float, rank: int = 0) -> bool:
        """Wait until a frame is there to take (True) or ``timeout`` passes (False); at once when
        closed. Takes nothing: the caller takes with ``get``, and another consumer may have taken
        the frame first. Of the consumers waiting here, each new frame wakes the one of the lowest
        ``rank`` (see the module's docstring)."""
        self._polled = time.monotonic()
        with self._cond:
            if self._lanes or self._closed:
                return bool(self._lanes)
            blocker = _thread.allocate_lock()
            blocker.acquire()
            sleeper = [rank, blocker]
            self._sleepers.append(sleeper)
            self._sleepers.sort(key=lambda entry: entry[0])  # stable: equal ranks in arrival order
        # Crossing: released by put (a frame for this rank) or close.
        blocker.acquire(True, timeout)
        with self._cond:
            # Timed out and not chosen since: no longer waiting. (Chosen by a put just as the
            # wait timed out: it is gone from the list already, and the frame is there.)
            self._sleepers[:] = [entry for entry in self._sleepers if entry is not sleeper]
            return bool(self._lanes)

    def wake(self) -> None:
        """Wake every consumer waiting in ``wait_frame`` (to look at something other than frames:
        a stop, the end of the frames); each returns whether a frame is there."""
        with self._cond:
            for _, blocker in self._sleepers:
                blocker.release()
            self._sleepers.clear()

    @property
    def intake(self) -> Intake:
        """What the watchdog needs: frames taken by the consumer and when it last asked."""
        return Intake(self._turn, self._polled)

    def __len__(self) -> int:
        with self._cond:
            return sum(len(lane) for lane in self._lanes.values())

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """No more frames will be put; wakes every side. Idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self.wake()
