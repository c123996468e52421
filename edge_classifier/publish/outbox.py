"""The outbox: messages waiting for the broker, in order, bounded.

Only the publisher thread touches an outbox. A message is *pending* until it is handed to
paho, then *in flight* until paho reports it published (PUBACK for QoS 1); only then is it
gone. A message the broker refused (an MQTT 5 PUBACK with a reason code of 0x80 or more, e.g.
0x87 "Not authorized" from an ACL) is gone too, but counted in ``refused_total``, not
``delivered``: the publisher logs it and drops it, since sending a refused message again would
be refused again and would hold up everything behind it.

Messages in flight when the connection drops stay with paho, which sends them again
first thing after the reconnect; new messages wait until those are through, so the broker
sees everything in order.

Bounds apply to pending messages: past ``max_messages`` or ``max_bytes`` the oldest
pending message is dropped, counted in ``dropped`` and reported by the caller, never
silently.
"""

from __future__ import annotations

import collections
import dataclasses

__all__ = ["Message", "Outbox"]


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool = False


class Outbox:
    durable = False  # True: what is owed survives a restart (DiskOutbox)
    write_errors = 0  # DiskOutbox: writes that failed (disk full...): what they held is in memory only

    def __init__(self, max_messages: int = 10_000, max_bytes: int = 16 * 1024 * 1024) -> None:
        if max_messages < 1 or max_bytes < 1:
            raise ValueError(f"outbox bounds must be positive, not {max_messages} messages / {max_bytes} bytes")
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._pending: collections.deque[Message] = collections.deque()
        self._pending_bytes = 0
        self._inflight: dict[int, Message] = {}
        self._resending: set[int] = set()
        self.dropped = 0
        self.delivered = 0
        self.refused_total = 0

    def __len__(self) -> int:
        """Messages not yet delivered: pending plus in flight."""
        return len(self._pending) + len(self._inflight)

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def append(self, message: Message) -> int:
        """Queue a message; returns how many old messages were dropped to make room."""
        self._pending.append(message)
        self._pending_bytes += len(message.payload)
        dropped = 0
        while len(self._pending) > 1 and (
            len(self._pending) > self.max_messages or self._pending_bytes > self.max_bytes
        ):
            old = self._pending.popleft()
            self._pending_bytes -= len(old.payload)
            dropped += 1
        self.dropped += dropped
        return dropped

    def next_to_send(self, window: int) -> Message | None:
        """The next pending message if one may go now (window not full, no resend under way)."""
        if not self._pending or self._resending or len(self._inflight) >= window:
            return None
        return self._pending[0]

    def sent(self, mid: int) -> None:
        """The head message was handed to paho with message id ``mid``."""
        message = self._pending.popleft()
        self._pending_bytes -= len(message.payload)
        self._inflight[mid] = message

    def acked(self, mid: int) -> bool:
        """Paho reports ``mid`` published; False for ids this outbox did not send."""
        message = self._inflight.pop(mid, None)
        self._resending.discard(mid)
        if message is None:
            return False
        self.delivered += 1
        return True

    def refused(self, mid: int) -> Message | None:
        """The broker refused ``mid``: the message, no longer owed; None for ids not sent here."""
        message = self._inflight.pop(mid, None)
        self._resending.discard(mid)
        if message is not None:
            self.refused_total += 1
        return message

    def flush(self) -> None:
        """Nothing to make durable in memory (DiskOutbox syncs its file here)."""

    def reconnected(self) -> None:
        """Paho is about to resend what was in flight: hold new messages until it has."""
        self._resending = set(self._inflight)
