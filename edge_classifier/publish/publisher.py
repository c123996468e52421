"""The publisher: thread ``publish`` turns outcomes and events into messages and sends them.

Everything reaches this thread through one queue (``_inbox``): results from the pipeline's
workers, events from anywhere, and paho's connect/disconnect/ack notifications. So the
outbox, the publish policy and the sinks are only ever touched here, and nobody else ever
waits for the network: ``submit``/``event`` never block.

After each (re)connect this thread publishes the retained state first (Home Assistant
discovery, when enabled) and then the retained ``online`` status.

A classified result may instead be published by the pipeline worker that submits it (``inline``,
on by default): when nothing queued waits (every item put on ``_inbox`` has been handled), the
publisher is not busy, the outbox is in memory and nothing goes to stdout, ``submit`` does the
publish thread's work for it under the same lock, so the result costs no wake-up of this thread
(on the 2-core machine a wake-up after a few ms idle costs 60-110 us of CPU, more than the work).
Order is kept: results arrive in frame order, and a result goes inline only when no earlier item
is still queued. Everything else (events, acks, connects, results behind a queued item) goes
through the queue as before. ``_lock`` guards the publisher's state either way.

A message the broker refuses (MQTT 5 PUBACK reason >= 0x80, e.g. 0x87 "Not authorized" from an
ACL) is not delivered: it leaves the outbox counted as refused (``spool_refused`` in stats),
is logged once per topic and reason, and announced once by a ``publish_refused`` event. It is
not sent again: the broker would refuse it again, and the messages behind it would wait
forever. (MQTT 3.1.1 has no way to refuse a publish: a 3.1.1 broker drops it silently.)
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TextIO

from edge_classifier.daemon.pipeline import Outcome
from edge_classifier.publish.connection import MqttConnection
from edge_classifier.publish.outbox import Message, Outbox
from edge_classifier.publish.payload import encode, encode_result, event_payload
from edge_classifier.publish.policy import PublishPolicy
from edge_classifier.publish.trouble import DeliveryTrouble

__all__ = ["OutboxLike", "Publisher", "Topics"]

log = logging.getLogger(__name__)

_WINDOW = 64  # messages in flight at once (unacknowledged by the broker)
# Events after which the retained state (Home Assistant discovery: the device's model) is stale.
_STATE_EVENTS = frozenset({"model_swapped"})


class OutboxLike(Protocol):
    """What the publisher needs of an outbox (in memory: Outbox; on disk: DiskOutbox)."""

    dropped: int
    refused_total: int
    durable: bool
    write_errors: int

    def __len__(self) -> int: ...
    @property
    def pending(self) -> int: ...
    def append(self, message: Message) -> int: ...
    def next_to_send(self, window: int) -> Message | None: ...
    def sent(self, mid: int) -> None: ...
    def acked(self, mid: int) -> bool: ...
    def refused(self, mid: int) -> Message | None: ...
    def reconnected(self) -> None: ...
    def flush(self) -> None: ...


class Topics:
    """The device's topics under its prefix (CONTRACT.md)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.status = f"{prefix}/status"
        self.result = f"{prefix}/result"
        self.stats = f"{prefix}/stats"
        self.event = f"{prefix}/event"
        self.snapshot = f"{prefix}/snapshot"
        self.commands = f"{prefix}/cmd/+"

    def reply(self, name: str) -> str:
        return f"{self.prefix}/reply/{name}"

    def source_result(self, source: str) -> str:
        """``{prefix}/source/{name}/result``: one camera's results (an mqtt topic's ``/`` become ``_``,
        so a camera is one topic level)."""
        return f"{self.prefix}/source/{source_level(source)}/result"


def source_level(source: str) -> str:
    """A frame source's name as one MQTT topic level."""
    return "".join("_" if c in "/+#\x00" else c for c in source) or "_"


class Publisher:
    """Sends results (in the order submitted) and events to MQTT and/or stdout."""

    def __init__(
        self,
        device: str,
        topics: Topics,
        *,
        connection: MqttConnection | None = None,
        qos: int = 1,
        retain: bool = False,
        stdout: TextIO | None = None,
        outbox: OutboxLike | None = None,
        policy: PublishPolicy | None = None,
        retained_state: Callable[[], list[Message]] | None = None,
        on_published: Callable[[Outcome], None] | None = None,
    ) -> None:
        self.device = device
        self.topics = topics
        self.qos = qos
        self.retain = retain
        self.policy = policy or PublishPolicy()
        # One policy state per camera (publish thread only): "change" and the heartbeat
        # compare a camera's result with its own last one, never another camera's.
        self._policies: collections.OrderedDict[str, PublishPolicy] = collections.OrderedDict()
        self._connection = connection
        self._stdout = stdout
        # Not `outbox or ...`: an empty outbox is falsy (it has a length).
        self.outbox: OutboxLike = outbox if outbox is not None else Outbox()
        self._retained_state = retained_state
        self._on_published = on_published
        self.on_event: Callable[[dict[str, Any]], None] | None = None  # each event payload (publish thread)
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        # The state below (outbox, policies, counters, trouble) is changed only under _lock: by
        # the publish thread, or by a worker publishing inline (see the module docstring).
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._queued = 0  # items ever put on _inbox (under _count_lock)
        self._handled = 0  # of those, taken by the publish thread (under _lock)
        self._closing = False
        self.inline = True
        """Let ``submit`` publish a result itself when nothing is queued (see the module docstring)."""
        self.inlined = 0
        """Results published inline by the submitting thread."""
        self._thread = threading.Thread(target=self._run, name="publish", daemon=True)
        self.results = 0
        self.per_source = False
        """Also publish each result on ``{prefix}/source/{name}/result`` (set by the daemon when
        it can have several cameras: ``[[sources]]`` or an mqtt wildcard)."""
        self.events = 0
        self.classified = 0  # frames classified (published or not: the mode decides), publish thread only
        self._classified_taken = 0  # what take_classified() reported so far, its caller only
        self._last_result: Message | None = None  # for Home Assistant after its restart
        self._latencies: collections.deque[float] = collections.deque(maxlen=10_000)
        self._trouble = DeliveryTrouble()
        self._printed: list[str] = []  # stdout lines of this batch, written after the spool's flush
        if connection is not None:
            # Crossing: these are called from paho's network thread; they only enqueue.
            connection._on_connected = lambda: self._put(("connected", None))
            connection._on_disconnected = lambda: self._put(("disconnected", None))
            connection._on_published = self._on_ack
        # Acks (paho's thread) wait in _acks; they wake the publish thread only while it needs
        # them at once (see _wants_acks): two wake-ups a result (the result, then its PUBACK)
        # were most of the publish thread's cost at a frame-rate cap.
        self._acks: collections.deque[tuple[int, tuple[int, str] | None]] = collections.deque()
        self._ack_wake = True

    def _on_ack(self, mid: int, refusal: tuple[int, str] | None) -> None:
        # Crossing: paho's network thread (a QoS 0 message's: the thread that wrote it, maybe
        # one holding _lock, so this never takes it). Append first, then read the flag: the
        # publish thread sets the flag first, then drains, so no ack it waits for is left unseen.
        self._acks.append((mid, refusal))
        if self._ack_wake:
            self._put(("acks", None))

    def start(self) -> Publisher:
        self._thread.start()
        return self

    def _put(self, item: tuple[str, Any]) -> None:
        # Counted before it is queued: while an item waits, _queued > _handled and no result
        # overtakes it inline.
        with self._count_lock:
            self._queued += 1
        self._inbox.put(item)

    # --- any thread -------------------------------------------------------------------

    def submit(self, outcome: Outcome) -> None:
        """A classified frame, in frame order (called from the pipeline's workers)."""
        if self.inline and outcome.classification is not None and self._lock.acquire(blocking=False):
            try:
                if self._may_inline():
                    self._inline(outcome)
                    return
            finally:
                self._lock.release()
        self._put(("outcome", outcome))

    def _may_inline(self) -> bool:
        """Caller holds _lock. Nothing queued, not closing, nothing that must stay in this thread."""
        return (self._queued == self._handled and not self._closing and self._thread.is_alive()
                and self._stdout is None and self._on_published is None and not self.outbox.durable)

    def _inline(self, outcome: Outcome) -> None:
        """The publish thread's work for one result, in the submitting thread (holding _lock)."""
        self.inlined += 1
        try:
            self._take_acks()
            self._publish_outcome(outcome)
            self._pump()
        except Exception:
            log.exception("publisher: publishing a result failed")
        # Acks must wake the publish thread if this left messages pending (window full, offline).
        self._ack_wake = self._wants_acks(None)

    def event(self, name: str, **details: Any) -> None:
        """Publish an event on ``{prefix}/event`` (and log it)."""
        self._put(("event", (name, details, time.time())))

    def set_policy(self, policy: PublishPolicy) -> None:
        self._put(("policy", policy))

    def republish_state(self) -> None:
        """Send the retained state again (Home Assistant asked for it after its restart)."""
        self._put(("state", None))

    def take_latencies(self) -> list[float]:
        """Inference milliseconds of the results published since the last call."""
        # Crossing: the deque is appended to by the publish thread; popleft is atomic.
        taken = []
        while True:
            try:
                taken.append(self._latencies.popleft())
            except IndexError:
                return taken

    def take_classified(self) -> int:
        """Frames classified since the last call."""
        # Crossing: `classified` is written by the publish thread only; reading an int is atomic.
        now = self.classified
        count, self._classified_taken = now - self._classified_taken, now
        return count

    def close(self, timeout: float = 3.0) -> bool:
        """Send what is queued (waiting for the broker up to ``timeout``), then stop.

        Returns True when everything was delivered. Idempotent.
        """
        if self._thread.is_alive():
            self._closing = True  # no more results inline: the publish thread drains and ends
            self._put(("close", time.monotonic() + timeout))
            self._thread.join(timeout + 1.0)
        return len(self.outbox) == 0

    # --- the publish thread -------------------------------------------------------------

    def _run(self) -> None:
        deadline: float | None = None
        try:
            while True:
                wait = 0.5 if deadline is None else max(0.0, deadline - time.monotonic())
                with self._lock:
                    # Under the lock: a worker publishing inline sets it after its own pump.
                    self._ack_wake = self._wants_acks(deadline)
                if self._acks:
                    batch = []  # acks came meanwhile: take them (below) without waiting
                else:
                    try:
                        batch = [self._inbox.get(timeout=wait)]
                    except queue.Empty:
                        batch = []
                # Take whatever else is already queued, so the disk spool is synced once
                # per batch and the network is touched once per batch.
                while True:
                    try:
                        batch.append(self._inbox.get_nowait())
                    except queue.Empty:
                        break
                with self._lock:
                    self._handled += len(batch)
                    self._take_acks()
                    for kind, value in batch:
                        if kind == "close":
                            deadline = value
                            continue
                        try:
                            self._handle(kind, value)
                        except Exception:
                            log.exception("publisher: handling %s failed", kind)
                    try:
                        self.outbox.flush()
                        self._print()
                        self._pump()
                    except Exception:
                        log.exception("publisher: sending failed")
                    if deadline is not None and (len(self.outbox) == 0 or time.monotonic() >= deadline):
                        if len(self.outbox):
                            self._trouble.undelivered(len(self.outbox), self.outbox.durable,
                                                      self.outbox.write_errors)
                        return
        finally:
            with self._lock:
                self.outbox.flush()
                self._print()

    def _wants_acks(self, deadline: float | None) -> bool:
        """Whether an ack must wake this thread: closing (waiting for the outbox to empty), or
        messages pending that may wait for one (the window is full, or resends are under way).
        Otherwise acks are taken with the next result or within the 0.5 s idle wake-up."""
        return deadline is not None or self.outbox.pending > 0

    def _take_acks(self) -> None:
        acks = self._acks
        while acks:
            mid, refusal = acks.popleft()
            try:
                self._handle("acked", (mid, refusal))
            except Exception:
                log.exception("publisher: handling an ack failed")

    def _print(self) -> None:
        """Write this batch's results to stdout (after the spool's flush; a result still within
        the spill window, or one a full disk could not take, is printed but not on disk)."""
        if self._printed and self._stdout is not None:
            self._stdout.write("".join(self._printed))
            self._stdout.flush()
        self._printed.clear()

    def _handle(self, kind: str, value: Any) -> None:
        if kind == "outcome":
            self._publish_outcome(value)
        elif kind == "event":
            name, details, wall = value
            self._publish_event(name, details, wall)
        elif kind == "acked":
            mid, refusal = value
            if refusal is None:
                self.outbox.acked(mid)
            else:
                self._refused(mid, refusal)
        elif kind == "connected":
            self.outbox.reconnected()
            self._send_state()
        elif kind == "state":
            self._send_state(online=False)
            self._resend_last_result()
        elif kind == "policy":
            self.policy = value
            self._policies.clear()
        elif kind in ("disconnected", "acks"):
            pass  # acks: a wake-up only, _run takes them from _acks
        else:
            raise ValueError(f"unknown publisher message {kind!r}")

    def _refused(self, mid: int, refusal: tuple[int, str]) -> None:
        """The broker refused ``mid``: drop it (see the module docstring), say so once per topic
        and reason."""
        code, reason = refusal
        message = self.outbox.refused(mid)
        topic = message.topic if message is not None else "(status or discovery)"
        details = self._trouble.refused(topic, code, reason, self.outbox.refused_total)
        if details and message is not None and topic != self.topics.event:  # a refused event topic would refuse it
            self._send(self.topics.event, event_payload(self.device, "publish_refused", details, time.time()), 1, False)
            self.events += 1

    def _resend_last_result(self) -> None:
        """Home Assistant restarted: give it the current result again (in change mode the next
        one may be a heartbeat away). Only when nothing newer waits in the outbox."""
        connection = self._connection
        if self._last_result is None or connection is None or not connection.connected.is_set() or len(self.outbox):
            return
        message = self._last_result
        connection.publish(message.topic, message.payload, message.qos, message.retain)

    def _send_state(self, online: bool = True) -> None:
        connection = self._connection
        if connection is None or not connection.connected.is_set():
            return
        for message in self._retained_state() if self._retained_state else []:
            connection.publish(message.topic, message.payload, message.qos, message.retain)
        if online:
            connection.publish_online()

    def _publish_outcome(self, outcome: Outcome) -> None:
        result = outcome.classification
        if result is None:
            self._publish_event("frame_failed", {"source": outcome.frame.source, "frame": outcome.frame.index,
                                                 "reason": outcome.error}, time.time())
            return
        self._latencies.append(result.inference_ms)
        self.classified += 1
        if not self._policy_for(outcome.frame.source).decide(result.top, time.monotonic()):
            return
        data = encode_result(self.device, outcome.frame, result)
        self._send_data(self.topics.result, data, self.qos, self.retain)
        if self.per_source:
            self._send_data(self.topics.source_result(outcome.frame.source), data, self.qos, self.retain)
        self.results += 1
        if self._on_published is not None:
            self._on_published(outcome)

    def _policy_for(self, source: str) -> PublishPolicy:
        """``source``'s own copy of the policy (at most 256 cameras; the idle longest is forgotten)."""
        policy = self._policies.get(source)
        if policy is None:
            if len(self._policies) >= 256:
                self._policies.popitem(last=False)
            policy = self._policies[source] = dataclasses.replace(self.policy)
        else:
            self._policies.move_to_end(source)
        return policy

    def _publish_event(self, name: str, details: dict[str, Any], wall: float) -> None:
        log.info("event %s %s", name, details)
        payload = event_payload(self.device, name, details, wall)
        self._send(self.topics.event, payload, 1, False)
        self.events += 1
        if self.on_event is not None:
            self.on_event(payload)
        if name in _STATE_EVENTS:
            self._send_state(online=False)

    def _send(self, topic: str, payload: dict[str, Any], qos: int, retain: bool) -> None:
        self._send_data(topic, encode(payload), qos, retain)

    def _send_data(self, topic: str, data: bytes, qos: int, retain: bool) -> None:
        if self._stdout is not None and topic == self.topics.result:
            self._printed.append(data.decode("utf-8") + "\n")
        if self._connection is None:
            return
        message = Message(topic, data, qos, retain)
        if topic == self.topics.result:
            self._last_result = message
        dropped = self.outbox.append(message)
        if dropped:
            self._trouble.dropped(dropped, self.outbox.dropped)

    def _report_overflow(self, connection: MqttConnection) -> None:
        """The spool_overflow event goes out directly once connected: queued behind the backlog
        it would itself be the next thing dropped."""
        details = self._trouble.overflow_event(self.outbox.dropped)
        if details is not None:
            connection.publish(self.topics.event, encode(event_payload(self.device, "spool_overflow", details)), 1,
                               False)
            self.events += 1

    def _pump(self) -> None:
        """Hand pending messages to paho while connected and the window allows."""
        connection = self._connection
        if connection is None or not connection.connected.is_set():
            return
        self._report_overflow(connection)
        while (message := self.outbox.next_to_send(_WINDOW)) is not None:
            info = connection.publish(message.topic, message.payload, message.qos, message.retain)
            # Even when the connection dropped just now (rc NO_CONN) paho keeps the
            # message and sends it after the reconnect: it is in flight either way.
            self.outbox.sent(info.mid)
            if not connection.connected.is_set():
                return
