"""The disk spool's on-disk format (``publish/spool.py`` keeps the outbox that uses it): framing,
encoding and parsing records, reading a segment back past bad bytes.

On disk (all integers little-endian)::

    spool.lock                 flock()ed while open: one process per spool
    spool-000000000001.log     segments, numbered; the highest is the one being appended to
    spool-000000000002.log

    record     = [magic u32][length u32][crc32 u32][body: length bytes]
    crc32      = zlib.crc32 over the magic and length fields and then the body
    message    magic "ECm1": body = [seq u64][qos u8][retain u8][topic length u16][topic utf-8][payload]
    checkpoint magic "ECk1": body = [floor u64][count u32][count x seq u64]

Every message gets a sequence number, increasing across segments and restarts. A
checkpoint says which messages are still owed to the broker: those with ``seq >= floor``
plus the ``count`` listed (messages in flight, or recovered from an earlier crash ahead of
the floor); every other seq was acknowledged or dropped for the bounds. Acks may come out
of order (QoS 0 and 1 mixed); the list keeps an early unacked message without holding the
later acked ones. The last valid checkpoint on disk is the state; none at all means every
message on disk is owed.

A reader that meets bad bytes looks for the next valid record after them (``read_segment``):
a corrupt record in the middle loses only itself, and a bad tail is truncated away.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import struct
import zlib
from pathlib import Path

from edge_classifier.publish.outbox import Message

__all__ = ["LOCK_NAME", "MAGIC_CHECKPOINT", "MAGIC_MESSAGE", "SEGMENT_NAME", "Record", "Segment",
           "encode_checkpoint", "encode_message", "fdatasync", "parse", "read_segment", "segment_name",
           "sync_directory"]

log = logging.getLogger(__name__)

MAGIC_MESSAGE = int.from_bytes(b"ECm1", "little")
MAGIC_CHECKPOINT = int.from_bytes(b"ECk1", "little")
_HEAD = struct.Struct("<III")  # magic, length, crc32
_PREFIX = struct.Struct("<II")  # magic, length: the part of the head the crc covers
_MESSAGE = struct.Struct("<QBBH")  # seq, qos, retain, topic length
_CHECKPOINT = struct.Struct("<QI")  # floor, count
_SEQ = struct.Struct("<Q")
_MAX_BODY = 1 << 30  # larger lengths are corruption, not data
SEGMENT_NAME = re.compile(r"^spool-(\d{12})\.log$")
LOCK_NAME = "spool.lock"

fdatasync = getattr(os, "fdatasync", os.fsync)


@dataclasses.dataclass(slots=True)
class Segment:
    """A segment file and the range of message seqs in it (mutable: the last one grows)."""

    number: int
    path: Path
    size: int = 0
    first: int | None = None
    last: int | None = None

    def add(self, seq: int) -> None:
        if self.first is None:
            self.first = seq
        self.last = seq


@dataclasses.dataclass(frozen=True, slots=True)
class Record:
    """One valid record read back: a message (``message`` set) or a checkpoint."""

    end: int
    seq: int = 0
    message: Message | None = None
    floor: int = 0
    listed: frozenset[int] = frozenset()


def segment_name(number: int) -> str:
    return f"spool-{number:012d}.log"


def _frame(magic: int, body: bytes) -> bytes:
    prefix = _PREFIX.pack(magic, len(body))
    return _HEAD.pack(magic, len(body), zlib.crc32(body, zlib.crc32(prefix))) + body


def encode_message(seq: int, message: Message) -> bytes:
    """The framed record of ``message`` with sequence number ``seq``."""
    topic = message.topic.encode("utf-8")
    if len(topic) > 0xFFFF:
        raise ValueError(f"topic too long for MQTT ({len(topic)} bytes): {message.topic[:60]}...")
    head = _MESSAGE.pack(seq, message.qos, 1 if message.retain else 0, len(topic))
    return _frame(MAGIC_MESSAGE, head + topic + message.payload)


def encode_checkpoint(floor: int, listed: tuple[int, ...]) -> bytes:
    """The framed checkpoint: owed are ``seq >= floor`` and the ``listed`` seqs."""
    body = _CHECKPOINT.pack(floor, len(listed)) + b"".join(_SEQ.pack(seq) for seq in listed)
    return _frame(MAGIC_CHECKPOINT, body)


def parse(data: bytes, pos: int) -> Record | None:
    """The valid record starting at ``pos``, or None (bad magic, cut short, bad crc, bad body)."""
    if pos + _HEAD.size > len(data):
        return None
    magic, length, crc = _HEAD.unpack_from(data, pos)
    if magic not in (MAGIC_MESSAGE, MAGIC_CHECKPOINT) or length > _MAX_BODY:
        return None
    start = pos + _HEAD.size
    end = start + length
    if end > len(data):
        return None
    body = data[start:end]
    if zlib.crc32(body, zlib.crc32(data[pos : pos + _PREFIX.size])) != crc:
        return None
    try:
        if magic == MAGIC_MESSAGE:
            seq, qos, retain, topic_length = _MESSAGE.unpack_from(body)
            topic_end = _MESSAGE.size + topic_length
            if topic_end > length:
                return None
            topic = body[_MESSAGE.size : topic_end].decode("utf-8")
            return Record(end, seq=seq, message=Message(topic, body[topic_end:], qos, bool(retain)))
        floor, count = _CHECKPOINT.unpack_from(body)
        if _CHECKPOINT.size + count * _SEQ.size != length:
            return None
        listed = struct.unpack_from(f"<{count}Q", body, _CHECKPOINT.size)
        return Record(end, floor=floor, listed=frozenset(listed))
    except (struct.error, UnicodeDecodeError):
        return None


def _resync(data: bytes, pos: int) -> int:
    """Where the next valid record starts at or after ``pos``; -1 if none does."""
    markers = (MAGIC_MESSAGE.to_bytes(4, "little"), MAGIC_CHECKPOINT.to_bytes(4, "little"))
    while True:
        found = [at for at in (data.find(marker, pos) for marker in markers) if at >= 0]
        if not found:
            return -1
        at = min(found)
        if parse(data, at) is not None:
            return at
        pos = at + 1


def read_segment(segment: Segment) -> list[Record]:
    """Every valid record of a segment; bad bytes are skipped, a bad tail is truncated away."""
    data = segment.path.read_bytes()
    records: list[Record] = []
    pos = 0
    good_end = 0
    while pos < len(data):
        record = parse(data, pos)
        if record is not None:
            records.append(record)
            pos = good_end = record.end
            continue
        resume = _resync(data, pos + 1)
        if resume < 0:
            log.warning("spool: %s: %d bad bytes at the end (offset %d) cut off: a torn write",
                        segment.path, len(data) - pos, pos)
            break
        log.warning("spool: %s: %d bad bytes skipped at offset %d", segment.path, resume - pos, pos)
        pos = resume
    if good_end < len(data):
        with open(segment.path, "r+b") as file:
            file.truncate(good_end)
            os.fsync(file.fileno())
    segment.size = good_end
    return records


def sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
