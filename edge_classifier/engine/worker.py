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

IPC: a frame crosses through shared memory (two slots, each an input tensor and an output
tensor, in one input and one output segment created and unlinked by this side, see
``engine/shm.py``); after the set-up messages the pipe carries fixed raw records, a one-byte
"invoke slot k" and a 14-byte "slot k done" (``engine/wire.py``: no pickling, no
``Connection`` framing, no allocation on this side but the returned copy). The pipe, rather
than semaphores, because it also reports the child's death (EOF) and carries error messages,
and ``poll(timeout)`` gives the hang timeout for free.

Pipelining: ``submit`` hands a frame to the child and returns at once; ``collect`` waits for
the oldest submitted frame's answer. With two slots the caller prepares frame N+1 (and
posts N-1) while the child invokes N, so on an Edge TPU the daemon's rate approaches the
invoke rate instead of 1/(prepare + crossing + invoke + post). ``invoke`` is one of each.
Cost of the crossing itself: ``benchmarks/overhead.py`` measures the serial round trip minus
the child's own invoke time.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import multiprocessing
import os
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
from edge_classifier.engine import wire
from edge_classifier.engine.host import Lease, shared_host
from edge_classifier.engine.interpreter import ModelInfo
from edge_classifier.engine.shm import SharedTensor
from edge_classifier.engine.worker_child import ErrorReport, Fault, WorkerRequest, serve
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
    """``Engine``'s interface (``info``, ``invoke``, ``timed_invoke``, ``close``) over a child process,
    plus ``submit``/``collect`` to keep the child busy while the caller works on the next frame.

    One caller at a time (a lock serialises the calls; frames come back in submission order);
    ``close`` may come from any thread and interrupts a wait for an answer (a shared worker's
    waits for it instead: killing the host would fail the other models).
    """

    slots = wire.SLOTS  # frames that may be submitted and not yet collected

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
        self._input: SharedTensor | None = None  # SLOTS input tensors
        self._output: SharedTensor | None = None  # SLOTS output tensors
        self._fd = -1  # the pipe's descriptor, for the raw per-frame records
        self._ins: list[np.ndarray] = []  # each slot's view, made once per child
        self._outs: list[np.ndarray] = []
        self._queued: collections.deque[int] = collections.deque()  # slots submitted, oldest first
        self._reply = bytearray(wire.REPLY.size)  # the child's answers are read into this
        self._reply_iov = (memoryview(self._reply),)  # ... through this, made once
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
            if self._queued:
                raise RuntimeError(f"{self.path.name}: invoke() with frames submitted and not collected")
            self._submit(tensor)
            return self._collect()[0]

    def timed_invoke(self, tensor: np.ndarray) -> tuple[np.ndarray, float]:
        """``invoke`` plus its duration in milliseconds, crossing to the child included."""
        start = time.perf_counter()
        output = self.invoke(tensor)
        return output, (time.perf_counter() - start) * 1000.0

    @property
    def in_flight(self) -> int:
        """Frames submitted and not yet collected."""
        return len(self._queued)

    def submit(self, tensor: np.ndarray) -> None:
        """Hand one input tensor to the child and return without waiting for the answer.

        At most ``slots`` frames may be in flight (RuntimeError beyond). ValueError for a wrong
        tensor (nothing submitted, the worker stays healthy); AcceleratorFailed when the worker
        is dead or its pipe is gone: then every frame in flight is lost with it, and the caller
        gets AcceleratorFailed for each from ``collect``.
        """
        with self._lock:
            if len(self._queued) >= wire.SLOTS and self.alive:
                raise RuntimeError(f"{self.path.name}: {wire.SLOTS} frames in flight already; collect() first")
            self._submit(tensor)

    def collect(self) -> tuple[np.ndarray, float]:
        """The oldest submitted frame's raw output (a copy) and the child's invoke time in ms.

        AcceleratorFailed when the worker is dead or dies, raises or hangs on that frame (the
        timeout runs from this call); RuntimeError when nothing was submitted.
        """
        with self._lock:
            return self._collect()

    def _submit(self, tensor: np.ndarray) -> None:
        if self._closed or self._failure is not None or self._fd < 0:
            raise AcceleratorFailed(self._why_dead())
        queued = self._queued
        slot = (queued[-1] + 1) % wire.SLOTS if queued else 0
        target = self._ins[slot]
        if tensor.shape != target.shape or tensor.dtype != target.dtype:
            raise ValueError(f"{self.info.path.name}: input must be {target.dtype.name} "
                             f"{list(target.shape)}, not {tensor.dtype.name} {list(tensor.shape)}")
        np.copyto(target, tensor)
        # Crossing to the child: after "invoke k" input slot k is the child's until it answers.
        try:
            os.write(self._fd, wire.SLOT_OPS[slot])
        except OSError:
            raise self._fail_dead("invoking") from None
        queued.append(slot)

    def _collect(self) -> tuple[np.ndarray, float]:
        queued = self._queued
        if self._closed or self._failure is not None or self._fd < 0:
            queued.clear()  # lost with the child (_teardown forgot them too)
            raise AcceleratorFailed(self._why_dead())
        if not queued:
            raise RuntimeError(f"{self.path.name}: collect() with no frame submitted")
        slot = queued[0]
        self._await_reply(self.timeout, "invoking")
        kind, answered, length, took = wire.REPLY.unpack_from(self._reply)
        if kind == wire.FAILED:
            text = wire.read_exact(self._fd, length)
            why = text.decode(errors="replace") if text is not None else "(message lost)"
            raise self._fail("raised", f"{self._who()}: invoke failed in the worker: {why}")
        if kind != wire.DONE or answered != slot:
            process = self._process
            if process is not None and not self.shared:
                process.kill()
            raise self._fail("died", f"{self._who()}: answered {kind!r} for slot {answered}, "
                                     f"expected slot {slot}; killed it")
        queued.popleft()
        self.last_child_invoke_us = took * 1e6
        # Crossing back: the child wrote output slot k before "done"; copy it out before a
        # later submit to slot k overwrites it.
        output: np.ndarray = self._outs[slot].copy()
        return output, took * 1000.0

    def inject_fault(self, fault: str) -> None:
        """Stage a fault (``abort``, ``raise``, ``hang``, optionally ``@N``) in the running child."""
        Fault.parse(fault)
        with self._lock:
            if not self.alive or self._fd < 0:
                raise AcceleratorFailed(self._why_dead())
            try:
                # Crossing to the child: records are handled in order, so the fault is staged
                # before the next invoke arrives; no answer is awaited.
                os.write(self._fd, wire.fault_record(fault))
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
            self._input = SharedTensor.create((wire.SLOTS, *info.input.shape), info.input.dtype, "in")
            self._output = SharedTensor.create((wire.SLOTS, *info.output.shape), info.output.dtype, "out")
            conn.send(("attach", self._input.name, self._output.name, wire.SLOTS))
            self._await(self.start_timeout, "attaching the shared memory")
            # From here on the pipe carries raw records only (engine/wire.py).
            self._ins, self._outs = list(self._input.array), list(self._output.array)
            self._fd = conn.fileno()
        except BaseException:
            if child_end is not None:
                child_end.close()
            self._teardown()
            raise
        self._info = info
        log.info("engine worker pid %s: %s on %s", process.pid, info.path.name, info.accelerator)

    def _await(self, timeout: float, doing: str) -> tuple[Any, ...]:
        """The child's next set-up message (pickled); AcceleratorFailed when it dies or stays
        silent ``timeout`` s."""
        conn = self._conn
        assert conn is not None
        self._wait_readable(timeout, doing)
        try:
            message: tuple[Any, ...] = conn.recv()
        except (EOFError, OSError):
            raise self._fail_dead(doing) from None
        return message

    def _await_reply(self, timeout: float, doing: str) -> None:
        """The child's next per-frame record, read into ``self._reply``."""
        self._wait_readable(timeout, doing)
        try:
            got = os.readv(self._fd, self._reply_iov)
            whole = got == wire.REPLY.size or (got > 0 and wire.read_into(self._fd, self._reply_iov[0][got:]))
        except OSError:
            whole = False
        if not whole:
            raise self._fail_dead(doing)

    def _wait_readable(self, timeout: float, doing: str) -> None:
        # Crossing: the only place this side waits for the child. poll() wakes on a message,
        # on EOF (the child died: the kernel closed its end) or after the timeout.
        if not self._poller.poll(timeout * 1000.0):
            process = self._process
            if process is not None:
                process.kill()
            raise self._fail("timeout", f"{self._who()}: no answer within {timeout:g} s while {doing}; killed it")

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
        self._fd = -1
        self._ins, self._outs = [], []  # the views go before the segments they map
        self._queued.clear()  # frames in flight are lost with the child
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
