"""The mqtt source's inbox: what paho's network thread received, one slot per topic.

A wildcard subscription (``cams/+``, ``frigate/+/+/snapshot``) is many cameras on one
connection. One shared queue let a burst on one topic push out every other topic's
image, so the inbox keeps each topic apart: per topic the newest ``depth`` payloads
(an older one is replaced and counted in ``dropped``), taken round robin over the
topics that have one. Bounds, so a hostile publisher cannot grow it:

- at most ``max_topics`` topics are tracked; a new one evicts the topic idle the
  longest (its waiting payloads are dropped and counted; ``evicted`` counts topics);
- at most ``max_bytes`` of payloads wait in all; over that, the payload that has
  waited longest is dropped (and counted).

Signals (a lost connection, ``wake``) go ahead of payloads. Thread-safe: paho's
network thread offers, the reader (the capture thread) takes; one Condition.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time

from edge_classifier.source.tally import Tally

__all__ = ["Inbox", "Message", "Signal"]


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """One payload as it arrived."""

    topic: str
    payload: bytes
    captured: float
    timestamp: float
    oversized: int = 0  # the size of a payload dropped for being over max_bytes (not copied)


@dataclasses.dataclass(frozen=True, slots=True)
class Signal:
    """Queued by the network thread (or ``wake``) to interrupt a waiting read."""

    reason: str
    lost: bool


class Inbox:
    """Per-topic newest-payload slots, round robin, bounded in topics and bytes."""

    def __init__(self, *, depth: int = 1, max_topics: int = 64, max_bytes: int = 128 * 1024 * 1024,
                 tally: Tally | None = None, name: str = "") -> None:
        """``name``: the name the frames report, counted under; empty means each topic."""
        if depth < 1 or max_topics < 1 or max_bytes < 1:
            raise ValueError(f"Invalid inbox bounds: depth {depth}, max_topics {max_topics}, max_bytes {max_bytes}")
        self.depth = depth
        self.max_topics = max_topics
        self.max_bytes = max_bytes
        self.tally = tally or Tally(max_topics)
        self._name = name
        self.received = 0
        """Payloads offered."""
        self.dropped = 0
        """Payloads replaced by a newer one of their topic, or dropped by a bound, before read."""
        self.evicted = 0
        """Topics evicted because ``max_topics`` were tracked."""
        self._pending: dict[str, collections.deque[Message]] = {}  # insertion order: round robin
        self._topics: collections.OrderedDict[str, None] = collections.OrderedDict()  # idle longest first
        self._bytes = 0
        self._signals: collections.deque[Signal] = collections.deque()
        self._cond = threading.Condition()

    @property
    def topics(self) -> int:
        """Topics tracked now."""
        with self._cond:
            return len(self._topics)

    def _drop(self, message: Message) -> None:
        """Caller holds the lock."""
        self._bytes -= len(message.payload)
        self.dropped += 1
        self.tally.count(self._name or message.topic, "dropped")

    def offer(self, message: Message) -> None:
        """Keep ``message`` for the reader (paho's network thread)."""
        with self._cond:
            self.received += 1
            self.tally.count(self._name or message.topic, "received")
            topic = message.topic
            if topic in self._topics:
                self._topics.move_to_end(topic)
            else:
                if len(self._topics) >= self.max_topics:
                    idle, _ = self._topics.popitem(last=False)
                    self.evicted += 1
                    for old in self._pending.pop(idle, ()):
                        self._drop(old)
                self._topics[topic] = None
            lane = self._pending.get(topic)
            if lane is None:
                lane = self._pending[topic] = collections.deque()
            if len(lane) >= self.depth:
                self._drop(lane.popleft())
            lane.append(message)
            self._bytes += len(message.payload)
            while self._bytes > self.max_bytes and self._drop_oldest(keep=message):
                pass
            # Crossing: wake the reader waiting in take().
            self._cond.notify_all()

    def _drop_oldest(self, keep: Message) -> bool:
        """Caller holds the lock. Drop the payload waiting longest (never ``keep``, the newest)."""
        for topic, lane in self._pending.items():
            if lane[0] is not keep:
                self._drop(lane.popleft())
                if not lane:
                    del self._pending[topic]
                return True
        return False

    def signal(self, signal: Signal) -> None:
        """Interrupt the reader (any thread)."""
        with self._cond:
            self._signals.append(signal)
            self._cond.notify_all()

    def take(self, timeout: float) -> Message | Signal | None:
        """The next signal, else the next topic's oldest waiting payload; None on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._signals and not self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            if self._signals:
                return self._signals.popleft()
            topic = next(iter(self._pending))
            lane = self._pending.pop(topic)
            message = lane.popleft()
            if lane:
                self._pending[topic] = lane  # to the back: the other topics go first
            self._bytes -= len(message.payload)
            return message

    def clear(self) -> None:
        """Drop what waits (closing the connection: counted in ``dropped``); topics stay."""
        with self._cond:
            for lane in self._pending.values():
                for message in lane:
                    self._drop(message)
            self._pending.clear()
            self._signals.clear()
            self._bytes = 0
