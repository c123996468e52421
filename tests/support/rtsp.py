"""A real RTSP camera (tests/support/rtsp_server.py under the system Python) that can freeze."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SERVER = Path(__file__).with_name("rtsp_server.py")
SYSTEM_PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else (shutil.which("python3") or "python3")


class RtspServerError(RuntimeError):
    """The RTSP server could not start (missing packages: run .ci/install-system-deps)."""


class RtspServer:
    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None
        self.port = 0

    def start(self) -> RtspServer:
        process = subprocess.Popen([SYSTEM_PYTHON, str(SERVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        assert process.stdout is not None
        line = process.stdout.readline()  # waits for "ready <port>" (or EOF if it failed)
        if not line.startswith("ready "):
            process.kill()
            _, errors = process.communicate(timeout=10)
            raise RtspServerError(f"RTSP server did not start (run .ci/install-system-deps): {errors.strip()}")
        self.port = int(line.split()[1])
        self._process = process
        return self

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam"

    def _command(self, command: str) -> None:
        assert self._process is not None and self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(command + "\n")
        self._process.stdin.flush()
        assert self._process.stdout.readline().strip() == command  # applied

    def stall(self) -> None:
        self._command("stall")

    def resume(self) -> None:
        self._command("resume")

    def close(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        try:
            process.communicate(timeout=10)  # closes its stdin: the server stops at the end of it
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate(timeout=10)
