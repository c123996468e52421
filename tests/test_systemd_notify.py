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

from edge_classifier.service.systemd import Notifier
from edge_classifier.service.watchdog import Intake, WatchdogGate


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


# --- WatchdogGate with the pipeline's intake: waiting is healthy, a hang is not ----------


def test_gate_pings_while_the_pipeline_waits_for_a_camera(watched: tuple[Notifier, socket.socket]) -> None:
    notifier, receiver = watched
    polled = [0.0]
    gate = WatchdogGate(notifier, intake=lambda: Intake(taken=0, polled=polled[0]))
    sent = []
    for second in range(35):  # no frame ever; the workers keep asking
        polled[0] = float(second)
        sent.append(gate.tick(now=second + 0.1))
    assert [i for i, s in enumerate(sent) if s] == [0, 10, 20, 30]
    assert _pings(receiver) == 4


def test_gate_withholds_when_frames_are_taken_and_none_finish(
    watched: tuple[Notifier, socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    notifier, receiver = watched
    intake = [Intake(taken=0, polled=0.0)]
    gate = WatchdogGate(notifier, intake=lambda: intake[0])
    assert gate.tick(now=0.0)  # waiting: healthy
    intake[0] = Intake(taken=1, polled=1.0)  # a frame taken at 1 s ... and never finished
    with caplog.at_level(logging.WARNING):
        for second in range(2, 60):
            intake[0] = Intake(taken=2, polled=float(second))  # the other worker still asks
            assert not gate.tick(now=float(second))
    assert sum("none finished" in r.getMessage() for r in caplog.records) == 1
    assert _pings(receiver) == 1
    gate.frame_done(now=60.0)  # it finished after all
    assert gate.tick(now=60.5)


def test_gate_withholds_when_the_pipeline_stops_asking(
    watched: tuple[Notifier, socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    notifier, receiver = watched
    gate = WatchdogGate(notifier, intake=lambda: Intake(taken=0, polled=3.0))  # last asked at 3 s
    assert gate.tick(now=3.5)
    with caplog.at_level(logging.WARNING):
        assert not any(gate.tick(now=float(t)) for t in range(14, 40))  # > stall_limit since
    assert any("stopped asking" in r.getMessage() for r in caplog.records)
    assert _pings(receiver) == 1


def test_gate_on_a_real_capture_tells_waiting_from_hung(watched: tuple[Notifier, socket.socket], tmp_path) -> None:
    # A real Capture: first with a source that cannot open (no camera), then with a
    # consumer that takes a frame and hangs in it.
    from edge_classifier.errors import SourceError
    from edge_classifier.source.capture import Capture

    class Missing:
        name, live = "cam0", True

        def open(self) -> None:
            raise SourceError("cannot open /dev/video9: no such device")

        def read(self): ...

        def close(self) -> None: ...

    notifier, receiver = watched
    with Capture(Missing(), retry_initial=0.05, retry_max=0.05) as capture:
        gate = WatchdogGate(notifier, period=0.05, stall_limit=1.0, intake=lambda: capture.intake)
        pings = 0
        deadline = time.monotonic() + 0.6
        while time.monotonic() < deadline:
            assert capture.get(timeout=0.05) is None  # the pipeline asks, gets nothing
            pings += gate.tick()
        assert pings >= 5
        assert capture.waiting == "cannot open /dev/video9: no such device"
    _drain(receiver)

    import numpy as np

    from edge_classifier.source.base import Frame

    class Camera:
        name, live = "cam0", True

        def open(self) -> None: ...

        def read(self) -> Frame:
            time.sleep(0.01)
            return Frame(image=np.zeros((8, 8, 3), np.uint8), rgb=False, index=1, source="cam0",
                         captured=time.monotonic(), timestamp=time.time())

        def close(self) -> None: ...

    with Capture(Camera()) as capture:
        gate = WatchdogGate(notifier, period=0.05, stall_limit=1.0, intake=lambda: capture.intake)
        assert capture.get(timeout=5) is not None  # taken ... and the "inference" hangs
        assert capture.waiting is None
        assert not any(gate.tick(now=time.monotonic() + t / 10) for t in range(20))
        assert _pings(receiver) == 0
