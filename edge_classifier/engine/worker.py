"""An ``Engine`` in a supervised child process, so a crash in the accelerator is an error.

libedgetpu calls ``abort()`` when a USB Coral hits a transfer error, which kills the whole
process ("Fatal Python error: Aborted"), and a wedged device can block ``invoke`` for
ever. :class:`WorkerEngine` runs the interpreter (``Engine.open``, delegate and all) in a
child started with ``spawn`` (never ``fork``: the daemon has threads), and turns each of
those failures into :class:`AcceleratorFailed` in the caller, promptly:

- the child dies (abort, signal, exit): its end of the pipe closes, the wait wakes at once,
  and the message names the exit code or signal;
- ``invoke`` raises in the child: the exception's type and message come back;
- no answer within ``timeout`` seconds: the child is killed (SIGKILL).

After a failure the worker is dead until :meth:`WorkerEngine.restart` starts a fresh
child (which may load another twin: with ``accelerator="auto"`` and the TPU gone, the CPU
model). The caller decides about fallback; this class only reports and restarts.

With ``shared=True`` the model runs in the daemon's one engine host child instead of a child
of its own (``engine/host.py``: a USB Coral serves one process, so every Edge TPU model must
live in the same one). The conversation, the slots and the failures are the same; what
differs is that the child is not this worker's alone: its death fails every shared worker at
once (the device is gone), a timeout kills it for all of them (a hung device hangs them all
anyway), and ``close``/``restart`` let go of this model's connection, not of the child.

IPC: a frame crosses through shared memory (one input slot sized to the input tensor, one
output slot, created and unlinked by this side, see ``engine/shm.py``) and a duplex
``Pipe`` carries a one-byte "invoke" and a nine-byte "done" (not pickled). The pipe, rather
than semaphores, because it also reports the child's death (EOF) and carries error messages,
and ``poll(timeout)`` gives the hang timeout for free. Cost: one pipe round trip per frame
(``benchmarks/overhead.py`` measures it: the round trip minus the child's own invoke time).
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import pickle
import select
import signal
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import numpy as np

from edge_classifier import errors
from edge_classifier.engine.host import Lease, shared_host
from edge_classifier.engine.interpreter import ModelInfo
from edge_classifier.engine.shm import SharedTensor
from edge_classifier.engine.worker_child import INVOKE, ErrorReport, Fault, WorkerRequest, done_seconds, serve
from edge_classifier.errors import AcceleratorFailed, ConfigError, CustomOpError, EdgeClassifierError

__all__ = ["WorkerEngine", "WorkerFailure"]

log = logging.getLogger(__name__)

_REAP_GRACE = 2.0  # seconds a child told to stop gets before it is killed


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerFailure:
    """Why the worker is dead: ``kind`` is "died", "raised" or "timeout"."""

    kind: str
    message: str
    at: float  # time.monotonic() when it was noticed


class WorkerEngine:
    """``Engine``'s interface (``info``, ``invoke``, ``timed_invoke``, ``close``) over a child process.

    One caller invokes at a time (a lock serialises them); ``close`` may come from any thread
    and interrupts an invoke that is waiting (a shared worker's waits for it instead: killing
    the host would fail the other models).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        accelerator: str = "auto",
        device: str = "",
        threads: int = 1,
        timeout: float = 10.0,
        start_timeout: float = 60.0,
        fault: str | None = None,
        shared: bool = False,
    ) -> None:
        if timeout <= 0 or start_timeout <= 0:
            raise ValueError(f"Invalid worker timeouts: timeout={timeout}, start_timeout={start_timeout}")
        if fault is not None:
            Fault.parse(fault)
        self.path = Path(path)
        self.accelerator = accelerator
        self.device = device
        self.threads = threads
        self.timeout = timeout
        self.start_timeout = start_timeout
        self.shared = shared
        self.restarts = 0
        self.last_child_invoke_us = 0.0  # the last invoke's time in the child (the rest is the crossing)
        self._lock = threading.Lock()
        self._closed = False
        self._failure: WorkerFailure | None = None
        self._conn: Connection | None = None
        self._poller = select.poll()
        self._process: BaseProcess | None = None
        self._lease: Lease | None = None  # a shared worker's hold on the engine host
        self._input: SharedTensor | None = None
        self._output: SharedTensor | None = None
        self._info: ModelInfo | None = None
        self._start(fault)

    @classmethod
    def open(cls, path: str | Path, **options: Any) -> WorkerEngine:
        """Same as the constructor; mirrors ``Engine.open``."""
        return cls(path, **options)

    @property
    def info(self) -> ModelInfo:
        """What the (last successfully started) child runs."""
        assert self._info is not None  # set by the constructor, which raises otherwise
        return self._info

    @property
    def alive(self) -> bool:
        """True while a healthy child answers invokes."""
        return self._conn is not None and self._failure is None and not self._closed

    @property
    def failure(self) -> WorkerFailure | None:
        """The failure that killed the current worker, None while it is healthy."""
        return self._failure

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None else None

    def invoke(self, tensor: np.ndarray) -> np.ndarray:
        """Run the model in the child on one input tensor; returns a copy of the raw output.

        ValueError for a tensor of the wrong shape or type (the worker stays healthy);
        AcceleratorFailed when the worker is dead or dies, raises or hangs on this frame.
        """
        with self._lock:
            conn, tensor_in, tensor_out = self._conn, self._input, self._output
            if self._closed or self._failure is not None or conn is None or tensor_in is None or tensor_out is None:
                raise AcceleratorFailed(self._why_dead())
            if tensor.shape != tensor_in.shape or tensor.dtype != tensor_in.dtype:
                raise ValueError(f"{self.info.path.name}: input must be {tensor_in.dtype.name} "
                                 f"{list(tensor_in.shape)}, not {tensor.dtype.name} {list(tensor.shape)}")
            np.copyto(tensor_in.array, tensor)
            # Crossing to the child: after "invoke" the input slot is the child's until it answers.
            try:
                conn.send_bytes(INVOKE)
            except OSError:
                raise self._fail_dead("invoking") from None
            data = self._await_bytes(self.timeout, "invoking")
            took = done_seconds(data)
            if took is None:
                reply = pickle.loads(data)
                raise self._fail("raised", f"{self._who()}: invoke failed in the worker: {reply[1]}")
            self.last_child_invoke_us = took * 1e6
            # Crossing back: the child wrote the output slot before "done"; copy it out before
            # the next invoke overwrites it.
            return tensor_out.array.copy()

    def timed_invoke(self, tensor: np.ndarray) -> tuple[np.ndarray, float]:
        """``invoke`` plus its duration in milliseconds, crossing to the child included."""
        start = time.perf_counter()
        output = self.invoke(tensor)
        return output, (time.perf_counter() - start) * 1000.0

    def inject_fault(self, fault: str) -> None:
        """Stage a fault (``abort``, ``raise``, ``hang``, optionally ``@N``) in the running child."""
        Fault.parse(fault)
        with self._lock:
            if not self.alive or self._conn is None:
                raise AcceleratorFailed(self._why_dead())
            try:
                # Crossing to the child: messages are handled in order, so the fault is staged
                # before the next invoke arrives; no answer is awaited.
                self._conn.send(("fault", fault))
            except OSError:
                raise self._fail_dead("staging a fault") from None

    def restart(self, fault: str | None = None) -> None:
        """Stop the current child (if any) and start a fresh one that loads the model again.

        Raises AcceleratorFailed, AcceleratorError or the model's error when the new child
        cannot serve; the worker then stays dead.
        """
        if fault is not None:
            Fault.parse(fault)
        with self._lock:
            if self._closed:
                raise AcceleratorFailed(self._why_dead())
            self._teardown()
            self._failure = None
            self.restarts += 1
            self._start(fault)

    def close(self) -> None:
        """Stop the child and free the shared memory. Idempotent; safe from any thread."""
        if self._closed:
            return
        self._closed = True
        if not self._lock.acquire(blocking=False):
            # Crossing: another thread waits in invoke(); killing the child wakes it (EOF),
            # it raises AcceleratorFailed and lets go of the lock. The engine host serves other
            # models too: a shared worker waits instead (the invoke ends within its timeout).
            process = self._process
            if not self.shared and process is not None and process.exitcode is None:
                process.kill()
            self._lock.acquire()
        try:
            self._teardown()
        finally:
            self._lock.release()

    def __enter__(self) -> WorkerEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the child's life --------------------------------------------------------------

    def _start(self, fault: str | None) -> None:
        """Spawn a child (or connect to the engine host), wait for its model, hand it the slots."""
        request = WorkerRequest(str(self.path), self.accelerator, self.device, self.threads, fault)
        child_end: Connection | None = None
        if self.shared:
            conn, self._lease = shared_host().connect(request)
            process = self._lease.process
        else:
            context = multiprocessing.get_context("spawn")
            conn, child_end = context.Pipe(duplex=True)
            process = context.Process(target=serve, args=(child_end, request), name="edge-classifier-engine",
                                      daemon=True)
        self._conn, self._process = conn, process
        # One poll object per child: Connection.poll() builds a selector on every call, which
        # was a fifth of the crossing's own cost.
        self._poller = select.poll()
        self._poller.register(conn.fileno(), select.POLLIN)
        try:
            if child_end is not None:
                process.start()
                # Crossing: the child owns the other end now; closing our copy of it is what makes
                # the child's death show up here as EOF.
                child_end.close()
            log.debug("engine worker pid %s: loading %s (accelerator %s)", process.pid, self.path, self.accelerator)
            reply = self._await(self.start_timeout, "loading the model")
            if reply[0] == "error":
                raise _rebuild(reply[1])
            info: ModelInfo = reply[1]
            self._input = SharedTensor.create(info.input.shape, info.input.dtype, "in")
            self._output = SharedTensor.create(info.output.shape, info.output.dtype, "out")
            conn.send(("attach", self._input.name, self._output.name))
            self._await(self.start_timeout, "attaching the shared memory")
        except BaseException:
            if child_end is not None:
                child_end.close()
            self._teardown()
            raise
        self._info = info
        log.info("engine worker pid %s: %s on %s", process.pid, info.path.name, info.accelerator)

    def _await(self, timeout: float, doing: str) -> tuple[Any, ...]:
        """The child's next (pickled) message; AcceleratorFailed when it dies or stays silent ``timeout`` s."""
        message: tuple[Any, ...] = pickle.loads(self._await_bytes(timeout, doing))
        return message

    def _await_bytes(self, timeout: float, doing: str) -> bytes:
        """The child's next message as bytes (see worker_child's protocol)."""
        conn = self._conn
        assert conn is not None
        # Crossing: the only place this side waits for the child. poll() wakes on a message,
        # on EOF (the child died: the kernel closed its end) or after the timeout.
        if not self._poller.poll(timeout * 1000.0):
            process = self._process
            if process is not None:
                process.kill()
            raise self._fail("timeout", f"{self._who()}: no answer within {timeout:g} s while {doing}; killed it")
        try:
            return conn.recv_bytes()
        except (EOFError, OSError):
            raise self._fail_dead(doing) from None

    def _fail_dead(self, doing: str) -> AcceleratorFailed:
        process, lease = self._process, self._lease
        code = None
        if lease is not None:
            code = lease.wait(_REAP_GRACE)
        elif process is not None:
            process.join(_REAP_GRACE)
            code = process.exitcode
        return self._fail("died", f"{self._who()}: died while {doing}: {_describe_exit(code)}")

    def _fail(self, kind: str, message: str) -> AcceleratorFailed:
        """Mark the worker dead, free what it held, and return the error to raise."""
        if self._closed:
            message = f"{message} (closed meanwhile)"
        self._failure = WorkerFailure(kind, message, time.monotonic())
        self._teardown()
        return AcceleratorFailed(message)

    def _teardown(self) -> None:
        """Free the shared memory and close the pipe now; let the child go (killed if it lingers).

        The pipe closing is the child's signal to exit; one that does not within the grace
        time (hung in a driver) is killed. Shared memory is unlinked here in every case.
        """
        conn, process, lease = self._conn, self._process, self._lease
        self._conn = self._process = self._lease = None
        for slot in (self._input, self._output):
            if slot is not None:
                slot.close()
        self._input = self._output = None
        if conn is not None:
            conn.close()
        if lease is not None:
            # Shared: closing our pipe ends this model's thread in the host; the host itself
            # goes with its last model (the lease reaps it, killed if it lingers).
            lease.release()
        elif process is not None:
            if process.exitcode is None and process.pid is not None:
                process.join(_REAP_GRACE)
                if process.exitcode is None:
                    log.debug("engine worker pid %s did not exit in %s s; killing it", process.pid, _REAP_GRACE)
                    process.kill()
                    process.join(_REAP_GRACE)
            if process.exitcode is None and process.pid is not None:
                # Killed but not gone: stuck in the kernel (a wedged USB transfer). Waiting for it
                # would hang the caller too; leave it to the kernel and go on without it.
                log.warning("engine worker pid %s does not die even when killed; leaving it behind", process.pid)
            elif process.pid is not None:
                process.close()

    def _who(self) -> str:
        process = self._process
        pid = f"pid {process.pid}" if process is not None else "not running"
        info = self._info
        what = f"{info.path.name} on {info.accelerator}" if info is not None else self.path.name
        return f"engine worker ({pid}, {what})"

    def _why_dead(self) -> str:
        if self._closed:
            return f"engine worker for {self.path.name}: closed"
        if self._failure is not None:
            return f"{self._failure.message}; dead until restart()"
        return f"engine worker for {self.path.name}: not running; call restart()"


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "closed its pipe but is still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def _rebuild(report: ErrorReport) -> EdgeClassifierError:
    """The child's Engine.open error as the same class here (AcceleratorError stays AcceleratorError)."""
    if report.kind == "ConfigError":
        return ConfigError(report.problems, report.source)
    if report.kind == "CustomOpError":
        return CustomOpError(report.message, report.op)
    cls = getattr(errors, report.kind, None) if report.kind else None
    if isinstance(cls, type) and issubclass(cls, EdgeClassifierError):
        return cls(report.message)
    return AcceleratorFailed(f"engine worker: opening the model failed: {report.message}")
