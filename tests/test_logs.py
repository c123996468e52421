"""configure_logging: the journald format when stderr is the journal, a timestamped one otherwise."""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import pytest

from edge_classifier.service.logs import HANDLER_NAME, configure_logging, journal_priority, stream_is_journal


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[TextIO]:
    with open(tmp_path / "stderr.log", "w+", encoding="utf-8") as stream:
        yield stream


def _journal_env(stream: TextIO) -> dict[str, str]:
    st = os.fstat(stream.fileno())
    return {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}


def _written(stream: TextIO) -> str:
    stream.flush()
    stream.seek(0)
    return stream.read()


def test_journal_format_when_journal_stream_matches(log_file: TextIO) -> None:
    env = _journal_env(log_file)
    assert stream_is_journal(log_file, env)
    configure_logging("debug", environ=env, stream=log_file)
    log = logging.getLogger("edge_classifier.daemon")
    log.debug("d")
    log.info("started with %d threads", 2)
    log.warning("w")
    log.error("e")
    log.critical("c")
    assert _written(log_file).splitlines() == [
        "<7>edge_classifier.daemon: d",
        "<6>edge_classifier.daemon: started with 2 threads",
        "<4>edge_classifier.daemon: w",
        "<3>edge_classifier.daemon: e",
        "<2>edge_classifier.daemon: c",
    ]


def test_journal_format_prefixes_every_line_of_a_traceback(log_file: TextIO) -> None:
    configure_logging("info", environ=_journal_env(log_file), stream=log_file)
    try:
        raise RuntimeError("camera gone")
    except RuntimeError:
        logging.getLogger("edge_classifier.source").exception("capture failed")
    lines = _written(log_file).splitlines()
    assert lines[0] == "<3>edge_classifier.source: capture failed"
    assert lines[1] == "<3>Traceback (most recent call last):"
    assert lines[-1] == "<3>RuntimeError: camera gone"
    assert all(line.startswith("<3>") for line in lines)


def test_terminal_format_otherwise(log_file: TextIO) -> None:
    other = {"JOURNAL_STREAM": "1:2"}  # another stream's device:inode
    assert not stream_is_journal(log_file, other)
    configure_logging("INFO", environ=other, stream=log_file)
    logging.getLogger("edge_classifier.daemon").info("message")
    logging.getLogger("edge_classifier.daemon").debug("hidden below INFO")
    text = _written(log_file)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO edge_classifier\.daemon: message\n", text)


@pytest.mark.parametrize("value", ["", "garbage", "12:", ":34", "a:b"])
def test_malformed_or_missing_journal_stream_means_terminal(log_file: TextIO, value: str) -> None:
    assert not stream_is_journal(log_file, {"JOURNAL_STREAM": value})
    assert not stream_is_journal(log_file, {})


def test_a_stream_without_a_file_descriptor_is_not_the_journal() -> None:
    buffer = io.StringIO()
    assert not stream_is_journal(buffer, {"JOURNAL_STREAM": "1:2"})
    configure_logging("info", environ={"JOURNAL_STREAM": "1:2"}, stream=buffer)
    logging.getLogger("x").warning("plain")
    assert buffer.getvalue().endswith(" WARNING x: plain\n")


def test_reconfiguring_replaces_our_handler(log_file: TextIO) -> None:
    root = logging.getLogger()
    first = configure_logging("info", environ={}, stream=log_file)
    second = configure_logging("warning", environ=_journal_env(log_file), stream=log_file)
    ours = [h for h in root.handlers if h.get_name() == HANDLER_NAME]
    assert ours == [second]
    assert first not in root.handlers
    assert root.level == logging.WARNING
    logging.getLogger("edge_classifier.daemon").warning("once")
    assert _written(log_file) == "<4>edge_classifier.daemon: once\n"


def test_foreign_handlers_are_left_alone(log_file: TextIO) -> None:
    foreign = logging.NullHandler()
    root = logging.getLogger()
    root.addHandler(foreign)
    configure_logging("info", environ={}, stream=log_file)
    configure_logging("info", environ={}, stream=log_file)
    assert foreign in root.handlers


@pytest.mark.parametrize("bad", ["verbose", "warn ", "", "10"])
def test_bad_level_is_a_clear_value_error(bad: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        configure_logging(bad, environ={})


def test_priorities_for_in_between_levels() -> None:
    assert journal_priority(logging.INFO + 5) == 6
    assert journal_priority(logging.DEBUG - 5) == 7
    assert journal_priority(logging.CRITICAL + 10) == 2
