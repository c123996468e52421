"""The frame pipeline: capture -> N inference workers -> results in frame order.

Several single-threaded interpreters working on alternate frames use N cores better
than one interpreter with N threads (on a 2-core x86-64: about 625 invokes/s against
500-600 for MobileNetV2), and each worker also preprocesses its own frame, so resizing
one frame overlaps the inference of the previous one.

Threads and crossings:

- ``infer-0`` .. ``infer-{n-1}``: each takes the next frame from the capture (under a lock,
  which also numbers it), prepares, invokes and postprocesses it with its own engine. An idle
  worker sleeps outside the lock until a frame is there, and a frame wakes the lowest-numbered
  idle worker: while worker 0 keeps up (a camera at a frame-rate cap) it takes every frame and
  the others sleep; frames that come faster go to every worker;
- the reorder buffer hands finished results to ``emit`` strictly in frame order; ``emit``
  runs in whichever worker completes the next due frame, so it must be quick and
  non-blocking (the publisher enqueues, or publishes inline when it is idle, never waiting).

Overlap with a worker child (the Edge TPU path, ``engine/worker.py``): the child invokes
while the parent's CPU would sit idle, so a worker whose engine has ``submit``/``collect``
keeps up to two frames in flight: it takes and prepares frame N+1 and submits it while the
child invokes N, then collects N and postprocesses and emits it while the child invokes N+1.
A TPU set has one classifier, hence one worker: in series its rate was
1/(prepare + crossing + invoke + post + emit); overlapped it approaches 1/invoke. The next
frame is taken without waiting when one is in flight (a slow camera must not hold a finished
frame back). Every frame in flight when the child fails is classified again on the
replacement set, each in frame order through the reorder buffer.

The models in use live in :class:`ModelSets` (one :class:`ModelSet` per model in use: the
daemon's ``[model]`` and those ``[[sources]]`` name); a set can be replaced between two
frames (``swap``), and a worker picks the set of the frame's source when it takes the frame,
so every frame is classified entirely by one model.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Literal, Protocol, cast

import numpy as np

from edge_classifier.classifier import Classifier
from edge_classifier.daemon.modelsets import DEFAULT, ModelSet, ModelSets, Route
from edge_classifier.engine.interpreter import EngineLike
from edge_classifier.errors import AcceleratorFailed
from edge_classifier.postprocess.smoothing import ScoreWindow
from edge_classifier.results import Classification
from edge_classifier.source.base import Frame
from edge_classifier.source.capture import Capture
from edge_classifier.source.group import CaptureGroup

__all__ = ["OVERLAP_ENV", "ModelSet", "ModelSets", "Outcome", "Pipeline"]

log = logging.getLogger(__name__)

# "0": every frame in series even on a worker child (how benchmarks/worker_overhead.py runs
# the real daemon before and after; a way back should the overlap ever misbehave in the field).
OVERLAP_ENV = "EDGE_CLASSIFIER_OVERLAP"


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """One frame's way through the pipeline."""

    seq: int  # pipeline order, from 0
    frame: Frame
    classification: Classification | None
    error: str | None = None  # why the frame could not be classified
    scores: np.ndarray | None = None  # every class's score, kept only while smoothing
    classifier: Classifier | None = None


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


class _Overlapping(Protocol):
    """An engine that takes a frame and answers later (``WorkerEngine``): ``slots`` in flight."""

    slots: int

    def submit(self, tensor: np.ndarray) -> None: ...
    def collect(self) -> tuple[np.ndarray, float]: ...


@dataclasses.dataclass(slots=True)
class _InFlight:
    """A frame submitted to an overlapping engine and not yet collected."""

    seq: int
    frame: Frame
    models: ModelSet  # acquired by _take; released once the frame is done
    classifier: Classifier
    start: float  # perf_counter() when its preparation began


FailureHandler = Callable[[ModelSet, Exception], "ModelSet | None"]
# After the model: (worker index, frame, classification) -> the classification to report
# (the learned classes' stage). Runs in the worker thread.
# (worker, frame, its classification, the engine that classified it: its last invoke's
# other outputs, such as the penultimate tensor learned classes use)
PostStage = Callable[[int, Frame, Classification, EngineLike], Classification]


class Pipeline:
    """Runs the workers until stopped, the source ends, or ``max_frames`` are taken.

    There are ``workers`` threads; a model set may have fewer classifiers (the Edge TPU has
    one), and then the workers without one wait. When an engine fails (AcceleratorFailed:
    the Edge TPU worker died, raised or hung), ``on_failure`` may return a replacement set
    (the CPU twin), which is swapped in and classifies the same frame again: no frame is lost.
    """

    def __init__(
        self,
        capture: Capture | CaptureGroup,
        models: ModelSet | ModelSets,
        emit: Callable[[Outcome], None],
        *,
        workers: int | None = None,
        max_frames: int | None = None,
        smoothing: int = 1,
        on_failure: FailureHandler | None = None,
        post: PostStage | None = None,
        overlap: bool | None = None,
    ) -> None:
        self.capture = capture
        self.post = post
        if overlap is None:
            overlap = os.environ.get(OVERLAP_ENV, "1") != "0"
        self.overlap = overlap  # False: every frame in series, even on a worker child
        self._sets = models if isinstance(models, ModelSets) else ModelSets(models)
        self._reorder = _Reorder(emit)
        self.set_smoothing(smoothing)
        self._on_failure = on_failure
        self._take_lock = threading.Lock()
        self._seq = 0
        self._max_frames = max_frames
        self._stop = threading.Event()
        self.finished = threading.Event()
        """Set when every worker has ended (source exhausted, frame limit or stop)."""
        self._paused = threading.Event()
        count = max(workers or 0, *(len(m.classifiers) for m in self._sets.all()))
        self._workers = [
            threading.Thread(target=self._work, args=(i,), name=f"infer-{i}", daemon=True) for i in range(count)
        ]
        self._alive = len(self._workers)
        self._alive_lock = threading.Lock()
        self.failed = 0

    @property
    def models(self) -> ModelSet:
        """The daemon's ``[model]`` set (the sources without their own model use it)."""
        return self._sets.default

    @property
    def sets(self) -> ModelSets:
        """Every set in use and which source uses which (read it, change it through swap/reroute)."""
        return self._sets

    @property
    def workers(self) -> int:
        return len(self._workers)

    @property
    def taken(self) -> int:
        """Frames taken from the capture so far."""
        return self._seq

    def start(self) -> Pipeline:
        for worker in self._workers:
            worker.start()
        return self

    def swap(self, models: ModelSet, key: str = DEFAULT) -> ModelSet:
        """Use ``models`` as the set ``key`` (default: ``[model]``'s) from the next frame taken on;
        returns the previous set (``models`` itself for a new key), which the caller ``retire``s
        (it closes when its frames in flight are done)."""
        self._check(models)
        with self._take_lock:
            old = self._sets.replace(key, models)
        return old if old is not None else models

    def reroute(self, routes: dict[str, Route], added: dict[str, ModelSet]) -> list[ModelSet]:
        """Sources to sets from the next frame on (``added``: sets new to the pipeline); returns
        the sets no source uses any more, for the caller to ``retire``."""
        for models in added.values():
            self._check(models)
        with self._take_lock:
            return self._sets.reroute(routes, added)

    def _check(self, models: ModelSet) -> None:
        if len(models.classifiers) > len(self._workers):
            raise ValueError(f"model set has {len(models.classifiers)} classifiers for {len(self._workers)} workers")

    def replace_capture(self, capture: Capture | CaptureGroup) -> Capture | CaptureGroup:
        """Take frames from ``capture`` from now on; returns the previous one (to close)."""
        with self._take_lock:
            old, self.capture = self.capture, capture
        old.wake_consumers()  # workers asleep on the old one look at the new one now
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
        self.capture.wake_consumers()  # idle workers sleep up to a second (see _take)

    def join(self, timeout: float) -> bool:
        """Wait for the workers to end; True when they all did within ``timeout``."""
        return self.finished.wait(timeout)

    def _take(self, worker: int, wait: bool = True) -> tuple[int, Frame, ModelSet] | Literal[False] | None:
        """The next numbered frame and the set to classify it with; None when nothing came
        in time (at once unless ``wait``; or this worker has no classifier in the current set);
        False when this worker should end."""
        if worker >= self._sets.fewest_classifiers:
            # No interpreter for this worker in some set in use (the Edge TPU has one).
            stopped = self._stop.wait(0.1) if wait else self._stop.is_set()
            return False if stopped else None
        if self._paused.is_set() and wait:
            # Paused: frames are taken and dropped without the take lock. A paused worker that
            # went straight back to the lock would hold it nearly all the time (Python's locks
            # are not fair), and a model swap, which needs it, waited up to a minute for it.
            if self._taking_ended():
                return False
            capture = self.capture
            if capture.get(timeout=0.1) is None and capture.ended.is_set():
                return False
            return None
        if wait:
            if self._taking_ended():
                return False
            # An idle worker sleeps outside the take lock until a frame is there; of several idle
            # workers a frame wakes the lowest-numbered (its rank), so while worker 0 keeps up it
            # takes every frame and the others sleep (see Handoff.wait_frame).
            # Worker 0 looks again every 0.1 s (stop, pause, the end of the frames, as before);
            # the others, which sleep while it keeps up, once a second, so that an idle worker
            # does not wake 10 times a second for nothing: stop() and every worker's end wake
            # them at once (capture.wake_consumers).
            # Crossing: woken by the capture thread's hand-over.
            self.capture.wait_frame(0.1 if worker == 0 else 1.0, rank=worker)
        # Without waiting, the lock must not be waited for either: another worker may hold it
        # while this one has a finished frame to collect.
        if not self._take_lock.acquire(blocking=wait):
            return None
        try:
            if self._taking_ended():
                return False
            if worker >= self._sets.fewest_classifiers:
                return None  # the sets changed while this worker waited for the lock
            # Crossing: frames come from the capture thread (there already, or taken by another
            # worker meanwhile: then this one goes back to waiting).
            frame = self.capture.get(timeout=0.0)
            if frame is None:
                return False if self.capture.ended.is_set() and wait else None
            if self._paused.is_set():
                return None  # a paused daemon keeps the camera open but classifies nothing
            seq = self._seq
            self._seq += 1
            models = self._sets.for_frame(frame)  # the frame's source's model
            models.acquire()
            return seq, frame, models
        finally:
            self._take_lock.release()

    def _taking_ended(self) -> bool:
        """Stopped, or ``max_frames`` taken: no more frames for any worker."""
        return self._stop.is_set() or (self._max_frames is not None and self._seq >= self._max_frames)

    def _work(self, index: int) -> None:
        pending: collections.deque[_InFlight] = collections.deque()  # oldest first
        try:
            while True:
                # With a frame in flight, look for the next one without waiting: if none is
                # there, the frame in flight is collected first.
                taken = self._take(index, wait=not pending)
                if taken is False:
                    return
                if taken is None:
                    if pending:
                        self._finish(pending.popleft(), index)
                    continue
                seq, frame, models = taken
                engine = models.classifiers[index].engine
                slots = getattr(engine, "slots", 1)
                if not self.overlap or slots < 2:
                    while pending:
                        self._finish(pending.popleft(), index)
                    self._reorder.done(self._classify_with(seq, frame, models, index))
                    continue
                entry = self._submit(seq, frame, models, index)
                if entry is not None:
                    pending.append(entry)
                # Collect the oldest until slots - 1 are left in flight: they invoke while the
                # next frame is taken and prepared (two slots: one invoking, one being prepared).
                while len(pending) >= slots:
                    self._finish(pending.popleft(), index)
        finally:
            # Frames in flight still finish and are emitted (stop, source ended, frame limit).
            while pending:
                self._finish(pending.popleft(), index)
            with self._alive_lock:
                self._alive -= 1
                if self._alive == 0:
                    self.finished.set()
            # Whatever ended this worker (the frame limit, the end of the frames) ends the others:
            # wake those asleep on the capture to see it now rather than at their next look.
            self.capture.wake_consumers()

    def _submit(self, seq: int, frame: Frame, models: ModelSet, index: int) -> _InFlight | None:
        """Prepare ``frame`` and hand it to this worker's overlapping engine; None when the frame
        is done already (it failed, or the engine had failed and the replacement classified it)."""
        classifier = models.classifiers[index]
        start = time.perf_counter()
        try:
            tensor = classifier.prepare(frame.image, frame.rgb)
            cast(_Overlapping, classifier.engine).submit(tensor)
        except AcceleratorFailed as exc:
            # The child is gone (its frames in flight fail at collect and are re-done there).
            try:
                self._reorder.done(self._fall_back(seq, frame, models, index, exc))
            finally:
                models.release()
            return None
        except Exception as exc:
            models.release()
            self._reorder.done(self._failed(seq, frame, classifier, exc))
            return None
        return _InFlight(seq, frame, models, classifier, start)

    def _finish(self, entry: _InFlight, index: int) -> None:
        """Collect a submitted frame, postprocess it and hand it to the reorder buffer."""
        try:
            raw, inference_ms = cast(_Overlapping, entry.classifier.engine).collect()
        except AcceleratorFailed as exc:
            outcome = self._fall_back(entry.seq, entry.frame, entry.models, index, exc)
        except Exception as exc:
            outcome = self._failed(entry.seq, entry.frame, entry.classifier, exc)
        else:
            outcome = self._complete(entry.seq, entry.frame, entry.classifier, raw, inference_ms, entry.start, index)
        finally:
            entry.models.release()
        self._reorder.done(outcome)

    def _classify_with(self, seq: int, frame: Frame, models: ModelSet, index: int) -> Outcome:
        """Classify with ``models`` (acquired by _take); on an engine failure, with its replacement."""
        try:
            # Each worker owns one classifier of the set: an interpreter is never shared.
            return self._classify(seq, frame, models.classifiers[index], index)
        except AcceleratorFailed as exc:
            return self._fall_back(seq, frame, models, index, exc)
        finally:
            models.release()

    def _fall_back(self, seq: int, frame: Frame, models: ModelSet, index: int, exc: AcceleratorFailed) -> Outcome:
        """``models``' engine failed on ``frame``: classify it again on the replacement set."""
        replacement = self._on_failure(models, exc) if self._on_failure else None
        if replacement is None or index >= len(replacement.classifiers):
            self.failed += 1
            return Outcome(seq, frame, None, f"{type(exc).__name__}: {exc}")
        replacement.acquire()
        try:
            return self._classify(seq, frame, replacement.classifiers[index], index)
        except AcceleratorFailed as again:
            self.failed += 1
            return Outcome(seq, frame, None, f"{type(again).__name__}: {again}")
        finally:
            replacement.release()

    def _classify(self, seq: int, frame: Frame, classifier: Classifier, worker: int = 0) -> Outcome:
        """One frame; AcceleratorFailed propagates (the caller falls back), anything else
        becomes a failed outcome (one bad frame must not end the worker)."""
        start = time.perf_counter()
        try:
            tensor = classifier.prepare(frame.image, frame.rgb)
            raw, inference_ms = classifier.engine.timed_invoke(tensor)
        except AcceleratorFailed:
            raise
        except Exception as exc:
            return self._failed(seq, frame, classifier, exc)
        return self._complete(seq, frame, classifier, raw, inference_ms, start, worker)

    def _complete(self, seq: int, frame: Frame, classifier: Classifier, raw: np.ndarray, inference_ms: float,
                  start: float, worker: int) -> Outcome:
        """Scores, top-k and the stage after the model for one invoked frame."""
        smoothing = self._reorder.window is not None
        try:
            # Smoothing averages every class's score; otherwise only the reported ones are made.
            scores = classifier.scores(raw) if smoothing else None
            top = classifier.pick(scores) if scores is not None else classifier.predictions(raw)
        except Exception as exc:
            return self._failed(seq, frame, classifier, exc)
        classification = Classification(top, classifier.info, inference_ms, 0.0)
        post = self.post
        if post is not None:
            try:
                classification = post(worker, frame, classification, classifier.engine)
            except Exception as exc:
                self.failed += 1
                log.exception("pipeline: the stage after the model failed on frame %d", frame.index)
                return Outcome(seq, frame, None, f"{type(exc).__name__}: {exc}", classifier=classifier)
        total_ms = (time.perf_counter() - start) * 1000.0
        classification = dataclasses.replace(classification, total_ms=total_ms)
        return Outcome(seq, frame, classification, scores=scores, classifier=classifier)

    def _failed(self, seq: int, frame: Frame, classifier: Classifier, exc: Exception) -> Outcome:
        self.failed += 1
        log.exception("pipeline: frame %d from %s failed", frame.index, frame.source, exc_info=exc)
        return Outcome(seq, frame, None, f"{type(exc).__name__}: {exc}", classifier=classifier)
