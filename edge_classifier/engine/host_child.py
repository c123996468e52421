"""The engine host's child process: many models' ``Engine``s, one thread and one pipe each.

:func:`host` is the ``spawn`` target of :class:`edge_classifier.engine.host.EngineHost`. Its
main thread reads the control connection: each ``("open", WorkerRequest)`` is followed by a
file descriptor (the child's end of that model's pipe, see ``engine/host.py``), and a thread
``engine-<model>`` serves the model on it with :func:`serve_model`, the lone worker's own
conversation. When the parent closes the control connection (its last model is gone) the
host exits.

Invokes: each model has its own interpreter and pipe; invokes on the same device (the
request's ``device``, ``""`` = the default one) take that device's lock, so one Edge TPU
runs one invoke at a time whatever libedgetpu does with concurrent callers, while models on
different Coral devices still run in parallel.
"""

from __future__ import annotations

import threading
from multiprocessing import reduction
from multiprocessing.connection import Connection

from edge_classifier.engine.worker_child import WorkerRequest, ignore_stop_signals, serve_model

__all__ = ["host"]

_JOIN_GRACE = 2.0  # seconds each serving thread gets to close its engine at exit


def host(control: Connection) -> None:
    """The host child's main: start a serving thread per "open" until the parent lets go."""
    ignore_stop_signals()
    devices: dict[str, threading.Lock] = {}
    threads: list[threading.Thread] = []
    try:
        while True:
            try:
                message = control.recv()
                # Crossing from the parent: the descriptor comes right after its "open".
                fd = reduction.recv_handle(control)
            except (EOFError, OSError):
                break
            request: WorkerRequest = message[1]
            lock = devices.setdefault(request.device, threading.Lock())
            thread = threading.Thread(target=serve_model, args=(Connection(fd), request, lock),
                                      name=f"engine-{request.path.rsplit('/', 1)[-1]}", daemon=True)
            thread.start()
            threads = [t for t in threads if t.is_alive()] + [thread]
    finally:
        control.close()
        for thread in threads:
            thread.join(_JOIN_GRACE)
