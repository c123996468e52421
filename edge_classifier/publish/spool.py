"""The disk spool: an outbox whose undelivered messages survive a restart, a SIGKILL or a power cut.

:class:`DiskOutbox` is an :class:`~edge_classifier.publish.outbox.Outbox` (same methods, same
semantics, it reuses that class for the in-memory queue) that also writes the messages at risk
to an append-only log in ``directory``, so what was not delivered comes back after a restart.
Only the publisher thread touches it.

What goes to disk (the SD card's sake): a message the broker acknowledges within
``spill_after`` seconds never touches the disk. When the oldest message not yet acknowledged
is older than that (the broker is slow or down), every message not yet acknowledged is
written at once, in one batch (so a broker outage writes each result once, in large
appends, not a page per result); a clean ``close`` writes all that is still owed. With
``spill_after = 0`` every message is written as it is appended (the old behaviour).

What a power cut (or a SIGKILL) can lose: the messages appended in the last ``spill_after``
seconds (plus the publisher's batch, at most half a second) that the broker had not yet
acknowledged; with the broker up that is what was in flight at that instant. Everything
older is on disk and synced; acknowledgements not yet checkpointed come back as duplicates,
never as losses.

On disk: see ``publish/spool_format.py`` (segments of CRC-framed message and checkpoint records
beside a ``spool.lock``).

Writes:

* a spill writes each record with one ``write(2)`` (no user-space buffer), so it is in the
  kernel at once and survives a SIGKILL of this process;
* ``flush`` spills what is due, appends a checkpoint if the state on disk changed (only
  messages on disk count: acknowledging one that never was written changes nothing), then
  makes everything durable with one ``fdatasync`` (the publisher calls it once per batch);
  only flushed records survive a power cut;
* a segment holds about ``segment_bytes``; the next one starts with a checkpoint, and its
  creation is made durable (file and directory synced: two more syncs, once per segment);
* a segment that holds no message still owed is deleted (never the one being appended to),
  so the disk holds about the bounded pending messages plus at most the few segments pinned
  by messages in flight. Deleting acknowledged data early is never a loss.

Recovery (on open), never an exception for bad data:

* segments are read in order; a record with a bad magic, a length past the end, a bad crc or
  an undecodable topic is skipped with a warning: the reader looks for the next valid record
  after it (a corrupt record in the middle loses only itself). Bad bytes at the end of a
  segment (a torn tail after a power cut, garbage) are truncated away, so new appends after
  them are clean;
* a corrupt checkpoint is skipped like any record: the previous one (or none: everything)
  applies, so the result is duplicates, never losses;
* messages owed are queued as pending, in order, including those that were in flight at the
  crash (paho's session is gone with the process, so they are resent: QoS 1 is at least
  once); if they exceed the bounds the oldest are dropped, counted in ``dropped``;
  ``recovered`` says how many came back.

Write errors after open (disk full, I/O error) are logged, not raised: the message is still
queued in memory and will be delivered if the process lives; only its durability is lost.
Errors opening the spool (directory not creatable, spool locked by another process) raise
``OSError``.
"""

from __future__ import annotations

import collections
import errno
import fcntl
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from edge_classifier.publish.outbox import Message, Outbox
from edge_classifier.publish.spool_format import (
    LOCK_NAME,
    SEGMENT_NAME,
    Segment,
    encode_checkpoint,
    encode_message,
    fdatasync,
    read_segment,
    segment_name,
    sync_directory,
)

__all__ = ["DiskOutbox"]

log = logging.getLogger(__name__)

class DiskOutbox(Outbox):
    """An :class:`Outbox` kept on disk in ``directory`` (see the module docstring)."""

    durable = True

    def __init__(
        self,
        directory: Path,
        max_messages: int = 10_000,
        max_bytes: int = 16 * 1024 * 1024,
        *,
        segment_bytes: int = 4 * 1024 * 1024,
        spill_after: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(max_messages, max_bytes)
        if segment_bytes < 1:
            raise ValueError(f"spool segment size must be positive, not {segment_bytes}")
        if spill_after < 0:
            raise ValueError(f"spool spill_after must not be negative, not {spill_after}")
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self.spill_after = spill_after
        self._clock = clock
        # owed messages not yet on disk, oldest first: seq -> (message, when appended)
        self._unspilled: dict[int, tuple[Message, float]] = {}
        self._last_spilled = 0  # every owed message with a seq up to this one is on disk
        # seqs parallel to the Outbox's pending deque and in-flight dict
        self._pending_seqs: collections.deque[int] = collections.deque()
        self._inflight_seqs: dict[int, int] = {}
        self._floor = 0  # pending seqs at or above this run contiguously to the newest
        self._next_seq = 1
        self._segments: list[Segment] = []
        self._fd = -1
        self._lock_fd = -1
        self._unsynced = False
        self._saved: tuple[int, tuple[int, ...]] | None = None  # the last checkpoint written
        self._failing = False
        self.write_errors = 0
        self._closed = False
        self.recovered = 0  # messages owed found on open
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock()
        try:
            self._recover()
        except BaseException:
            self._release()
            raise

    # --- lifecycle --------------------------------------------------------------------

    def _lock(self) -> None:
        fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OSError(errno.EBUSY, "spool in use by another process", str(self.directory)) from None
        self._lock_fd = fd

    def _release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = -1

    def flush(self) -> None:
        """Spill what is due (see the module docstring), then make what is on disk and the
        acks of it durable (one fdatasync, only when something was written)."""
        if self._closed:
            return
        self._spill(force=False)
        self._sync()

    def _sync(self) -> None:
        state = self._state()
        if state != self._saved and self._write(encode_checkpoint(*state)):
            self._saved = state
        if self._unsynced:
            try:
                fdatasync(self._fd)
            except OSError as exc:
                self._write_failed("sync", exc)
            else:
                self._unsynced = False
        self._collect()

    def close(self) -> None:
        """Write every message still owed, sync and close the files. Idempotent."""
        if self._closed:
            return
        try:
            self._spill(force=True)
            self._sync()
        finally:
            self._closed = True
            self._release()

    def __enter__(self) -> DiskOutbox:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    # --- the Outbox interface -------------------------------------------------------------

    def append(self, message: Message) -> int:
        """Queue a message (written to disk at once only with ``spill_after = 0``); returns how
        many old messages were dropped to make room."""
        if self._closed:
            raise ValueError(f"spool {self.directory} is closed")
        seq = self._next_seq
        record = encode_message(seq, message)  # raises for a bad topic before anything changes
        self._next_seq += 1
        if self.spill_after > 0:
            self._unspilled[seq] = (message, self._clock())
        else:
            self._write_message(seq, record)
        return self._queue(seq, message)

    def sent(self, mid: int) -> None:
        super().sent(mid)
        self._inflight_seqs[mid] = self._pending_seqs.popleft()

    def acked(self, mid: int) -> bool:
        self._forget(mid)
        return super().acked(mid)

    def refused(self, mid: int) -> Message | None:
        self._forget(mid)
        return super().refused(mid)

    # --- internals --------------------------------------------------------------------

    def _forget(self, mid: int) -> None:
        """``mid`` is no longer owed: never write it."""
        seq = self._inflight_seqs.pop(mid, None)
        if seq is not None:
            self._unspilled.pop(seq, None)

    def _queue(self, seq: int, message: Message) -> int:
        dropped = super().append(message)
        self._pending_seqs.append(seq)
        for _ in range(dropped):
            self._unspilled.pop(self._pending_seqs.popleft(), None)
        return dropped

    def _spill(self, force: bool) -> None:
        """Write every owed message not yet on disk, when the oldest has waited ``spill_after``
        (or ``force``). All of them, not only the old ones: one large append per outage
        period instead of a partly written page per result."""
        if not self._unspilled:
            return
        _, oldest = next(iter(self._unspilled.values()))
        if not force and self._clock() - oldest < self.spill_after:
            return
        for seq, (message, _) in self._unspilled.items():
            self._write_message(seq, encode_message(seq, message))
        self._unspilled.clear()

    def _write_message(self, seq: int, record: bytes) -> None:
        if self._segments[-1].size >= self.segment_bytes:
            self._roll()
        self._write(record)
        self._segments[-1].add(seq)
        self._last_spilled = seq

    def _state(self) -> tuple[int, tuple[int, ...]]:
        """The checkpoint now: (floor, listed) such that owed = ``seq >= floor`` or listed.

        Only messages on disk (seq up to ``_last_spilled``) matter: with none of them owed the
        floor stays just past the last one written, so acks of messages that never touched the
        disk change nothing and write nothing."""
        pending = self._pending_seqs
        last = self._last_spilled
        floor = max(self._floor, pending[0]) if pending and pending[0] <= last else max(self._floor, last + 1)
        listed = {seq for seq in self._inflight_seqs.values() if seq <= last}
        for seq in pending:  # recovered ones ahead of the floor (few: at most the old in-flight)
            if seq >= floor:
                break
            listed.add(seq)
        return floor, tuple(sorted(listed))

    def _write(self, data: bytes) -> bool:
        """Append ``data`` to the newest segment (into the kernel: safe from a SIGKILL, not yet
        from a power cut). False, logged, when it fails."""
        try:
            written = os.write(self._fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, f"short write ({written} of {len(data)} bytes)")
        except OSError as exc:
            self._write_failed("write to", exc)
            return False
        self._segments[-1].size += len(data)
        self._unsynced = True
        if self._failing:
            self._failing = False
            log.warning("spool: writing to %s works again", self.directory)
        return True

    def _write_failed(self, what: str, exc: OSError) -> None:
        self.write_errors += 1
        if not self._failing:
            self._failing = True
            log.error("spool: cannot %s %s (%s): messages are kept in memory only until it works again",
                      what, self.directory, exc)

    def _open_segment(self, number: int) -> None:
        """Make segment ``number`` the one appended to; a new one starts with a checkpoint."""
        path = self.directory / segment_name(number)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if self._segments and self._segments[-1].number == number:
            self._fd = fd
            return
        self._segments.append(Segment(number, path))
        self._fd = fd
        state = self._state()
        if self._write(encode_checkpoint(*state)):
            self._saved = state
        try:
            fdatasync(fd)
            sync_directory(self.directory)  # the new file's name must survive a power cut too
        except OSError as exc:
            self._write_failed("sync", exc)
        else:
            self._unsynced = False

    def _roll(self) -> None:
        """Close the full newest segment (synced) and start the next one."""
        if self._fd >= 0:
            if self._unsynced:
                try:
                    fdatasync(self._fd)
                except OSError as exc:
                    self._write_failed("sync", exc)
            os.close(self._fd)
            self._fd = -1
        try:
            self._open_segment(self._segments[-1].number + 1)
        except OSError as exc:
            self._write_failed("create a segment in", exc)  # tried again at the next append
            return
        self._collect()

    def _collect(self) -> None:
        """Delete the segments (except the newest) that hold no message still owed."""
        floor, listed = self._state()
        keep: list[Segment] = []
        for segment in self._segments[:-1]:
            owed = segment.first is not None and segment.last is not None and (
                segment.last >= floor or any(segment.first <= seq <= segment.last for seq in listed)
            )
            if owed:
                keep.append(segment)
                continue
            try:
                segment.path.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("spool: cannot delete %s: %s", segment.path, exc)
                keep.append(segment)
        self._segments = [*keep, self._segments[-1]]

    def _recover(self) -> None:
        numbered = sorted(
            (int(match.group(1)), path)
            for path in self.directory.iterdir()
            if (match := SEGMENT_NAME.match(path.name))
        )
        messages: list[tuple[int, Message]] = []
        floor, listed = 0, frozenset[int]()
        for number, path in numbered:
            segment = Segment(number, path)
            for record in read_segment(segment):
                if record.message is None:
                    floor, listed = record.floor, record.listed
                    continue
                messages.append((record.seq, record.message))
                segment.add(record.seq)
                self._next_seq = max(self._next_seq, record.seq + 1)
            self._segments.append(segment)
        self._next_seq = max(self._next_seq, floor, *(seq + 1 for seq in listed))
        self._floor = floor
        for seq, message in messages:
            if seq >= floor or seq in listed:
                self._queue(seq, message)
        self.recovered = self.pending
        self._last_spilled = self._next_seq - 1  # what was read back is on disk
        if self.dropped:
            log.warning("spool: %s held more than the bounds allow: dropped the %d oldest messages",
                        self.directory, self.dropped)
        if self._segments and self._segments[-1].size < self.segment_bytes:
            self._saved = None  # state as read may differ from what recovery now owes
            self._open_segment(self._segments[-1].number)
        else:
            self._open_segment(self._segments[-1].number + 1 if self._segments else 1)
        self._collect()
        log.debug("spool: %s opened: %d messages recovered, next seq %d", self.directory, self.recovered,
                  self._next_seq)
