"""The real daemon under a fake systemd: a real AF_UNIX datagram socket as NOTIFY_SOCKET,
WATCHDOG_USEC set, and the notifications it sends as frames flow, stall, reload and stop."""

from __future__ import annotations

import queue
import shutil
import signal
import socket
import threading
import time

import cv2
import pytest
from support.daemon import DaemonProcess, write_config
from support.mjpeg import MjpegServer
from support.testdata import image, model


class FakeSystemd:
    """Receives sd_notify datagrams on a socket in tmp_path (a reader thread queues them)."""

    def __init__(self, path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: queue.Queue[tuple[float, dict[str, str]]] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.put((time.monotonic(), fields))  # crossing: reader thread -> test thread

    def expect(self, key: str, timeout: float = 20.0, value: str | None = None) -> tuple[float, dict[str, str]]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                at, fields = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {key} notification within {timeout}s") from None
            if key in fields and (value is None or fields[key] == value):
                return at, fields

    def drain(self) -> list[dict[str, str]]:
        out = []
        while not self.messages.empty():
            out.append(self.messages.get_nowait()[1])
        return out

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def systemd(tmp_path):
    fake = FakeSystemd(tmp_path / "notify.sock")
    yield fake
    fake.close()


def config_for(tmp_path, source: str) -> str:
    return write_config(tmp_path / "config.toml", f"""
[device]
id = "sdpi"
[source]
{source}
retry_initial = 0.2
retry_max = 0.5
[model]
path = "{model("mobilenet_v1_0.25_128_quant")}"
accelerator = "cpu"
[mqtt]
enabled = false
""")


def test_ready_status_watchdog_reload_stopping(tmp_path, systemd):
    folder = tmp_path / "pics"
    folder.mkdir()
    shutil.copy(image("parrot.jpg"), folder / "parrot.jpg")
    config = config_for(tmp_path, f'kind = "images"\nuri = "{folder}"\nloop = true\nfps = 20')
    env = {"NOTIFY_SOCKET": systemd.path, "WATCHDOG_USEC": "1000000"}  # WatchdogSec=1: ping every 0.5 s
    with DaemonProcess("-c", str(config), env=env) as daemon:
        _, ready = systemd.expect("READY", value="1")
        assert "STATUS" in ready and "mobilenet_v1_0.25_128_quant on cpu" in ready["STATUS"]
        first, _ = systemd.expect("WATCHDOG", value="1")
        second, _ = systemd.expect("WATCHDOG", value="1")
        assert 0.3 < second - first < 0.9  # every WatchdogSec/2
        _, status = systemd.expect("STATUS")
        assert " fps, model mobilenet_v1_0.25_128_quant on cpu" in status["STATUS"]
        daemon.signal(signal.SIGHUP)
        _, reloading = systemd.expect("RELOADING", value="1")
        assert int(reloading["MONOTONIC_USEC"]) > 0
        systemd.expect("READY", value="1")
        daemon.signal(signal.SIGTERM)
        systemd.expect("STOPPING", value="1")
        assert daemon.wait(10) == 0


def test_stalled_camera_is_waited_for_not_restarted(tmp_path, systemd):
    # The rule (issue 16): the watchdog guards the daemon's own liveness, never the camera.
    # A camera that stalls is reported (STATUS, source_lost) while the pings go on, so
    # systemd does not restart-loop a daemon that cannot fix the camera by restarting.
    parrot = cv2.imencode(".jpg", cv2.imread(str(image("parrot.jpg"))))[1].tobytes()
    camera = MjpegServer(jpeg=parrot).start()
    try:
        config = config_for(tmp_path, f'kind = "opencv"\nuri = "{camera.url}"')
        env = {"NOTIFY_SOCKET": systemd.path, "WATCHDOG_USEC": "1000000"}
        with DaemonProcess("-c", str(config), env=env) as daemon:
            systemd.expect("READY", value="1")
            systemd.expect("WATCHDOG", value="1")
            camera.stalled.set()  # the camera keeps the connection but sends nothing
            daemon.wait_for_log(r"capture: .* lost: ", timeout=30)
            systemd.drain()
            _, status = systemd.expect("STATUS", timeout=10)
            while not status["STATUS"].startswith("waiting for camera"):
                _, status = systemd.expect("STATUS", timeout=10)
            # Three watchdog periods with the camera gone: the pings go on.
            for _ in range(6):
                systemd.expect("WATCHDOG", value="1", timeout=1.5)
            assert "withholding" not in daemon.log
            camera.stalled.clear()  # frames again
            daemon.wait_for_log(r"capture: .* back after", timeout=30)
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(10) == 0
    finally:
        camera.stop()


def test_no_camera_ready_at_once_and_waiting(tmp_path, systemd):
    # No camera at all (a V4L2 device that does not exist): READY anyway, STATUS says why
    # no frames come, the watchdog is fed, and the daemon keeps retrying instead of exiting.
    config = config_for(tmp_path, 'kind = "opencv"\nuri = "/dev/video97"')
    env = {"NOTIFY_SOCKET": systemd.path, "WATCHDOG_USEC": "1000000"}
    with DaemonProcess("-c", str(config), env=env) as daemon:
        _, ready = systemd.expect("READY", value="1", timeout=30)
        assert ready["STATUS"].startswith("waiting for camera"), ready
        _, status = systemd.expect("STATUS", timeout=10)
        while "/dev/video97" not in status["STATUS"]:
            _, status = systemd.expect("STATUS", timeout=10)
        assert status["STATUS"].startswith("waiting for camera "), status
        for _ in range(4):
            systemd.expect("WATCHDOG", value="1", timeout=1.5)
        assert daemon.proc is not None and daemon.proc.poll() is None
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(10) == 0


def test_paused_daemon_keeps_feeding_the_watchdog(tmp_path, systemd, broker):
    from support.broker import Probe

    folder = tmp_path / "pics"
    folder.mkdir()
    shutil.copy(image("parrot.jpg"), folder / "parrot.jpg")
    config = config_for(tmp_path, f'kind = "images"\nuri = "{folder}"\nloop = true\nfps = 20')
    config.write_text(config.read_text().replace("enabled = false", f'host = "127.0.0.1"\nport = {broker.port}'))
    env = {"NOTIFY_SOCKET": systemd.path, "WATCHDOG_USEC": "1000000"}
    with DaemonProcess("-c", str(config), env=env) as daemon, Probe(broker.host, broker.port) as probe:
        systemd.expect("READY", value="1")
        reply = probe.request("edge-classifier/sdpi/cmd/pause", b"{}", timeout=10)
        assert b'"paused":true' in reply.payload
        systemd.drain()
        systemd.expect("WATCHDOG", value="1", timeout=3)
        systemd.expect("WATCHDOG", value="1", timeout=3)
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(10) == 0


def test_logs_are_journald_friendly_under_systemd(tmp_path):
    import os
    import subprocess
    import sys

    folder = tmp_path / "pics"
    folder.mkdir()
    shutil.copy(image("parrot.jpg"), folder / "parrot.jpg")
    config = config_for(tmp_path, f'kind = "images"\nuri = "{folder}"')
    log_path = tmp_path / "stderr.log"
    with log_path.open("wb") as stderr:
        stat = os.fstat(stderr.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"}
        done = subprocess.run([sys.executable, "-m", "edge_classifier", "run", "-c", str(config)],
                              stderr=stderr, stdout=subprocess.DEVNULL, env=env, timeout=60, check=False)
    assert done.returncode == 0
    ours = [line for line in log_path.read_text().splitlines() if "edge_classifier" in line]
    assert ours, log_path.read_text()
    for line in ours:
        assert line.startswith(("<6>", "<4>", "<3>", "<7>")), line  # syslog priority, no timestamp
        assert not line[3:7].isdigit(), line
    assert any(line.startswith("<6>edge_classifier.daemon.app: model mobilenet_v1_0.25_128_quant") for line in ours)
