"""The outbox contract, for the in-memory Outbox and the disk spool alike; then what only the
disk spool promises: restarts, SIGKILL, torn tails, corrupt checkpoints, bounded disk use."""

from __future__ import annotations

import logging
import os
import random
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge_classifier.publish import spool
from edge_classifier.publish.outbox import Message, Outbox

REPO = Path(__file__).resolve().parents[1]
TOPIC = "edge-classifier/testpi/result"

MakeOutbox = Callable[..., Outbox]


class DiskOutbox(spool.DiskOutbox):
    """The spool writing every message as it is appended (``spill_after = 0``): most tests
    below are about what is on disk and how it comes back; the spill window has its own."""

    def __init__(self, directory: Path, *args: int, spill_after: float = 0.0, **options: float) -> None:
        super().__init__(directory, *args, spill_after=spill_after, **options)  # type: ignore[arg-type]


def msg(number: int, size: int = 0, qos: int = 1) -> Message:
    payload = f"m{number}".encode().ljust(size, b".")
    return Message(TOPIC, payload, qos)


class Mids:
    """paho-like message ids."""

    def __init__(self) -> None:
        self.last = 0

    def __call__(self) -> int:
        self.last += 1
        return self.last


def send(outbox: Outbox, mids: Mids, count: int | None = None, window: int = 1000) -> list[tuple[int, bytes]]:
    """Hand up to ``count`` pending messages to "paho": [(mid, payload)]."""
    out: list[tuple[int, bytes]] = []
    while count is None or len(out) < count:
        message = outbox.next_to_send(window)
        if message is None:
            break
        mid = mids()
        outbox.sent(mid)
        out.append((mid, message.payload))
    return out


def deliver_all(outbox: Outbox) -> list[bytes]:
    """Send and ack everything pending; the payloads in the order they went."""
    mids = Mids()
    sent = send(outbox, mids)
    for mid, _ in sent:
        assert outbox.acked(mid)
    return [payload for _, payload in sent]


def names(count: int, start: int = 1) -> list[bytes]:
    return [f"m{n}".encode() for n in range(start, start + count)]


@pytest.fixture(params=["memory", "disk", "disk-windowed"])
def make_outbox(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeOutbox]:
    opened: list[spool.DiskOutbox] = []

    def factory(**bounds: int) -> Outbox:
        if request.param == "memory":
            return Outbox(**bounds)
        kind = DiskOutbox if request.param == "disk" else spool.DiskOutbox
        outbox = kind(tmp_path / f"spool-{len(opened)}", **bounds)
        opened.append(outbox)
        return outbox

    yield factory
    for outbox in opened:
        outbox.close()


# --- the contract, both kinds -----------------------------------------------------------


def test_order_and_counts(make_outbox: MakeOutbox) -> None:
    outbox = make_outbox()
    assert getattr(outbox, "recovered", 0) == 0
    for n in range(1, 6):
        assert outbox.append(msg(n)) == 0
    assert (len(outbox), outbox.pending, outbox.inflight) == (5, 5, 0)
    mids = Mids()
    sent = send(outbox, mids, 2)
    assert [payload for _, payload in sent] == names(2)
    assert (len(outbox), outbox.pending, outbox.inflight) == (5, 3, 2)
    for mid, _ in sent:
        assert outbox.acked(mid)
    outbox.flush()
    assert deliver_all(outbox) == names(3, start=3)
    assert (len(outbox), outbox.delivered, outbox.dropped) == (0, 5, 0)


def test_window_limits_messages_in_flight(make_outbox: MakeOutbox) -> None:
    outbox = make_outbox()
    for n in range(1, 5):
        outbox.append(msg(n))
    mids = Mids()
    assert [p for _, p in send(outbox, mids, window=2)] == names(2)
    assert outbox.next_to_send(2) is None
    assert outbox.acked(2)
    next_one = outbox.next_to_send(2)
    assert next_one is not None and next_one.payload == b"m3"


def test_bound_by_count_drops_oldest_pending_and_counts(make_outbox: MakeOutbox) -> None:
    outbox = make_outbox(max_messages=3)
    results = [outbox.append(msg(n)) for n in range(1, 6)]
    assert results == [0, 0, 0, 1, 1]
    assert outbox.dropped == 2
    assert deliver_all(outbox) == names(3, start=3)


def test_bound_by_bytes_drops_oldest_pending_and_counts(make_outbox: MakeOutbox) -> None:
    outbox = make_outbox(max_bytes=250)
    for n in range(1, 5):
        outbox.append(msg(n, size=100))
    assert outbox.dropped == 2
    assert [p[:2] for p in deliver_all(outbox)] == names(2, start=3)


def test_the_newest_message_is_kept_even_over_the_byte_bound(make_outbox: MakeOutbox) -> None:
    outbox = make_outbox(max_bytes=10)
    assert outbox.append(msg(1, size=50)) == 0
    assert outbox.append(msg(2, size=50)) == 1
    assert [p[:2] for p in deliver_all(outbox)] == [b"m2"]


def test_messages_in_flight_are_never_dropped(make_outbox: MakeOutbox) -> None:
    outbox = make_outbox(max_messages=2)
    outbox.append(msg(1))
    outbox.append(msg(2))
    mids = Mids()
    sent = send(outbox, mids)
    for n in range(3, 8):
        outbox.append(msg(n))
    assert (outbox.inflight, outbox.pending, outbox.dropped) == (2, 2, 3)
    assert all(outbox.acked(mid) for mid, _ in sent)
    assert deliver_all(outbox) == [b"m6", b"m7"]


def test_acks_out_of_order(make_outbox: MakeOutbox) -> None:
    outbox = make_outbox()
    for n in range(1, 4):
        outbox.append(msg(n, qos=n % 2))
    mids = Mids()
    sent = send(outbox, mids)
    assert outbox.acked(sent[2][0])
    assert outbox.acked(sent[0][0])
    assert not outbox.acked(sent[0][0])  # twice
    assert not outbox.acked(999)  # never sent by this outbox
    assert (len(outbox), outbox.inflight, outbox.delivered) == (1, 1, 2)
    assert outbox.acked(sent[1][0])
    assert len(outbox) == 0


def test_reconnected_holds_new_messages_until_the_resends_are_acked(make_outbox: MakeOutbox) -> None:
    outbox = make_outbox()
    for n in range(1, 4):
        outbox.append(msg(n))
    mids = Mids()
    sent = send(outbox, mids, 2)
    outbox.reconnected()  # paho resends m1, m2 itself
    outbox.append(msg(4))
    assert outbox.next_to_send(100) is None
    assert outbox.acked(sent[1][0])
    assert outbox.next_to_send(100) is None
    assert outbox.acked(sent[0][0])
    assert deliver_all(outbox) == names(2, start=3)


def test_bounds_must_be_positive(make_outbox: MakeOutbox) -> None:
    with pytest.raises(ValueError, match="0 messages"):
        make_outbox(max_messages=0)


# --- the disk spool ----------------------------------------------------------------------


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("spool-*.log"))


def test_directory_created_private(tmp_path: Path) -> None:
    with DiskOutbox(tmp_path / "a" / "spool") as outbox:
        assert len(outbox) == 0
    assert stat.S_IMODE((tmp_path / "a" / "spool").stat().st_mode) == 0o700


def test_survives_close_and_reopen_in_order(tmp_path: Path) -> None:
    with DiskOutbox(tmp_path) as outbox:
        for n in range(1, 101):
            outbox.append(msg(n, size=300))
    with DiskOutbox(tmp_path) as outbox:
        assert outbox.recovered == 100
        assert [p[:4].rstrip(b".") for p in deliver_all(outbox)] == names(100)
        outbox.append(msg(101))
    with DiskOutbox(tmp_path) as outbox:
        assert deliver_all(outbox) == [b"m101"]


def test_delivered_messages_do_not_come_back_and_new_ones_follow(tmp_path: Path) -> None:
    with DiskOutbox(tmp_path) as outbox:
        for n in range(1, 6):
            outbox.append(msg(n))
        assert deliver_all(outbox) == names(5)
    with DiskOutbox(tmp_path) as outbox:
        assert outbox.recovered == 0
        outbox.append(msg(6))
        outbox.append(msg(7))
    with DiskOutbox(tmp_path) as outbox:
        assert deliver_all(outbox) == [b"m6", b"m7"]
    with DiskOutbox(tmp_path) as outbox:
        assert outbox.recovered == 0


def test_in_flight_messages_come_back_pending_acked_ones_do_not(tmp_path: Path) -> None:
    with DiskOutbox(tmp_path) as outbox:
        for n in range(1, 7):
            outbox.append(msg(n))
        mids = Mids()
        sent = send(outbox, mids, 4)  # m1..m4 in flight, m5 m6 pending
        assert outbox.acked(sent[1][0])  # m2 acked out of order (QoS 0 beside QoS 1)
        assert outbox.acked(sent[3][0])  # m4
    with DiskOutbox(tmp_path) as outbox:
        assert outbox.recovered == 4
        assert (outbox.pending, outbox.inflight) == (4, 0)
        assert deliver_all(outbox) == [b"m1", b"m3", b"m5", b"m6"]


def test_recovered_in_flight_ones_sent_then_acked_out_of_order_across_restarts(tmp_path: Path) -> None:
    with DiskOutbox(tmp_path) as outbox:
        for n in range(1, 6):
            outbox.append(msg(n))
        mids = Mids()
        sent = send(outbox, mids, 3)
        outbox.acked(sent[1][0])  # m2
    with DiskOutbox(tmp_path) as outbox:  # owed: m1 m3 (were in flight) m4 m5
        mids = Mids()
        sent = send(outbox, mids, 2)  # m1 m3
        assert [p for _, p in sent] == [b"m1", b"m3"]
        outbox.acked(sent[1][0])  # m3
        outbox.append(msg(6))
    with DiskOutbox(tmp_path) as outbox:
        assert deliver_all(outbox) == [b"m1", b"m4", b"m5", b"m6"]


def test_dropped_messages_do_not_come_back(tmp_path: Path) -> None:
    with DiskOutbox(tmp_path, max_messages=3) as outbox:
        for n in range(1, 8):
            outbox.append(msg(n))
        assert outbox.dropped == 4
    with DiskOutbox(tmp_path, max_messages=3) as outbox:
        assert (outbox.recovered, outbox.dropped) == (3, 0)
        assert deliver_all(outbox) == names(3, start=5)


def test_recovery_past_smaller_bounds_drops_oldest_and_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with DiskOutbox(tmp_path) as outbox:
        for n in range(1, 11):
            outbox.append(msg(n))
    with caplog.at_level(logging.WARNING), DiskOutbox(tmp_path, max_messages=4) as outbox:
        assert (outbox.recovered, outbox.dropped) == (4, 6)
        assert deliver_all(outbox) == names(4, start=7)
    assert "dropped the 6 oldest" in caplog.text


CHILD = """
import os, signal, sys
from pathlib import Path
from edge_classifier.publish.outbox import Message
from edge_classifier.publish.spool import DiskOutbox

outbox = DiskOutbox(Path(sys.argv[1]), spill_after=0)
mid = 0
for n in range(1, 1001):
    outbox.append(Message("edge-classifier/testpi/result", f"m{n}".encode(), 1))
    if n <= 10:  # the broker took m1..m10 before it went away; m1..m5 were acked
        mid += 1
        outbox.sent(mid)
        if n <= 5:
            outbox.acked(mid)
    if n % 50 == 0 and sys.argv[2] == "flush":
        outbox.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("flush", ["flush", "no-flush"])
def test_survives_sigkill(tmp_path: Path, flush: str) -> None:
    """Flushed: safe even from a power cut. Not flushed: still in the kernel, safe from a SIGKILL."""
    child = subprocess.run([sys.executable, "-c", textwrap.dedent(CHILD), str(tmp_path), flush], cwd=REPO,
                           env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                           timeout=60)
    assert child.returncode == -signal.SIGKILL, child.stderr
    with DiskOutbox(tmp_path) as outbox:
        got = deliver_all(outbox)
    expected = names(995, start=6) if flush == "flush" else names(1000)  # unflushed acks: duplicates
    assert got == expected


def last_record_size(directory: Path, outbox: DiskOutbox, message: Message) -> int:
    """Append ``message`` as the last record of the newest segment; its size in bytes."""
    outbox.flush()
    before = segments(directory)[-1].stat().st_size
    outbox.append(message)
    outbox.flush()
    return segments(directory)[-1].stat().st_size - before


def test_torn_tail_is_cut_off_and_appends_after_it_survive(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with DiskOutbox(tmp_path) as outbox:
        for n in range(1, 4):
            outbox.append(msg(n, size=200))
        size = last_record_size(tmp_path, outbox, msg(4, size=200))
    newest = segments(tmp_path)[-1]
    whole = newest.stat().st_size
    os.truncate(newest, whole - size // 2)  # the power went mid-write
    with caplog.at_level(logging.WARNING), DiskOutbox(tmp_path) as outbox:
        assert outbox.recovered == 3
        assert newest.stat().st_size == whole - size
        outbox.append(msg(5, size=200))
    assert "torn" in caplog.text
    with DiskOutbox(tmp_path) as outbox:
        assert [p[:2] for p in deliver_all(outbox)] == [b"m1", b"m2", b"m3", b"m5"]


def test_garbage_at_the_end_is_skipped(tmp_path: Path) -> None:
    with DiskOutbox(tmp_path) as outbox:
        for n in range(1, 4):
            outbox.append(msg(n))
    with segments(tmp_path)[-1].open("ab") as file:
        file.write(os.urandom(5000) + b"ECm1" + b"\xff" * 20)
    with DiskOutbox(tmp_path) as outbox:
        outbox.append(msg(4))
    with DiskOutbox(tmp_path) as outbox:
        assert deliver_all(outbox) == names(4)


def test_a_corrupt_record_in_the_middle_loses_only_itself(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with DiskOutbox(tmp_path) as outbox:
        outbox.append(msg(1, size=100))
        size = last_record_size(tmp_path, outbox, msg(2, size=100))
        for n in range(3, 6):
            outbox.append(msg(n, size=100))
    newest = segments(tmp_path)[-1]
    data = bytearray(newest.read_bytes())
    at = data.index(b"m2.")
    data[at + 50] ^= 0xFF  # bit rot in m2's payload
    newest.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING), DiskOutbox(tmp_path) as outbox:
        assert [p[:2] for p in deliver_all(outbox)] == [b"m1", b"m3", b"m4", b"m5"]
    assert f"{size} bad bytes skipped" in caplog.text


def test_a_corrupt_checkpoint_means_duplicates_not_losses(tmp_path: Path) -> None:
    with DiskOutbox(tmp_path) as outbox:
        for n in range(1, 4):
            outbox.append(msg(n))
        outbox.flush()
        before = segments(tmp_path)[-1].stat().st_size
        assert deliver_all(outbox) == names(3)
        outbox.flush()  # writes the checkpoint "m1..m3 done"
        checkpoint_end = segments(tmp_path)[-1].stat().st_size
        assert checkpoint_end > before
        outbox.append(msg(4))
        outbox.append(msg(5))
    newest = segments(tmp_path)[-1]
    data = bytearray(newest.read_bytes())
    data[checkpoint_end - 12] ^= 0x01  # inside the checkpoint's floor
    newest.write_bytes(bytes(data))
    with DiskOutbox(tmp_path) as outbox:
        assert deliver_all(outbox) == names(5)  # m1..m3 again: duplicates; m4 m5: not lost


def test_without_any_readable_checkpoint_everything_is_replayed(tmp_path: Path) -> None:
    with DiskOutbox(tmp_path) as outbox:
        for n in range(1, 4):
            outbox.append(msg(n))
        mids = Mids()
        [(mid, _)] = send(outbox, mids, 1)
        assert outbox.acked(mid)
    newest = segments(tmp_path)[-1]
    data = bytearray(newest.read_bytes())
    assert data.count(b"ECk1") == 2  # the segment's opening checkpoint and "m1 done"
    data = bytearray(data.replace(b"ECk1", b"XXXX"))
    newest.write_bytes(bytes(data))
    with DiskOutbox(tmp_path) as outbox:
        assert deliver_all(outbox) == names(3)


def test_disk_use_stays_bounded_over_many_cycles(tmp_path: Path) -> None:
    with DiskOutbox(tmp_path, segment_bytes=8192) as outbox:
        mids = Mids()
        for cycle in range(300):
            for n in range(20):
                outbox.append(msg(cycle * 20 + n, size=200))
            for mid, _ in send(outbox, mids, window=64):
                outbox.acked(mid)
            outbox.flush()
        assert outbox.delivered == 6000
        files = segments(tmp_path)
        assert len(files) <= 2
        assert sum(path.stat().st_size for path in files) <= 2 * (8192 + 300)


def test_disk_use_stays_bounded_while_in_flight_messages_wait(tmp_path: Path) -> None:
    """Broker away for long: two messages stuck in flight pin their segment, not the ones after."""
    with DiskOutbox(tmp_path, max_messages=100, segment_bytes=8192) as outbox:
        outbox.append(msg(0, size=200))
        outbox.append(msg(1, size=200))
        stuck = send(outbox, Mids())
        for n in range(2, 5000):
            outbox.append(msg(n, size=200))
            if n % 50 == 0:
                outbox.flush()
        assert outbox.pending == 100
        # pending: 100 x ~250 bytes = 3 segments of 8 KiB, plus the pinned first and the newest
        assert len(segments(tmp_path)) <= 6
    with DiskOutbox(tmp_path) as outbox:  # owed: the 2 in flight and the 100 pending
        got = [p[: p.index(b".")] for p in deliver_all(outbox)]
        assert got == [b"m0", b"m1", *names(100, start=4900)]
    assert [mid for mid, _ in stuck] == [1, 2]


# --- the spill window: only what is at risk touches the disk ----------------------------------


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def spool_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in segments(directory))


def record_bytes(message: Message) -> int:
    """A message's size on disk: 12 bytes of record head, 12 of message head, topic, payload."""
    return 24 + len(message.topic.encode()) + len(message.payload)


def test_messages_acked_within_the_window_never_touch_the_disk(tmp_path: Path) -> None:
    """Broker up: 10,000 results acknowledged within the window; not one byte more on disk
    (counted at the file layer, so it holds on tmpfs too) than the checkpoint written at open."""
    clock = Clock()
    with spool.DiskOutbox(tmp_path, spill_after=2.0, clock=clock) as outbox:
        opened = spool_bytes(tmp_path)
        mids = Mids()
        for batch in range(1000):
            for n in range(10):
                outbox.append(msg(batch * 10 + n, size=300))
            for mid, _ in send(outbox, mids, window=64):
                outbox.acked(mid)
            clock.now += 0.1  # 100 results a second, each acked in its batch
            outbox.flush()
        assert outbox.delivered == 10_000
        assert spool_bytes(tmp_path) == opened
    assert spool_bytes(tmp_path) == opened  # a clean close with nothing owed writes nothing either


def test_broker_down_writes_each_message_once_with_little_framing(tmp_path: Path) -> None:
    """Broker down: every message is written once, in batches, plus a checkpoint per batch at most."""
    clock = Clock()
    messages = [msg(n, size=300) for n in range(1000)]
    with spool.DiskOutbox(tmp_path, spill_after=2.0, clock=clock) as outbox:
        opened = spool_bytes(tmp_path)
        for n, message in enumerate(messages):
            outbox.append(message)
            if n % 10 == 9:
                clock.now += 0.1
                outbox.flush()
    written = spool_bytes(tmp_path) - opened  # the clean close wrote the newest ones
    assert outbox.dropped == 0
    records = sum(map(record_bytes, messages))  # the results, their topic and 24 bytes of framing each
    assert records <= written <= records + 1024, f"{written} bytes on disk for {records} bytes of records"
    with spool.DiskOutbox(tmp_path) as again:
        assert deliver_all(again) == [message.payload for message in messages]


def test_only_messages_older_than_the_window_are_spilled_then_all_owed_at_once(tmp_path: Path) -> None:
    clock = Clock()
    with spool.DiskOutbox(tmp_path, spill_after=5.0, clock=clock) as outbox:
        opened = spool_bytes(tmp_path)
        outbox.append(msg(1))
        clock.now += 3
        outbox.append(msg(2))
        send(outbox, Mids(), count=1)  # m1 in flight, no ack: the broker is slow
        outbox.flush()
        assert spool_bytes(tmp_path) == opened  # nothing is 5 s old yet
        clock.now += 2
        outbox.flush()
        # m1 is 5 s old: it and the younger m2 go in one batch, with a checkpoint
        assert spool_bytes(tmp_path) - opened >= record_bytes(msg(1)) + record_bytes(msg(2))


WINDOW_CHILD = """
import os, signal, sys
from pathlib import Path
from edge_classifier.publish.outbox import Message
from edge_classifier.publish.spool import DiskOutbox

now = [0.0]
outbox = DiskOutbox(Path(sys.argv[1]), spill_after=5.0, clock=lambda: now[0])
for n in range(1, 61):
    outbox.append(Message("edge-classifier/testpi/result", f"m{n}".encode(), 1))
    if n == 50:  # the broker has been away for 6 s: m1..m50 are spilled and synced
        now[0] = 6.0
        outbox.flush()
os.kill(os.getpid(), signal.SIGKILL)  # m51..m60 are younger than the window: in memory only
"""


def test_a_crash_loses_only_what_is_younger_than_the_window(tmp_path: Path) -> None:
    child = subprocess.run([sys.executable, "-c", textwrap.dedent(WINDOW_CHILD), str(tmp_path)], cwd=REPO,
                           env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                           timeout=60)
    assert child.returncode == -signal.SIGKILL, child.stderr
    with spool.DiskOutbox(tmp_path) as outbox:
        assert deliver_all(outbox) == names(50)


def test_a_clean_close_spills_what_is_owed_and_not_what_was_acked(tmp_path: Path) -> None:
    clock = Clock()
    with spool.DiskOutbox(tmp_path, spill_after=5.0, clock=clock) as outbox:
        for n in range(1, 11):
            outbox.append(msg(n))
        mids = Mids()
        for mid, _ in send(outbox, mids, count=4):
            outbox.acked(mid)
        send(outbox, mids, count=2)  # m5, m6 in flight at shutdown
    with spool.DiskOutbox(tmp_path) as outbox:
        assert outbox.recovered == 6
        assert deliver_all(outbox) == names(6, start=5)


def test_a_refused_message_is_not_owed_even_once_on_disk(tmp_path: Path) -> None:
    """The broker refused it (PUBACK 0x87): counted as refused, not delivered, and not replayed."""
    clock = Clock()
    with spool.DiskOutbox(tmp_path, spill_after=1.0, clock=clock) as outbox:
        for n in range(1, 4):
            outbox.append(msg(n))
        mids = Mids()
        sent = send(outbox, mids)
        clock.now += 2
        outbox.flush()  # all three spilled: the broker is slow
        refused = outbox.refused(sent[1][0])
        assert refused is not None and refused.payload == b"m2"
        assert outbox.refused(sent[1][0]) is None  # once
        assert outbox.acked(sent[0][0])
        assert (outbox.delivered, outbox.refused_total) == (1, 1)
    with spool.DiskOutbox(tmp_path) as outbox:
        assert deliver_all(outbox) == [b"m3"]


def test_negative_spill_window_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="spill_after"):
        spool.DiskOutbox(tmp_path, spill_after=-1)


def test_one_process_per_spool(tmp_path: Path) -> None:
    with DiskOutbox(tmp_path), pytest.raises(OSError, match="in use"):
        DiskOutbox(tmp_path)
    with DiskOutbox(tmp_path) as outbox:  # released by close
        assert len(outbox) == 0


def test_close_is_idempotent_and_final(tmp_path: Path) -> None:
    outbox = DiskOutbox(tmp_path)
    outbox.append(msg(1))
    outbox.close()
    outbox.close()
    outbox.flush()  # harmless
    with pytest.raises(ValueError, match="closed"):
        outbox.append(msg(2))
    with DiskOutbox(tmp_path) as again:
        assert deliver_all(again) == [b"m1"]


def test_topics_and_flags_round_trip(tmp_path: Path) -> None:
    sent = [Message("a/ü/b", b"\x00\xff" * 10, 0, True), Message("x", b"", 2, False)]
    with DiskOutbox(tmp_path) as outbox:
        for message in sent:
            outbox.append(message)
    with DiskOutbox(tmp_path) as outbox:
        got: list[Message] = []
        while (head := outbox.next_to_send(10)) is not None:
            got.append(head)
            outbox.sent(len(got))
        assert got == sent


def random_ops(rng: random.Random) -> list[tuple[str, int]]:
    kinds = ["append"] * 4 + ["send"] * 2 + ["ack"] * 3 + ["reconnected", "flush", "reopen", "tick", "crash"]
    return [(rng.choice(kinds), rng.randrange(1000)) for _ in range(rng.randrange(80))]


@pytest.mark.parametrize("windowed", [False, True], ids=["at-once", "spill-window"])
@pytest.mark.parametrize("seed", range(0, 300, 30))
def test_disk_outbox_behaves_as_the_outbox_and_recovers_what_is_owed(seed: int, windowed: bool) -> None:
    """Random operations on both (a model check, seeded so failures replay); at each reopen the
    spool holds exactly what is still owed: what was in flight or pending, in order (then
    bounded like any append). With the spill window, time moves by random steps, so some owed
    messages are on disk and some not when acks, drops, rolls and reopens come. At a crash (the
    process dies: no flush, no close) what comes back is in order, and holds every owed message
    that was due on disk: all of them without the window; with it, those a flush saw older than
    the window, and those from before the last reopen."""
    for run in range(seed, seed + 30):
        rng = random.Random(run)
        try:
            check_against_the_model(random_ops(rng), rng.randint(1, 12), rng.randint(1, 2000), windowed)
        except AssertionError as exc:
            raise AssertionError(f"random run {run}: {exc}") from exc


def check_against_the_model(ops: list[tuple[str, int]], max_messages: int, max_bytes: int,
                            windowed: bool = False) -> None:
    bounds = {"max_messages": max_messages, "max_bytes": max_bytes}
    clock = Clock()

    def open_disk(directory: str) -> spool.DiskOutbox:
        if windowed:
            return spool.DiskOutbox(Path(directory), segment_bytes=600, spill_after=3.0, clock=clock, **bounds)
        return DiskOutbox(Path(directory), segment_bytes=600, **bounds)

    def number_of(message: Message) -> int:
        return int(message.payload[1:].split(b".")[0])

    with tempfile.TemporaryDirectory() as directory:
        model = Outbox(**bounds)
        disk = open_disk(directory)
        appended_at: dict[int, float] = {}
        last_flush = float("-inf")
        on_disk_up_to = 0  # every message up to this number was written by a clean close
        try:
            mids = Mids()
            inflight: dict[int, Message] = {}
            number = 0
            for op, value in ops:
                if op == "append":
                    number += 1
                    message = msg(number, size=value % 300)
                    appended_at[number] = clock.now
                    assert disk.append(message) == model.append(message)
                elif op == "send":
                    for _ in range(1 + value % 8):
                        head = model.next_to_send(4)
                        assert disk.next_to_send(4) == head
                        if head is None:
                            break
                        mid = mids()
                        model.sent(mid)
                        disk.sent(mid)
                        inflight[mid] = head
                elif op == "ack":
                    mid = sorted(inflight)[value % len(inflight)] if inflight else value
                    inflight.pop(mid, None)
                    assert disk.acked(mid) == model.acked(mid)
                elif op == "reconnected":
                    model.reconnected()
                    disk.reconnected()
                elif op in ("flush", "tick"):
                    clock.now += value % 7 if op == "tick" else 0
                    disk.flush()
                    last_flush = clock.now
                elif op == "crash":
                    owed = sorted([*inflight.values(), *model._pending], key=number_of)
                    due = [m for m in owed if not windowed or number_of(m) <= on_disk_up_to
                           or last_flush - appended_at[number_of(m)] >= 3.0]
                    disk._release()  # the process is gone: its files close, nothing more is written
                    disk._closed = True
                    disk = open_disk(directory)
                    back = list(disk._pending)
                    assert [number_of(m) for m in back] == sorted(number_of(m) for m in back)
                    if not disk.dropped:
                        assert not {m.payload for m in due} - {m.payload for m in back}, "an owed message is lost"
                    model = Outbox(**bounds)
                    inflight.clear()
                    for message in back:
                        model.append(message)
                    model.dropped = disk.dropped
                    on_disk_up_to = number  # all that came back is on disk again
                else:
                    owed = sorted(inflight.values(), key=lambda m: int(m.payload[1:].split(b".")[0]))
                    owed += list(model._pending)  # the model's pending queue, in order
                    disk.close()
                    on_disk_up_to = number
                    disk = open_disk(directory)
                    model = Outbox(**bounds)
                    inflight.clear()
                    for message in owed:
                        model.append(message)
                    assert disk.recovered == model.pending
                    assert disk.dropped == model.dropped
                assert (len(disk), disk.pending, disk.inflight) == (len(model), model.pending, model.inflight)
                assert (disk.dropped, disk.delivered) == (model.dropped, model.delivered)
            assert deliver_all(disk) == deliver_all(model)
        finally:
            disk.close()
