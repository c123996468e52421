"""Run :func:`probe` in a child process, so a model file that crashes the runtime kills only
the child.

A hostile or damaged flatbuffer can make a native runtime abort or segfault instead of
raising; in the daemon that would take the running pipeline down with it. The child is
``python -m edge_classifier.store.probe``: a fresh interpreter (no fork of the caller's
threads or locks), its results read from stdout, a timeout for files that hang the loader.
One child probes a batch of files; when it dies, the file it was on is reported and a new
child takes the rest.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import edge_classifier
from edge_classifier.store.probe import MARKER, ProbeResult, probe

__all__ = ["DEFAULT_TIMEOUT", "PROBE_COMMAND", "probe_files"]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0  # seconds for one file: loading and one inference take well under 1 s
PROBE_COMMAND: tuple[str, ...] = (sys.executable, "-m", "edge_classifier.store.probe")


def probe_files(paths: Sequence[Path], *, smoke: bool = True, timeout: float = DEFAULT_TIMEOUT,
                in_process: bool = False) -> dict[Path, ProbeResult]:
    """A probe result for every path. ``in_process`` skips the child (for trusted files)."""
    if in_process:
        return {path: probe(path, smoke=smoke) for path in paths}
    results: dict[Path, ProbeResult] = {}
    pending = list(paths)
    while pending:
        found, failure = _run_child(pending, smoke, timeout)
        results.update(found)
        pending = [path for path in pending if path not in results]
        if pending and failure is not None:
            culprit = pending.pop(0)  # the child prints each result before it starts the next file
            results[culprit] = ProbeResult(str(culprit), error=f"{culprit}: {failure}")
        elif pending:
            for path in pending:  # exited cleanly without answering: not expected, never loop
                results[path] = ProbeResult(str(path), error=f"{path}: the probe process gave no result")
            pending = []
    return results


def _run_child(paths: list[Path], smoke: bool, timeout: float) -> tuple[dict[Path, ProbeResult], str | None]:
    """Probe ``paths`` in one child: (results by path, why the child failed or None)."""
    command = [*PROBE_COMMAND, *([] if smoke else ["--no-smoke"]), *(str(path) for path in paths)]
    start = time.perf_counter()
    # The child gets the time for every file; a hang shows as a timeout on the file it was on.
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                          env=_child_env(), text=True, errors="replace") as child:
        try:
            stdout, stderr = child.communicate(timeout=timeout * len(paths))
            failure = _exit_reason(child.returncode, stderr)
        except subprocess.TimeoutExpired:
            child.kill()
            stdout, stderr = child.communicate()
            failure = f"loading did not finish within {timeout:g} s (the probe process was killed)"
    log.debug("probed %d model file(s) in a child process in %.1f ms", len(paths), (time.perf_counter() - start) * 1000)
    by_text = {str(path): path for path in paths}
    results: dict[Path, ProbeResult] = {}
    for line in stdout.splitlines():
        if not line.startswith(MARKER):
            continue
        try:
            result = ProbeResult.from_json(line[len(MARKER):])
        except (ValueError, TypeError):
            continue
        if result.path in by_text:
            results[by_text[result.path]] = result
    return results, failure


def _exit_reason(returncode: int, stderr: str) -> str | None:
    if returncode == 0:
        return None
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"the runtime crashed loading it (the probe process was killed by {name})"
    last = next((line for line in reversed(stderr.splitlines()) if line.strip()), "no message")
    return f"the probe process failed with exit status {returncode} ({last.strip()})"


def _child_env() -> dict[str, str]:
    """The caller's environment, with this package importable even when it is not installed."""
    env = dict(os.environ)
    root = str(Path(edge_classifier.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env
