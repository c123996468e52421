"""The per-camera hand-overs: the mqtt source's inbox (one slot per topic, bounded) and the
handoff's lanes (one per frame source, round robin)."""

from __future__ import annotations

import threading

import numpy as np

from edge_classifier.source.base import stamp
from edge_classifier.source.handoff import Handoff
from edge_classifier.source.inbox import Inbox, Message, Signal


def message(topic: str, size: int = 10, tag: int = 0) -> Message:
    return Message(topic, bytes([tag]) * size, 0.0, 0.0)


def test_topics_are_taken_in_turn_and_a_topic_keeps_its_newest():
    inbox = Inbox(depth=1, max_topics=8)
    for tag in range(5):
        inbox.offer(message("cams/a", tag=tag))
    inbox.offer(message("cams/b", tag=9))
    taken = [inbox.take(0) for _ in range(2)]
    assert [(m.topic, m.payload[0]) for m in taken if isinstance(m, Message)] == [("cams/a", 4), ("cams/b", 9)]
    assert inbox.take(0) is None
    assert (inbox.received, inbox.dropped) == (6, 4)
    assert inbox.tally.get("cams/a").dropped == 4 and inbox.tally.get("cams/a").received == 5


def test_topics_are_bounded_the_idle_one_is_evicted_and_counted():
    inbox = Inbox(depth=1, max_topics=3)
    for topic in ("t/1", "t/2", "t/3"):
        inbox.offer(message(topic))
    assert isinstance(inbox.take(0), Message)  # t/1 read; t/2 and t/3 still wait
    inbox.offer(message("t/1"))  # t/1 active again: t/2 is now idle the longest
    inbox.offer(message("t/4"))
    assert (inbox.topics, inbox.evicted, inbox.dropped) == (3, 1, 1)  # t/2's waiting image dropped
    topics = []
    while isinstance(item := inbox.take(0), Message):
        topics.append(item.topic)
    assert topics == ["t/3", "t/1", "t/4"]


def test_waiting_bytes_are_bounded_the_longest_waiting_is_dropped():
    inbox = Inbox(depth=2, max_topics=8, max_bytes=250)
    for topic in ("a", "b", "c"):
        inbox.offer(message(topic, size=100))
    assert inbox.dropped == 1
    assert [m.topic for m in (inbox.take(0), inbox.take(0)) if isinstance(m, Message)] == ["b", "c"]
    inbox.offer(message("big", size=400))  # over the bound alone: kept (max_bytes of the source caps it)
    item = inbox.take(0)
    assert isinstance(item, Message) and item.topic == "big"


def test_signals_go_first_and_clear_counts_what_it_drops():
    inbox = Inbox()
    inbox.offer(message("a"))
    inbox.signal(Signal("woken", lost=False))
    assert inbox.take(0) == Signal("woken", lost=False)
    inbox.clear()
    assert inbox.take(0) is None and inbox.dropped == 1


def frame(source: str, index: int):
    return stamp(np.zeros((2, 2, 3), np.uint8), rgb=False, source=source, index=index)


def test_handoff_lanes_round_robin_newest_wins_per_source():
    dropped = []
    handoff = Handoff(overwrite=True, on_drop=dropped.append)
    stop = threading.Event()
    for index in range(1, 6):
        handoff.put(frame("fast", index), stop)
    handoff.put(frame("slow", 1), stop)
    handoff.put(frame("fast", 6), stop)
    taken = [handoff.get(0) for _ in range(2)]
    assert [(f.source, f.index) for f in taken if f] == [("fast", 6), ("slow", 1)]
    assert handoff.get(0) is None
    assert handoff.dropped == 5 and [f.index for f in dropped] == [1, 2, 3, 4, 5]


def test_handoff_fifo_lanes_keep_every_frame_in_order_and_alternate():
    handoff = Handoff(overwrite=False, capacity=3)
    stop = threading.Event()
    for index in (1, 2, 3):
        handoff.put(frame("a", index), stop)
        handoff.put(frame("b", index), stop)
    taken = [handoff.get(0) for _ in range(6)]
    assert [(f.source, f.index) for f in taken if f] == [
        ("a", 1), ("b", 1), ("a", 2), ("b", 2), ("a", 3), ("b", 3)]
    assert handoff.dropped == 0


def test_handoff_full_fifo_lane_refills_once_drained_and_loses_nothing():
    """A producer blocked on a full lane is woken when the consumer has drained it to the
    low-water mark (empty, for two frames), not at every frame; every frame still arrives in order."""
    handoff = Handoff(overwrite=False, capacity=2)
    stop = threading.Event()

    def produce() -> None:
        for index in range(1, 21):
            assert handoff.put(frame("files", index), stop)

    producer = threading.Thread(target=produce)
    producer.start()
    taken = [handoff.get(timeout=5) for _ in range(20)]
    producer.join(5)
    assert [f.index for f in taken if f] == list(range(1, 21))
    assert len(handoff) == 0 and handoff.dropped == 0
