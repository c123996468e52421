"""The engine worker's child process: one ``Engine`` served over a pipe and shared memory.

:func:`serve` is the ``spawn`` target of :class:`edge_classifier.engine.worker.WorkerEngine`;
:func:`serve_model`, the conversation below, is also what each model's thread runs in the
engine host (``engine/host_child.py``: every Edge TPU model of the daemon in one process).
It opens the model with ``Engine.open`` here, in the child, so the Edge TPU delegate
(libedgetpu) lives only in this process: when libedgetpu aborts on a USB transfer error,
this process dies and the parent carries on.

The conversation on the pipe starts in ``Connection``'s framing, pickled tuples::

    child  -> ("ready", ModelInfo) | ("error", ErrorReport)       after Engine.open
    parent -> ("attach", input_name, output_name, slots)          the shared memory slots
    child  -> ("attached",)

and then leaves it: every later message is a raw record on the descriptor (``engine/wire.py``):
"invoke slot k", "slot k done in s seconds" or "slot k failed: RuntimeError ...", and the
parent's "stage a fault". Pixel data never goes through the pipe: each segment holds
``slots`` tensors, and slot k's input and output belong to the child from "invoke k" until
its answer. The parent may send "invoke 1" while slot 0 is still invoking: the child answers
in order, so the next frame waits in the pipe instead of behind the parent's preparation.

Fault injection (tests and field drills) copies the real failures: ``abort`` calls
``os.abort()`` as libedgetpu does, ``raise`` raises the RuntimeError a failed delegate
invoke raises, ``hang`` never returns, like a wedged USB transfer. ``abort-open`` and
``hang-open`` do the same while the model loads. A fault fires on the first invoke after
``@N`` good ones (``raise@10``; default ``@0``). It comes from the constructor, a
``("fault", ...)`` message or ``$EDGE_CLASSIFIER_WORKER_FAULT`` (read by every child).

A pace drill, ``$EDGE_CLASSIFIER_WORKER_PACE_MS``: every invoke takes at least that long (the
real invoke, then a sleep for the rest of the time, which costs no CPU), like an accelerator
whose invoke is that long and runs off the host's CPU. With a CPU model it shows whether the
daemon keeps a Coral-speed device busy (``benchmarks/worker_overhead.py --pace-ms``); the
answers are still the real model's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import time
from multiprocessing.connection import Connection
from typing import Any

from edge_classifier.engine import wire
from edge_classifier.engine.interpreter import Engine
from edge_classifier.engine.shm import SharedTensor
from edge_classifier.errors import ConfigError, CustomOpError, EdgeClassifierError

__all__ = ["FAULTS", "FAULT_ENV", "FAULT_FILE_ENV", "PACE_ENV", "ErrorReport", "Fault", "WorkerRequest",
           "ignore_stop_signals", "serve", "serve_model"]

FAULT_ENV = "EDGE_CLASSIFIER_WORKER_FAULT"
# A file whose content is a fault, read by each new child while the file exists: a test can
# make a device fail and, by deleting the file, let it recover.
FAULT_FILE_ENV = "EDGE_CLASSIFIER_WORKER_FAULT_FILE"
FAULTS = ("abort", "raise", "hang", "abort-open", "hang-open")
PACE_ENV = "EDGE_CLASSIFIER_WORKER_PACE_MS"


@dataclasses.dataclass(frozen=True, slots=True)
class Fault:
    """A failure to stage: ``kind`` (one of FAULTS) after ``after`` good invokes."""

    kind: str
    after: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULTS:
            raise ValueError(f"Invalid worker fault: {self.kind!r} (expected one of {', '.join(FAULTS)})")
        if self.after < 0:
            raise ValueError(f"Invalid worker fault count: {self.after}")

    @classmethod
    def parse(cls, text: str) -> Fault:
        """``kind`` or ``kind@N``; ValueError naming the bad text."""
        kind, _, after = text.strip().partition("@")
        try:
            count = int(after) if after else 0
        except ValueError:
            raise ValueError(f"Invalid worker fault: {text!r} (expected KIND or KIND@N)") from None
        return cls(kind, count)

    @property
    def on_open(self) -> bool:
        return self.kind.endswith("-open")

    def fire(self) -> None:
        """Fail the way the real thing does (only ``raise`` returns, by raising)."""
        if self.kind.startswith("abort"):
            os.abort()  # SIGABRT, no clean-up: what libedgetpu does on a USB transfer error
        if self.kind.startswith("hang"):
            while True:  # a transfer that never completes
                time.sleep(3600)
        raise RuntimeError("Node number 0 (EdgeTpuDelegateForCustomOp) failed to invoke. (injected fault)")


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerRequest:
    """What the child opens: the arguments of ``Engine.open`` and a staged fault."""

    path: str
    accelerator: str
    device: str
    threads: int
    fault: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ErrorReport:
    """An error from ``Engine.open`` in the child, in a form that pickles whatever its class."""

    kind: str  # the class name in edge_classifier.errors, or "" for anything else
    message: str
    problems: tuple[str, ...] = ()  # ConfigError
    source: str = ""  # ConfigError
    op: str = ""  # CustomOpError

    @classmethod
    def of(cls, exc: BaseException) -> ErrorReport:
        if isinstance(exc, ConfigError):
            return cls("ConfigError", str(exc), exc.problems, exc.source)
        if isinstance(exc, CustomOpError):
            return cls("CustomOpError", str(exc), op=exc.op)
        if isinstance(exc, EdgeClassifierError):
            return cls(type(exc).__name__, str(exc))
        return cls("", f"{type(exc).__name__}: {exc}")


def serve(conn: Connection, request: WorkerRequest) -> None:
    """The lone child's main: serve one model until told to stop."""
    ignore_stop_signals()
    serve_model(conn, request)


def ignore_stop_signals() -> None:
    """The parent decides when a worker process ends (it closes the pipe, or kills it): a Ctrl-C
    or a SIGTERM sent to the whole process group or cgroup must not kill a frame in flight."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def serve_model(conn: Connection, request: WorkerRequest,
                device: contextlib.AbstractContextManager[Any] | None = None) -> None:
    """Open the engine, attach the slots, answer invokes until told to stop; each invoke holds
    ``device`` (the engine host's lock of the Edge TPU it runs on; none in a lone worker)."""
    try:
        fault = _staged_fault(request)
        pace = _pace()
        if fault is not None and fault.on_open:
            fault.fire()
        engine = Engine.open(request.path, accelerator=request.accelerator, device=request.device,
                             threads=request.threads)
    except Exception as exc:
        _send(conn, ("error", ErrorReport.of(exc)))
        conn.close()
        return
    slots: list[SharedTensor] = []
    try:
        if not _send(conn, ("ready", engine.info)):
            return
        message = _recv(conn)
        if message is None or message[0] != "attach":
            return
        info = engine.info
        count = int(message[3])
        slots.append(SharedTensor.attach(message[1], (count, *info.input.shape), info.input.dtype))
        slots.append(SharedTensor.attach(message[2], (count, *info.output.shape), info.output.dtype))
        if _send(conn, ("attached",)):
            _answer_invokes(conn.fileno(), engine, slots[0], slots[1], fault, device or contextlib.nullcontext(),
                            pace)
    finally:
        for slot in slots:
            slot.close()
        engine.close()
        conn.close()


def _answer_invokes(fd: int, engine: Engine, inputs: SharedTensor, outputs: SharedTensor,
                    fault: Fault | None, device: contextlib.AbstractContextManager[Any],
                    pace: float = 0.0) -> None:
    """Answer invoke records in order until the parent says quit or goes (EOF); each invoke
    takes at least ``pace`` seconds (the pace drill)."""
    ins = list(inputs.array)  # each slot's view, made once
    outs = list(outputs.array)
    count = len(ins)
    invoke, clock, done = engine.invoke, time.perf_counter, wire.REPLY.pack
    good = 0
    while True:
        try:
            op = os.read(fd, 1)  # one record's first byte; 1-byte bytes are CPython singletons
        except OSError:
            return
        if not op:
            return
        slot = op[0]
        if slot < count:
            # Crossing: the parent wrote input slot ``slot`` before the record and reads output
            # slot ``slot`` only after our answer; neither touches a slot the other owns.
            try:
                with device:
                    if fault is not None and not fault.on_open and good >= fault.after:
                        fault.fire()
                    start = clock()
                    outs[slot][...] = invoke(ins[slot])
                    took = clock() - start
                    if took < pace:
                        time.sleep(pace - took)  # the pace drill: the rest of a slower device's invoke
                        took = clock() - start
            except Exception as exc:
                text = f"{type(exc).__name__}: {exc}".encode()
                reply = done(wire.FAILED, slot, len(text), 0.0) + text
            else:
                good += 1
                reply = done(wire.DONE, slot, 0, took)
            if not _write(fd, reply):
                return
        elif op == wire.FAULT:
            length = wire.read_length(fd)
            data = wire.read_exact(fd, length) if length is not None else None
            if data is None:
                return
            fault, good = Fault.parse(data.decode()), 0
        else:  # QUIT, or anything this side does not know: stop rather than guess
            return


def _write(fd: int, data: bytes) -> bool:
    try:
        os.write(fd, data)  # a few bytes on a socket with room: written whole
    except OSError:  # the parent closed its end: nobody is listening any more
        return False
    return True


def _pace() -> float:
    """The pace drill's seconds per invoke (0: off); ConfigError naming a bad value."""
    text = os.environ.get(PACE_ENV, "").strip()
    if not text:
        return 0.0
    try:
        milliseconds = float(text)
    except ValueError:
        milliseconds = -1.0
    if not 0.0 <= milliseconds <= 10_000.0:
        raise ConfigError([f"{PACE_ENV}: {text!r} is not a number of milliseconds from 0 to 10000"])
    return milliseconds / 1000.0


def _staged_fault(request: WorkerRequest) -> Fault | None:
    text = request.fault or os.environ.get(FAULT_ENV, "")
    fault_file = os.environ.get(FAULT_FILE_ENV)
    if not text and fault_file:
        try:
            with open(fault_file, encoding="utf-8") as handle:
                text = handle.read().strip()
        except FileNotFoundError:
            text = ""
    if not text:
        return None
    try:
        return Fault.parse(text)
    except ValueError as exc:
        where = "fault" if request.fault else FAULT_ENV
        raise ConfigError([f"{where}: {exc}"]) from None


def _recv(conn: Connection) -> tuple[Any, ...] | None:
    """The next (pickled) set-up message, or None when the parent has gone (its end closed)."""
    try:
        message: tuple[Any, ...] = conn.recv()
    except (EOFError, OSError):
        return None
    return message


def _send(conn: Connection, message: tuple[Any, ...]) -> bool:
    try:
        conn.send(message)
    except OSError:  # the parent closed its end: nobody is listening any more
        return False
    return True
