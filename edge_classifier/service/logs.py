"""Logging set-up: journald-friendly under systemd, timestamped on a terminal.

Under systemd, stderr is a stream to journald and ``$JOURNAL_STREAM`` holds its
``device:inode``. When that matches the stream we log to, each line starts with the
sd-daemon syslog priority (``<6>edge_classifier.daemon: message``) so ``journalctl -p``
filters work, and carries no timestamp because journald adds its own.

Multi-line records (tracebacks): journald's stream reader makes one entry per line, and
keeping a record in one entry would need the native journal protocol instead of stderr.
We keep stderr (it also works under any other supervisor) and prefix *every* line with
the record's priority, so a traceback logged at ERROR shows in full under
``journalctl -p err`` instead of dropping to the default priority after its first line.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import TextIO

__all__ = ["configure_logging", "journal_priority", "stream_is_journal"]

#: The name of our handler on the root logger, so reconfiguring replaces it.
HANDLER_NAME = "edge_classifier"

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

TERMINAL_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(name)s: %(message)s"


def journal_priority(levelno: int) -> int:
    """The syslog priority for a logging level: CRITICAL 2, ERROR 3, WARNING 4, INFO 6, DEBUG 7.

    Levels in between (custom ones) take the priority of the next standard level below them.
    """
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


class JournalFormatter(logging.Formatter):
    """``<N>name: message``, with every line of a multi-line record prefixed."""

    def __init__(self) -> None:
        super().__init__(JOURNAL_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{journal_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


def stream_is_journal(stream: TextIO, environ: Mapping[str, str] = os.environ) -> bool:
    """True when ``stream`` is the journald stream systemd named in ``$JOURNAL_STREAM``."""
    value = environ.get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(stream.fileno())
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (OSError, ValueError, AttributeError):  # no fileno (StringIO), closed, malformed value
        return False


def configure_logging(
    level: str,
    environ: Mapping[str, str] = os.environ,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send all logging to ``stream`` (default: ``sys.stderr``) at ``level`` and up.

    ``level`` is one of debug, info, warning, error, critical (any case). Calling it again
    replaces the handler installed before instead of adding a second one. Returns the handler.
    """
    levelno = _LEVELS.get(level.lower()) if isinstance(level, str) else None
    if levelno is None:
        raise ValueError(f"Invalid log level: {level!r} (expected one of {', '.join(_LEVELS)})")
    if stream is None:
        stream = sys.stderr
    handler = logging.StreamHandler(stream)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(
        JournalFormatter() if stream_is_journal(stream, environ) else logging.Formatter(TERMINAL_FORMAT)
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(levelno)
    return handler
