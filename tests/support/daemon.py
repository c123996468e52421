"""Run the real ``edge-classifier run`` as a child process and watch what it says."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[2]


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


class DaemonProcess:
    """``python -m edge_classifier run`` with its stdout (JSON lines) and stderr (logs) read
    by two threads into queues, so a test can wait for a line without sleeping."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.args = [sys.executable, "-m", "edge_classifier", "run", *args]
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.cwd = cwd
        self.proc: subprocess.Popen[str] | None = None
        self.results: queue.Queue[dict[str, Any]] = queue.Queue()
        self.log_lines: list[str] = []
        self._log_changed = threading.Condition()
        self._threads: list[threading.Thread] = []

    def start(self) -> DaemonProcess:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=self.env, cwd=self.cwd)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        for target, stream in ((self._read_stdout, self.proc.stdout), (self._read_stderr, self.proc.stderr)):
            thread = threading.Thread(target=target, args=(stream,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    # Reader threads: lines cross to the test thread through the queue / the condition.
    def _read_stdout(self, stream: IO[str]) -> None:
        for line in stream:
            try:
                self.results.put(json.loads(line))
            except json.JSONDecodeError:
                with self._log_changed:
                    self.log_lines.append(f"STDOUT NOT JSON: {line.rstrip()}")
                    self._log_changed.notify_all()

    def _read_stderr(self, stream: IO[str]) -> None:
        for line in stream:
            with self._log_changed:
                self.log_lines.append(line.rstrip("\n"))
                self._log_changed.notify_all()

    @property
    def log(self) -> str:
        with self._log_changed:
            return "\n".join(self.log_lines)

    def wait_for_log(self, pattern: str, timeout: float = 15.0, after: int = 0) -> int:
        """Wait for a stderr line matching ``pattern`` (from line index ``after``); returns its index."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._log_changed:
            while True:
                for index in range(after, len(self.log_lines)):
                    if regex.search(self.log_lines[index]):
                        return index
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no log line matching {pattern!r} in {timeout}s; log:\n" + "\n".join(
                        self.log_lines[-40:]))
                self._log_changed.wait(left)

    def next_result(self, timeout: float = 15.0) -> dict[str, Any]:
        try:
            return self.results.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no result on stdout in {timeout}s; log:\n{self.log}") from None

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout)
        for thread in self._threads:
            thread.join(5)
        if code < 0:
            # Ended by a signal it was not sent to end on (an abort, a crash): its last words, for
            # the failing test's captured output.
            print(f"daemon ended by signal {-code}; the end of its log:\n" + "\n".join(self.log_lines[-60:]))
        return code

    def close(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        for thread in self._threads:
            thread.join(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> DaemonProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
