"""Hot swap: a new model is fetched, checked and loaded in the background, then switched in
between two frames, while the running model keeps classifying.

Thread ``model-loader`` takes one request at a time (from the ``model`` command, the store
watcher or a reload) and does the slow part: resolve the name inside the store or download
the URL (sha256 mandatory) into the quarantine folder outside the store, refuse files whose
role is not a classifier (``store.roles``), validate the file in a child process (a hostile
file can only crash the child; a download is validated in quarantine and moved into the
store only when it passed, never over a file in use), open the engines and run one smoke
inference. It hands the ready set to
the main loop through the control queue (``SwapReady``), or the reason it was rejected
(``SwapRejected``); the main loop switches, and confirms once the new model has produced a
result (the old one stays loaded until then, and comes back if the new one fails).
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge_classifier.config.schema import Config
from edge_classifier.control.requests import Request
from edge_classifier.daemon.models import open_model_set, plan_model
from edge_classifier.daemon.modelsets import ModelSet
from edge_classifier.errors import EdgeClassifierError
from edge_classifier.store.fetch import admit, download, fetch_signature, quarantine_dir
from edge_classifier.store.roles import not_a_classifier
from edge_classifier.store.signing import check_signature, signature_path
from edge_classifier.store.store import resolve_name, sidecar_labels
from edge_classifier.store.validate import validate_model

__all__ = ["SwapReady", "SwapRejected", "SwapRequest", "Swapper"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class SwapRequest:
    trigger: str  # "command" | "watch" | "reload"
    name: str | None = None  # a file in the store
    url: str | None = None  # a download (with sha256)
    sha256: str | None = None
    path: Path | None = None  # a path from the configuration (reload)
    config: Config | None = None  # the configuration to open it with (reload), else the running one
    request: Request | None = None  # the command to reply to
    command: str = "model"
    source: str | None = None  # swap this source's model only (it leaves the set it shared)
    key: str | None = None  # reload this set in place (a source's model replaced in the store)


@dataclasses.dataclass(frozen=True, slots=True)
class SwapReady:
    request: SwapRequest
    models: ModelSet
    timings: dict[str, float]


@dataclasses.dataclass(frozen=True, slots=True)
class SwapRejected:
    request: SwapRequest
    reason: str
    timings: dict[str, float]


class Swapper:
    """Runs swap requests one at a time in thread ``model-loader``."""

    def __init__(self, config: Callable[[], Config], deliver: Callable[[Any], None],
                 protected: Callable[[], set[Path]] = set) -> None:
        self._config = config
        self._protected = protected  # files in use (called in model-loader: reads one attribute)
        self._deliver = deliver  # crossing: puts results on the daemon's control queue
        self._queue: queue.SimpleQueue[SwapRequest | None] = queue.SimpleQueue()
        self._busy = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-loader", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        return self._busy.is_set()

    def submit(self, request: SwapRequest) -> bool:
        """Queue a swap; False when one is already under way (the caller rejects this one)."""
        if self._busy.is_set():
            return False
        self._busy.set()
        self._queue.put(request)
        return True

    def done(self) -> None:
        """The main loop finished the swap (confirmed or rolled back): take the next."""
        self._busy.clear()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(5)

    def _run(self) -> None:
        while (request := self._queue.get()) is not None:
            timings: dict[str, float] = {}
            try:
                models = self._prepare(request, timings)
            except EdgeClassifierError as exc:
                self._deliver(SwapRejected(request, str(exc), timings))
            except Exception as exc:  # a bug must not kill the loader thread
                log.exception("model swap failed")
                self._deliver(SwapRejected(request, f"{type(exc).__name__}: {exc}", timings))
            else:
                self._deliver(SwapReady(request, models, timings))

    def _prepare(self, request: SwapRequest, timings: dict[str, float]) -> ModelSet:
        config = request.config or self._config()
        model = config.model
        store = Path(model.dir)
        max_bytes = int(model.max_size_mb * 1024 * 1024)
        start = time.perf_counter()
        held = None
        if request.url is not None:
            files = Path(model.file_urls) if model.file_urls else False
            held = download(request.url, quarantine_dir(store, model.quarantine_dir), sha256=request.sha256 or "",
                            max_bytes=max_bytes, deadline=model.download_timeout, min_rate=model.download_min_rate,
                            allow_files=files)
            timings["download_ms"] = _ms(start)
            try:
                path = resolve_name(store, held.name, must_exist=False)  # where it would go: a .tflite name
            except BaseException:
                held.unlink(missing_ok=True)
                raise
        elif request.name is not None:
            path = resolve_name(store, request.name)
        else:
            assert request.path is not None
            path = request.path
        signature = signature_path(held) if held is not None else None
        try:
            role = not_a_classifier(held or path, config)
            if role is not None:
                raise _Rejected(role)
            if model.trusted_keys:  # signed by a pinned key, or refused (store.signing)
                if held is not None and request.url is not None:
                    fetch_signature(request.url, held, allow_files=Path(model.file_urls) if model.file_urls else False)
                check_signature(held or path, model.trusted_keys)
            labels = model.labels if request.path is not None and model.labels else sidecar_labels(path)
            start = time.perf_counter()
            report = validate_model(held or path, labels=labels, max_bytes=max_bytes,
                                    expected_sha256=request.sha256, twin_dir=store if held else None)
            timings["validate_ms"] = _ms(start)
            if not report.ok:
                raise _Rejected("; ".join(report.problems))
            if held is not None:
                path = admit(held, store, protected=self._protected())  # validated: into the store
                if signature is not None and signature.is_file():
                    admit(signature, store, any_name=True)
        finally:
            if held is not None:
                held.unlink(missing_ok=True)  # refused (or admitted: then already moved away)
            if signature is not None:
                signature.unlink(missing_ok=True)
        start = time.perf_counter()
        plan = plan_model(model, path, labels=labels or None)
        models = open_model_set(model, config.classify, plan=plan)
        timings["load_ms"] = _ms(start)
        start = time.perf_counter()
        try:
            for classifier in models.classifiers:  # every engine answers before any frame goes to it
                shape = classifier.info.input.shape
                classifier.engine.invoke(np.zeros(shape, classifier.info.input.dtype))
        except Exception:
            models.close()
            raise
        timings["smoke_ms"] = _ms(start)
        return models


class _Rejected(EdgeClassifierError):
    pass


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 1)
