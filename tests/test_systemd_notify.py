"""sd_notify against a real AF_UNIX datagram socket, and the watchdog policy with injected times."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_classifier.service.systemd import Notifier, WatchdogGate


def _bind(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(2.0)
    return sock


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    sock = _bind(path)
    yield sock, path
    sock.close()


@pytest.fixture
def abstract_socket() -> Iterator[tuple[socket.socket, str]]:
    name = f"edge-classifier-test-{uuid.uuid4().hex}"
    sock = _bind("\0" + name)
    yield sock, "@" + name
    sock.close()


def _drain(sock: socket.socket) -> list[bytes]:
    """Every datagram waiting on the socket, without blocking."""
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096))
    except BlockingIOError:
        return out
    finally:
        sock.settimeout(2.0)


def test_lifecycle_messages_arrive_as_datagrams(path_socket: tuple[socket.socket, str]) -> None:
    receiver, path = path_socket
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000"}
    with Notifier.from_env(env) as notifier:
        assert notifier.enabled
        assert notifier.watchdog_interval == 15.0
        assert notifier.ready()
        assert notifier.status("classifying\nat 12 fps")
        assert notifier.watchdog()
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert notifier.reloading()
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert notifier.stopping()
        got = [receiver.recv(4096) for _ in range(5)]
    assert got[:3] == [b"READY=1", b"STATUS=classifying at 12 fps", b"WATCHDOG=1"]
    reload_lines = got[3].decode().split("\n")
    assert reload_lines[0] == "RELOADING=1"
    key, _, usec = reload_lines[1].partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(usec) <= after
    assert got[4] == b"STOPPING=1"
    assert _drain(receiver) == []


def test_abstract_namespace_socket(abstract_socket: tuple[socket.socket, str]) -> None:
    receiver, name = abstract_socket
    with Notifier.from_env({"NOTIFY_SOCKET": name}) as notifier:
        assert notifier.ready(status="warming up")
        assert notifier.notify(STATUS="custom", ERRNO=0)
    assert receiver.recv(4096) == b"READY=1\nSTATUS=warming up"
    assert receiver.recv(4096) == b"STATUS=custom\nERRNO=0"


def test_without_notify_socket_everything_is_a_no_op() -> None:
    notifier = Notifier.from_env({"WATCHDOG_USEC": "30000000"})
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    assert not notifier.ready()
    assert not notifier.status("x")
    assert not notifier.watchdog()
    assert not notifier.reloading()
    assert not notifier.stopping()
    notifier.close()
    notifier.close()


def test_malformed_notify_socket_disables_instead_of_raising(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING), Notifier.from_env({"NOTIFY_SOCKET": "relative/path"}) as n:
        assert not n.enabled
    assert "relative/path" in caplog.text
    with pytest.raises(ValueError, match="relative/path"):
        Notifier("relative/path")


def test_watchdog_pid_mismatch_disables_the_watchdog(path_socket: tuple[socket.socket, str]) -> None:
    receiver, path = path_socket
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    with Notifier.from_env(env) as notifier:
        assert notifier.enabled
        assert notifier.watchdog_interval is None
        assert not notifier.watchdog()
        assert WatchdogGate(notifier).tick(now=100.0) is False
        assert notifier.ready()
    assert _drain(receiver) == [b"READY=1"]


def test_watchdog_pid_match_enables_the_watchdog(path_socket: tuple[socket.socket, str]) -> None:
    receiver, path = path_socket
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())}
    with Notifier.from_env(env) as notifier:
        assert notifier.watchdog_interval == 5.0
        assert notifier.watchdog()
    assert receiver.recv(4096) == b"WATCHDOG=1"


def test_socket_removed_mid_run_does_not_raise(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = str(tmp_path / "notify")
    receiver = _bind(path)
    logger = "edge_classifier.service.systemd"
    with caplog.at_level(logging.DEBUG, logger=logger), Notifier(path, watchdog_usec=2_000_000) as notifier:
        try:
            assert notifier.ready()
            assert receiver.recv(4096) == b"READY=1"
        finally:
            receiver.close()
        os.unlink(path)  # systemd went away
        for _ in range(3):
            assert notifier.watchdog() is False
            assert notifier.stopping() is False
    failures = [r for r in caplog.records if "sd_notify" in r.getMessage()]
    assert len(failures) == 1  # logged once, at debug
    assert failures[0].levelno == logging.DEBUG


def test_close_is_idempotent_and_later_sends_are_no_ops(path_socket: tuple[socket.socket, str]) -> None:
    receiver, path = path_socket
    notifier = Notifier(path, watchdog_usec=1_000_000)
    notifier.close()
    notifier.close()
    assert not notifier.enabled
    assert not notifier.ready()
    assert not notifier.watchdog()
    assert _drain(receiver) == []


def test_invalid_fields_are_rejected(path_socket: tuple[socket.socket, str]) -> None:
    _, path = path_socket
    with Notifier(path) as notifier, pytest.raises(ValueError, match="STATUS"):
        notifier.notify(STATUS="two\nlines")


# --- WatchdogGate: pure policy, injected times, a real socket to count the pings ---------


@pytest.fixture
def watched(path_socket: tuple[socket.socket, str]) -> Iterator[tuple[Notifier, socket.socket]]:
    receiver, path = path_socket
    with Notifier(path, watchdog_usec=20_000_000) as notifier:  # WatchdogSec=20 -> period 10 s
        yield notifier, receiver


def _pings(receiver: socket.socket) -> int:
    got = _drain(receiver)
    assert set(got) <= {b"WATCHDOG=1"}
    return len(got)


def test_gate_pings_while_frames_flow(watched: tuple[Notifier, socket.socket]) -> None:
    notifier, receiver = watched
    gate = WatchdogGate(notifier)
    assert gate.period == 10.0
    assert gate.stall_limit == 10.0
    sent = []
    for second in range(60):
        gate.frame_done(now=float(second))
        sent.append(gate.tick(now=second + 0.5))
    # the first tick pings, then once per period: never more often
    assert [i for i, s in enumerate(sent) if s] == [0, 10, 20, 30, 40, 50]
    assert _pings(receiver) == 6


def test_gate_withholds_pings_while_stalled(
    watched: tuple[Notifier, socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    notifier, receiver = watched
    gate = WatchdogGate(notifier)
    assert gate.tick(now=0.0) is False  # no frame yet: nothing proves the pipeline works
    gate.frame_done(now=1.0)
    assert gate.tick(now=1.0) is True
    with caplog.at_level(logging.WARNING):  # the pipeline hangs: no frame_done any more
        assert not any(gate.tick(now=1.0 + t) for t in range(1, 120))
    assert _pings(receiver) == 1
    assert sum("withholding" in r.getMessage() for r in caplog.records) == 1  # warned once
    gate.frame_done(now=130.0)  # frames come back: pings resume
    assert gate.tick(now=130.5) is True
    assert _pings(receiver) == 1


def test_gate_stall_limit_catches_a_fresh_but_old_frame(watched: tuple[Notifier, socket.socket]) -> None:
    notifier, receiver = watched
    gate = WatchdogGate(notifier, stall_limit=5.0)
    gate.frame_done(now=0.0)
    assert gate.tick(now=0.0)
    gate.frame_done(now=1.0)  # one frame right after the ping, then silence
    assert not gate.tick(now=10.0)  # a frame since the ping, but 9 s old > 5 s: stalled
    gate.frame_done(now=11.0)
    assert gate.tick(now=12.0)
    assert _pings(receiver) == 2


def test_gate_pings_while_idle_ok(watched: tuple[Notifier, socket.socket]) -> None:
    notifier, receiver = watched
    gate = WatchdogGate(notifier)
    gate.set_idle_ok(True)  # paused by a user: healthy without frames
    assert gate.idle_ok
    assert [t for t in range(35) if gate.tick(now=float(t))] == [0, 10, 20, 30]
    gate.set_idle_ok(False)  # resumed, but no frame arrives
    assert not any(gate.tick(now=float(t)) for t in range(35, 80))
    assert _pings(receiver) == 4


def test_gate_is_inert_without_a_watchdog() -> None:
    with Notifier(None) as notifier:
        gate = WatchdogGate(notifier)
        gate.frame_done()
        assert gate.period is None
        assert gate.tick() is False


def test_gate_uses_its_clock_when_no_time_is_given(watched: tuple[Notifier, socket.socket]) -> None:
    notifier, receiver = watched
    now = [100.0]
    gate = WatchdogGate(notifier, clock=lambda: now[0])
    gate.frame_done()
    assert gate.tick()
    now[0] += 5.0
    gate.frame_done()
    assert not gate.tick()  # 5 s < period
    now[0] += 5.0
    assert gate.tick()
    assert _pings(receiver) == 2
