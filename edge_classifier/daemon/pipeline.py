"""The frame pipeline: capture -> N inference workers -> results in frame order.

Several single-threaded interpreters working on alternate frames use N cores better
than one interpreter with N threads (on a 2-core x86-64: about 625 invokes/s against
500-600 for MobileNetV2), and each worker also preprocesses its own frame, so resizing
one frame overlaps the inference of the previous one.

Threads and crossings:

- ``infer-0`` .. ``infer-{n-1}``: each takes the next frame from the capture (under a lock,
  which also numbers it), prepares, invokes and postprocesses it with its own engine;
- the reorder buffer hands finished results to ``emit`` strictly in frame order; ``emit``
  runs in whichever worker completes the next due frame, so it must be quick and
  non-blocking (the publisher only enqueues).

The models in use live in a :class:`ModelSet` that can be replaced between two frames
(``swap``); a worker picks the current set when it takes a frame, so every frame is
classified entirely by one model.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from edge_classifier.classifier import Classifier
from edge_classifier.engine.interpreter import ModelInfo
from edge_classifier.postprocess.smoothing import ScoreWindow
from edge_classifier.results import Classification
from edge_classifier.source.base import Frame
from edge_classifier.source.capture import Capture

__all__ = ["ModelSet", "Outcome", "Pipeline"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """One frame's way through the pipeline."""

    seq: int  # pipeline order, from 0
    frame: Frame
    classification: Classification | None
    error: str | None = None  # why the frame could not be classified
    scores: np.ndarray | None = None  # every class's score, kept only while smoothing
    classifier: Classifier | None = None


class ModelSet:
    """One classifier per worker, all on the same model; replaced as a whole.

    A set that was swapped out is ``retire``d: it closes itself once the last frame a
    worker took with it is done, so no interpreter is freed under a running invoke.
    """

    def __init__(self, classifiers: Sequence[Classifier]) -> None:
        if not classifiers:
            raise ValueError("a model set needs at least one classifier")
        self.classifiers = tuple(classifiers)
        self._lock = threading.Lock()
        self._in_use = 0
        self._retired = False
        self._closed = False

    @property
    def info(self) -> ModelInfo:
        return self.classifiers[0].info

    def acquire(self) -> None:
        with self._lock:
            self._in_use += 1

    def release(self) -> None:
        with self._lock:
            self._in_use -= 1
            close = self._retired and self._in_use == 0
        if close:
            self.close()

    def retire(self) -> None:
        """Close as soon as no frame is using this set any more."""
        with self._lock:
            self._retired = True
            close = self._in_use == 0
        if close:
            self.close()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for classifier in self.classifiers:
            classifier.close()


class _Reorder:
    """Releases outcomes in ``seq`` order, whatever order the workers finish in; with a
    smoothing window, replaces each result's top labels with those of the mean scores."""

    def __init__(self, emit: Callable[[Outcome], None]) -> None:
        self._emit = emit
        self.window: ScoreWindow | None = None
        self._lock = threading.Lock()
        self._waiting: dict[int, Outcome] = {}
        self._next = 0

    def done(self, outcome: Outcome) -> None:
        # Crossing: called from every worker; the lock serialises emission so emit()
        # sees one outcome at a time, in order.
        with self._lock:
            self._waiting[outcome.seq] = outcome
            while self._next in self._waiting:
                ready = self._waiting.pop(self._next)
                self._next += 1
                try:
                    self._emit(self._smooth(ready))
                except Exception:
                    log.exception("pipeline: emitting frame %d failed", ready.seq)


    def _smooth(self, outcome: Outcome) -> Outcome:
        window, result = self.window, outcome.classification
        if window is None or result is None or outcome.scores is None or outcome.classifier is None:
            return outcome
        mean = window.add((outcome.frame.source, result.model.sha256), outcome.scores)
        top = outcome.classifier.pick(mean)
        return dataclasses.replace(outcome, classification=dataclasses.replace(result, top=top), scores=None)


class Pipeline:
    """Runs the workers until stopped, the source ends, or ``max_frames`` are taken."""

    def __init__(
        self,
        capture: Capture,
        models: ModelSet,
        emit: Callable[[Outcome], None],
        *,
        max_frames: int | None = None,
        smoothing: int = 1,
    ) -> None:
        self.capture = capture
        self._models = models
        self._reorder = _Reorder(emit)
        self.set_smoothing(smoothing)
        self._take_lock = threading.Lock()
        self._seq = 0
        self._max_frames = max_frames
        self._stop = threading.Event()
        self.finished = threading.Event()
        """Set when every worker has ended (source exhausted, frame limit or stop)."""
        self._paused = threading.Event()
        self._workers = [
            threading.Thread(target=self._work, args=(i,), name=f"infer-{i}", daemon=True)
            for i in range(len(models.classifiers))
        ]
        self._alive = len(self._workers)
        self._alive_lock = threading.Lock()
        self.failed = 0

    @property
    def models(self) -> ModelSet:
        return self._models

    @property
    def taken(self) -> int:
        """Frames taken from the capture so far."""
        return self._seq

    def start(self) -> Pipeline:
        for worker in self._workers:
            worker.start()
        return self

    def swap(self, models: ModelSet) -> ModelSet:
        """Use ``models`` from the next frame taken on; returns the previous set, which
        the caller ``retire``s (it closes when its frames in flight are done)."""
        if len(models.classifiers) != len(self._workers):
            raise ValueError(f"model set has {len(models.classifiers)} classifiers for {len(self._workers)} workers")
        with self._take_lock:
            old, self._models = self._models, models
        return old

    def replace_capture(self, capture: Capture) -> Capture:
        """Take frames from ``capture`` from now on; returns the previous one (to close)."""
        with self._take_lock:
            old, self.capture = self.capture, capture
        return old

    def set_smoothing(self, frames: int) -> None:
        """Average scores over the last ``frames`` frames (1 = off) from the next result on."""
        self._reorder.window = ScoreWindow(frames) if frames > 1 else None

    def pause(self) -> None:
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()

    @property
    def paused(self) -> bool:
        return self._paused.is_set()

    def stop(self) -> None:
        """Take no more frames; frames in flight still finish and are emitted."""
        self._stop.set()

    def join(self, timeout: float) -> bool:
        """Wait for the workers to end; True when they all did within ``timeout``."""
        return self.finished.wait(timeout)

    def _take(self, worker: int) -> tuple[int, Frame, ModelSet] | bool | None:
        """The next numbered frame and this worker's classifier for it; None when nothing
        came in time; False when this worker should end."""
        with self._take_lock:
            if self._stop.is_set():
                return False
            if self._max_frames is not None and self._seq >= self._max_frames:
                return False
            # Crossing: frames come from the capture thread.
            frame = self.capture.get(timeout=0.1)
            if frame is None:
                return False if self.capture.ended.is_set() else None
            if self._paused.is_set():
                return None  # a paused daemon keeps the camera open but classifies nothing
            seq = self._seq
            self._seq += 1
            models = self._models
            models.acquire()
            return seq, frame, models

    def _work(self, index: int) -> None:
        try:
            while True:
                taken = self._take(index)
                if taken is False:
                    return
                if taken is None or taken is True:
                    continue
                seq, frame, models = taken
                try:
                    # Each worker owns one classifier of the set: an interpreter is never shared.
                    outcome = self._classify(seq, frame, models.classifiers[index])
                finally:
                    models.release()
                self._reorder.done(outcome)
        finally:
            with self._alive_lock:
                self._alive -= 1
                if self._alive == 0:
                    self.finished.set()

    def _classify(self, seq: int, frame: Frame, classifier: Classifier) -> Outcome:
        start = time.perf_counter()
        smoothing = self._reorder.window is not None
        try:
            tensor = classifier.prepare(frame.image, frame.rgb)
            raw, inference_ms = classifier.engine.timed_invoke(tensor)
            scores = classifier.scores(raw)
            top = classifier.pick(scores)
        except Exception as exc:
            # One bad frame (or a failing engine) must not end the worker.
            self.failed += 1
            log.exception("pipeline: frame %d from %s failed", frame.index, frame.source)
            return Outcome(seq, frame, None, f"{type(exc).__name__}: {exc}")
        total_ms = (time.perf_counter() - start) * 1000.0
        return Outcome(seq, frame, Classification(top, classifier.info, inference_ms, total_ms),
                       scores=scores if smoothing else None, classifier=classifier if smoothing else None)
