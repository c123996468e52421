"""Learned classes in the running daemon: answer with them, teach and forget them over MQTT.

With ``learn.extractor = "model"`` (the default) the embedding of a frame is the model's own
penultimate tensor, given by the same invoke as the scores (``Engine.embedding``): learned
classes cost a matrix-vector product, not a second invoke. Each pipeline worker also has its
own embedder, used when the frame's engine cannot give that embedding (an engine in a
supervised worker process, the Edge TPU, a model swapped in since startup: its penultimate
layer is not the one the head was learned with), and always with an extractor file. After
the model, ``annotate`` asks the current head (one attribute: swapped whole, so a frame sees
one head) for the closest learned class. A match answers first, the model's
labels follow; with ``learn.alone`` only the learned class is reported, or ``unknown``.

Teaching: examples come as images in the command, or as the next N frames (collected by
the workers); either way they are handed to the main loop through the control queue as
``FramesCollected``. Images in a command are decoded (bounded, ``preprocess.decode``) and
embedded in thread ``learn-images``, one command at a time, with caps on the number of
images (``learn.max_images``) and the time (``learn.images_timeout``), so the main loop
keeps answering ``status`` and feeding the watchdog meanwhile. Every change re-reads
the head file under its lock, applies the change and saves it atomically, so the CLI
(``edge-classifier learn``) and the daemon never overwrite each other; a file changed by
the CLI is picked up within a second.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

from edge_classifier.config.schema import LearnConfig, ModelConfig
from edge_classifier.control.requests import Request
from edge_classifier.engine.interpreter import Engine, EngineLike
from edge_classifier.errors import EdgeClassifierError, LearnError, shown
from edge_classifier.learn import Embedder, ExtractorId, LearnedHead, load_or_empty, locked, open_embedder, save_head
from edge_classifier.preprocess.decode import ImageLimits, ImageRejected, decode_image
from edge_classifier.results import Classification, Prediction
from edge_classifier.source.base import Frame

__all__ = ["FramesCollected", "Learning"]

log = logging.getLogger(__name__)

COLLECT_TIMEOUT = 60.0  # seconds to wait for the frames of a `learn {"frames": N}`


@dataclasses.dataclass(frozen=True, slots=True)
class FramesCollected:
    """The frames a ``learn`` command asked for, embedded (posted by a worker)."""

    label: str
    embeddings: tuple[np.ndarray, ...]
    request: Request | None  # the command to reply to
    error: str = ""  # why nothing is to be learned (images refused, out of time); embeddings empty


@dataclasses.dataclass(slots=True)
class _Collect:
    label: str
    wanted: int
    deadline: float
    request: Request | None
    embeddings: list[np.ndarray] = dataclasses.field(default_factory=list)
    accept: Callable[[str], bool] | None = None  # only frames whose Frame.source it accepts; None: any


class Learning:
    def __init__(self, config: LearnConfig, workers: int, deliver: Callable[[Any], None],
                 limits: ImageLimits | None = None, model: ModelConfig | None = None) -> None:
        self.config = config
        self.limits = limits or ImageLimits()
        self.images_rejected = 0  # images in learn commands that were refused (any reason)
        self._images_job: threading.Thread | None = None
        self._stop = threading.Event()
        self._deliver = deliver  # crossing: worker threads -> the main loop's control queue
        self.path = Path(config.head)
        self._embedders: list[Embedder] = []
        try:
            for _ in range(workers + 1):  # one per worker, one for the main thread (images in commands)
                self._embedders.append(open_embedder(config, model or ModelConfig()))
        except BaseException:
            self.close()
            raise
        first = self._embedders[0]
        self.extractor = ExtractorId.of(first.info, first.size)
        self._from_model = first.from_model
        self.second_invokes = 0  # frames embedded with a second invoke (their engine gave no embedding)
        self.head = self._load()
        self._stamp = self._file_stamp()
        self._checked = 0.0
        self._collect: _Collect | None = None
        self._lock = threading.Lock()
        source = "the model's own invoke" if self._from_model else "a second invoke of"
        log.info("learned classes: %d from %s; embeddings from %s (%s, %d values, on %s)", len(self.head), self.path,
                 source, first.info.name, first.size, first.info.accelerator)

    # --- worker threads -------------------------------------------------------------------

    @staticmethod
    def delivered(item: object) -> TypeGuard[FramesCollected]:
        """Whether ``item`` (from the control queue) is this class's :class:`FramesCollected`."""
        return isinstance(item, FramesCollected)

    def annotate(self, worker: int, frame: Frame, classification: Classification,
                 engine: EngineLike | None = None) -> Classification:
        embedding = self._embedding(worker, frame, engine)
        collect = self._collect
        if collect is not None and (collect.accept is None or collect.accept(frame.source)):
            self._collected(collect, embedding)
        head = self.head  # one read: the main thread swaps whole heads
        best = head.best(embedding) if len(head) else None
        top = classification.top
        if best is not None:
            learned = Prediction(None, best[0], best[1], learned=True)
            top = (learned,) if self.config.alone else (learned, *top[: max(0, len(top) - 1)])
        elif self.config.alone:
            scores = head.score(embedding) if len(head) else []
            top = (Prediction(None, "unknown", scores[0][1] if scores else 0.0, learned=True),)
        return dataclasses.replace(classification, top=top)

    def _embedding(self, worker: int, frame: Frame, engine: EngineLike | None) -> np.ndarray:
        """The frame's embedding: from the invoke that classified it when that engine runs the
        model the head belongs to with its penultimate tensor exposed, else a second invoke."""
        embedder = self._embedders[worker + 1]
        if self._from_model and isinstance(engine, Engine) and engine.info.sha256 == self.extractor.sha256:
            raw = engine.embedding()
            if raw is not None:
                return embedder.vector(raw)
        with self._lock:  # worker threads; only on this slow path, never with the one invoke
            self.second_invokes += 1
        return embedder.embed(frame.image, frame.rgb)

    def describe(self) -> dict[str, Any]:
        """Where the embeddings come from, for the ``classes`` command."""
        return {"from": "model" if self._from_model else "extractor", "name": self.extractor.name,
                "size": self.extractor.size, "second_invokes": self.second_invokes}

    def _collected(self, collect: _Collect, embedding: np.ndarray) -> None:
        with self._lock:
            if self._collect is not collect:
                return
            collect.embeddings.append(embedding)
            if len(collect.embeddings) < collect.wanted:
                return
            self._collect = None
        self._deliver(FramesCollected(collect.label, tuple(collect.embeddings), collect.request))

    # --- main thread ------------------------------------------------------------------------

    def collect_frames(self, label: str, frames: int, request: Request | None,
                       accept: Callable[[str], bool] | None = None) -> None:
        """Learn ``label`` from the next ``frames`` frames (only those whose ``Frame.source``
        ``accept`` accepts, if given: one camera's)."""
        with self._lock:
            if self._collect is not None:
                raise LearnError(f"already collecting frames for {self._collect.label!r}")
            self._collect = _Collect(label, frames, time.monotonic() + COLLECT_TIMEOUT, request, accept=accept)

    def expired(self, now: float) -> _Collect | None:
        """A collection that ran out of time (the frames did not come), taken off."""
        with self._lock:
            collect = self._collect
            if collect is None or now < collect.deadline:
                return None
            self._collect = None
            return collect

    def learn_images(self, label: str, images: Sequence[object], request: Request | None) -> None:
        """Start embedding the images of a ``learn`` command in thread ``learn-images``; the
        result (or why nothing was learned) comes back as FramesCollected. LearnError now when
        there are too many images or another command's images are still being embedded."""
        limit = self.config.max_images
        if len(images) > limit:
            raise LearnError(f"images: {len(images)} images, over the limit of {limit} per command "
                             "(learn.max_images); nothing was learned")
        if self._images_job is not None and self._images_job.is_alive():
            raise LearnError("the images of another learn command are still being embedded; try again when it "
                             "has answered")
        job = threading.Thread(target=self._embed_job, args=(label, list(images), request), name="learn-images",
                               daemon=True)
        self._images_job = job
        log.info("learn: embedding %d images for %s (thread learn-images)", len(images), shown(label, 40))
        job.start()

    def _embed_job(self, label: str, images: list[object], request: Request | None) -> None:
        # Thread learn-images: uses embedder 0 (no other thread does); the result crosses to
        # the main loop through the control queue.
        try:
            embeddings = tuple(self.embed_images(images))
        except LearnError as exc:
            self._deliver(FramesCollected(label, (), request, error=str(exc)))
        except Exception as exc:  # a bug must not pass silently: the command still gets its answer
            log.exception("learn: embedding the images of a command failed")
            self._deliver(FramesCollected(label, (), request, error=f"{type(exc).__name__}: {exc}"))
        else:
            self._deliver(FramesCollected(label, embeddings, request))

    def embed_images(self, images: Sequence[object]) -> list[np.ndarray]:
        """Base64 images from a command, decoded within the limits and embedded; LearnError
        naming the bad one (nothing is learned then), or when it takes over learn.images_timeout."""
        deadline = time.monotonic() + self.config.images_timeout
        embeddings = []
        for index, text in enumerate(images):
            if self._stop.is_set():
                raise LearnError("the daemon is stopping; nothing was learned")
            if time.monotonic() > deadline:
                raise LearnError(f"embedding took longer than {self.config.images_timeout:g} s "
                                 f"(learn.images_timeout) at images[{index}] of {len(images)}; nothing was learned")
            if not isinstance(text, str):
                raise LearnError(f"images[{index}]: must be a base64 string, not {type(text).__name__}")
            try:
                data = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise LearnError(f"images[{index}]: not base64: {exc}") from None
            try:
                image = decode_image(data, self.limits, what=f"images[{index}]")
            except ImageRejected as exc:
                self.images_rejected += 1
                raise LearnError(f"{exc}; nothing was learned") from None
            embeddings.append(self._embedders[0].embed(image))
        return embeddings

    def change(self, edit: Callable[[LearnedHead], LearnedHead]) -> LearnedHead:
        """Apply ``edit`` to the head on disk (under its lock), save it, and use it."""
        with locked(self.path):
            current = self._load()
            new = edit(current)
            save_head(self.path, new, self.extractor)
            self._stamp = self._file_stamp()
        self.head = new  # one attribute store: the workers see the old or the new head whole
        return new

    def poll(self, now: float) -> bool:
        """Reload the head when its file changed (the CLI taught or forgot); True when it did."""
        if now - self._checked < 1.0:
            return False
        self._checked = now
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return False
        try:
            head = self._load()
        except EdgeClassifierError as exc:
            log.error("learned classes file changed but cannot be used, keeping the old classes: %s", exc)
            self._stamp = stamp
            return False
        self.head, self._stamp = head, stamp
        log.info("learned classes reloaded from %s: %d classes", self.path, len(head))
        return True

    def close(self) -> None:
        self._stop.set()
        job = self._images_job
        if job is not None:
            job.join(5)  # one image at most: the embedders must outlive their last use
        for embedder in self._embedders:
            embedder.close()
        self._embedders = []

    def _load(self) -> LearnedHead:
        return load_or_empty(self.path, self.extractor, threshold=self.config.threshold,
                             max_examples=self.config.max_examples)

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return (stat.st_mtime_ns, stat.st_size)
