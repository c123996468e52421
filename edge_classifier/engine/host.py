"""One child process for every Edge TPU interpreter of the daemon (a USB Coral serves one process).

:class:`WorkerEngine` with ``shared=True`` does not spawn its own child: it asks the
process-wide :func:`shared_host` for a connection into the one host child, which opens the
model there (libedgetpu lets several interpreters of one process share the device). Each
model keeps its own interpreter, its own shared-memory slots and its own duplex ``Pipe``, so
the per-frame conversation is exactly a lone worker's (``engine/worker_child.py``) and
pipeline threads invoking different models never share a connection.

How a connection gets in: the host child is spawned with one control connection; to add a
model the parent sends ``("open", WorkerRequest)`` on it and then passes the child's end of
a fresh ``Pipe`` as a file descriptor (``multiprocessing.reduction.send_handle``, SCM_RIGHTS).
The host serves each model in its own thread (``engine/host_child.py``).

Lifetime: a :class:`Lease` per connected model. The host lives while a lease is held; the
last ``release`` closes the control connection and reaps the child. When the child dies
(libedgetpu aborts, a kill on a hung invoke), every model's pipe gets EOF at once: all of
them fail together, as they must (the device is gone), and the next ``connect`` starts a
fresh host.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from multiprocessing import reduction
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from edge_classifier.engine.host_child import host
from edge_classifier.engine.worker_child import WorkerRequest

__all__ = ["HOST_ENV", "EngineHost", "Lease", "shared_host"]

# "shared": isolated CPU workers (``model.isolate``) live in the engine host too, as the Edge
# TPU's do; how the host is tested without a TPU (``daemon/models.py`` reads it).
HOST_ENV = "EDGE_CLASSIFIER_WORKER_HOST"

log = logging.getLogger(__name__)

_REAP_GRACE = 2.0  # seconds the host gets to exit once its last model is gone


class _HostProcess:
    """One running host child and how many models hold it."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.control, child_end = context.Pipe(duplex=True)
        self.process: BaseProcess = context.Process(target=host, args=(child_end,),
                                                    name="edge-classifier-engine-host", daemon=True)
        try:
            self.process.start()
        finally:
            # Crossing: the child owns the other end; our copy closed, its death shows up as EOF.
            child_end.close()
        self.leases = 0
        # Every model's worker notices the host's death at once and reaps it: one waitpid at a
        # time, or all but one would read "still running" (ECHILD) for a child that is gone.
        self._wait_lock = threading.Lock()
        log.debug("engine host pid %s started", self.process.pid)

    @property
    def alive(self) -> bool:
        return self.wait(0) is None and not self.control.closed

    def wait(self, timeout: float) -> int | None:
        """The exit code once the host has exited (waiting up to ``timeout`` s), else None."""
        with self._wait_lock:
            if timeout > 0:
                self.process.join(timeout)
            return self.process.exitcode

    def stop(self) -> None:
        """Let the host go (closing the control connection tells it to exit); kill it if it lingers."""
        if not self.control.closed:
            self.control.close()
        process = self.process
        if self.wait(_REAP_GRACE) is None:
            log.debug("engine host pid %s did not exit in %s s; killing it", process.pid, _REAP_GRACE)
            process.kill()
        if self.wait(_REAP_GRACE) is None:
            log.warning("engine host pid %s does not die even when killed; leaving it behind", process.pid)
        else:
            process.close()


class Lease:
    """One model's hold on a host child; ``release`` once, when the model's pipe is closed."""

    def __init__(self, owner: EngineHost, child: _HostProcess) -> None:
        self._owner = owner
        self._child: _HostProcess | None = child
        self.process = child.process

    def wait(self, timeout: float) -> int | None:
        """The host's exit code once it has exited (waiting up to ``timeout`` s), else None."""
        child = self._child
        return child.wait(timeout) if child is not None else self.process.exitcode

    def release(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            self._owner._release(child)


class EngineHost:
    """Hands out connections into one host child, starting a fresh one when the last has died."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # one "open" crossing at a time on the control connection
        self._child: _HostProcess | None = None

    def connect(self, request: WorkerRequest) -> tuple[Connection, Lease]:
        """A pipe to a new serving thread in the host for ``request``, and the lease holding it.

        The conversation on the pipe starts with the child's "ready" or "error", as a lone worker's.
        """
        with self._lock:
            child = self._child
            if child is None or not child.alive:
                if child is not None and child.leases == 0:
                    child.stop()
                child = self._child = _HostProcess()
            conn, child_end = multiprocessing.get_context("spawn").Pipe(duplex=True)
            try:
                # Crossing to the host: the request, then the pipe's other end as a descriptor.
                # The host's main thread reads both in this order; this lock keeps them together.
                child.control.send(("open", request))
                reduction.send_handle(child.control, child_end.fileno(), child.process.pid or 0)
            except OSError:
                # The host died just now: the caller's first wait on ``conn`` sees EOF and says so.
                pass
            finally:
                child_end.close()
            child.leases += 1
            return conn, Lease(self, child)

    @property
    def pid(self) -> int | None:
        child = self._child
        return child.process.pid if child is not None and child.alive else None

    def _release(self, child: _HostProcess) -> None:
        with self._lock:
            child.leases -= 1
            if child.leases > 0:
                return
            if self._child is child:
                self._child = None
        child.stop()


_shared = EngineHost()


def shared_host() -> EngineHost:
    """The process's one host (every Edge TPU interpreter of the daemon lives in its child)."""
    return _shared
