"""The pipeline overlapping a worker child's invoke with the next frame (the Edge TPU path).

A real ``images`` capture, a real ``WorkerEngine`` child running the real CPU model (as the
Edge TPU's worker does, in a lone child or in the engine host), the real in-process CPU twin
as the fallback set. The only thing wrapped is the worker engine, to see how many frames it
had in flight and to kill its child at a chosen moment (SIGKILL, as the kernel does to a
wedged process; an abort from libedgetpu looks the same from the parent).
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from support.testdata import V1_025, image, model

from edge_classifier.classifier import Classifier
from edge_classifier.daemon.modelsets import ModelSet
from edge_classifier.daemon.pipeline import Outcome, Pipeline
from edge_classifier.engine import Engine
from edge_classifier.engine.shm import SHM_PREFIX
from edge_classifier.engine.worker import WorkerEngine
from edge_classifier.source.capture import Capture
from edge_classifier.source.images import ImageSource

PHOTOS = ("parrot.jpg", "cat.bmp", "bird.bmp", "grace_hopper.bmp")
LABELS = [str(i) for i in range(1001)]


class Watched:
    """A WorkerEngine as the pipeline sees it, noting the frames in flight at each collect;
    ``kill_at``: before that collect (counted from 1), kill the child."""

    def __init__(self, worker: WorkerEngine, kill_at: int | None = None) -> None:
        self.worker = worker
        self.slots = worker.slots
        self.info = worker.info
        self.kill_at = kill_at
        self.collects = 0
        self.in_flight_at_collect: list[int] = []

    def submit(self, tensor: np.ndarray) -> None:
        self.worker.submit(tensor)

    def collect(self) -> tuple[np.ndarray, float]:
        self.collects += 1
        self.in_flight_at_collect.append(self.worker.in_flight)
        if self.collects == self.kill_at:
            pid = self.worker.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
        return self.worker.collect()

    def invoke(self, tensor: np.ndarray) -> np.ndarray:
        return self.worker.invoke(tensor)

    def timed_invoke(self, tensor: np.ndarray) -> tuple[np.ndarray, float]:
        return self.worker.timed_invoke(tensor)

    def close(self) -> None:
        self.worker.close()


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """40 files, the four photos in turn."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(40):
        name = PHOTOS[index % len(PHOTOS)]
        shutil.copy(image(name), folder / f"{index:03d}-{name}")
    return folder


@pytest.fixture(scope="module")
def reference() -> Iterator[Classifier]:
    """The in-process CPU model: what every frame's answer must equal."""
    with Classifier(Engine.open(model(V1_025), accelerator="cpu", threads=1), LABELS) as classifier:
        yield classifier


def our_segments() -> set[str]:
    mine = f"{SHM_PREFIX}{os.getpid()}-"
    return {name for name in os.listdir("/dev/shm") if name.startswith(mine)}


def run(photos: Path, engine: Watched, frames: int, *, overlap: bool = True) -> tuple[list[Outcome], list[str]]:
    """``frames`` frames through a one-worker pipeline on ``engine``, the CPU twin as fallback;
    the outcomes in emission order and the failures the fallback was asked about.

    Every frame is read before the pipeline starts (the capture's hand-off holds them all), so
    the next frame is always there when the worker looks for one: the overlap is certain."""
    outcomes: list[Outcome] = []
    failures: list[str] = []
    tpu = ModelSet([Classifier(engine, LABELS)])
    twin: list[ModelSet] = []
    lock = threading.Lock()
    running: list[Pipeline] = []

    def on_failure(models: ModelSet, error: Exception) -> ModelSet | None:
        # What the accelerator supervisor does: the first call opens the twin and swaps it in,
        # later ones (the other frame in flight on the dead child) get the same set.
        with lock:
            failures.append(str(error))
            if not twin:
                twin.append(ModelSet([Classifier(Engine.open(model(V1_025), accelerator="cpu", threads=1),
                                                 LABELS)]))
                running[0].swap(twin[0]).retire()
            return twin[0]

    source = ImageSource(str(photos / "*"), name="cam")
    with Capture(source, capacity=64) as capture:
        assert capture.ended.wait(30), "the capture did not read every photo"
        pipeline = Pipeline(capture, tpu, outcomes.append, workers=1, max_frames=frames, on_failure=on_failure,
                            overlap=overlap)
        running.append(pipeline)
        pipeline.start()
        assert pipeline.join(60), "the pipeline did not finish"
    tpu.close()
    for models in twin:
        models.close()
    return outcomes, failures


def expected(reference: Classifier, outcome: Outcome) -> int:
    return reference.classify(outcome.frame.image, outcome.frame.rgb).top[0].id


@pytest.mark.parametrize("shared", [False, True], ids=["lone", "host"])
def test_frames_overlap_and_come_out_in_order_with_the_right_answers(photos, reference, shared):
    with WorkerEngine(model(V1_025), accelerator="cpu", threads=1, shared=shared) as worker:
        engine = Watched(worker)
        outcomes, failures = run(photos, engine, 40)
    assert not failures
    assert [o.seq for o in outcomes] == list(range(40))
    assert [o.frame.index for o in outcomes] == list(range(1, 41))
    assert all(o.classification is not None for o in outcomes)
    for outcome in outcomes[:len(PHOTOS)]:
        assert outcome.classification is not None
        assert outcome.classification.top[0].id == expected(reference, outcome)
    # Every frame went through submit/collect, and the next frame was already in the child
    # when the previous one was collected (a non-live source always has one waiting).
    assert engine.collects == 40
    assert max(engine.in_flight_at_collect) == 2
    assert not our_segments()


def test_without_overlap_every_frame_goes_in_series(photos):
    with WorkerEngine(model(V1_025), accelerator="cpu", threads=1) as worker:
        engine = Watched(worker)
        outcomes, failures = run(photos, engine, 12, overlap=False)
    assert not failures and [o.seq for o in outcomes] == list(range(12))
    assert engine.collects == 0  # invoke(), not submit/collect


@pytest.mark.parametrize("shared", [False, True], ids=["lone", "host"])
@pytest.mark.parametrize("how", ["killed", "hung"])
def test_a_child_lost_with_two_frames_in_flight_loses_neither(photos, reference, shared, how):
    """The 10th invoke (frame seq 9) hangs in the child, so frame 10 waits in its pipe behind it:
    two frames in flight, neither answered. Then the child is killed (SIGKILL while the worker
    collects frame 9), or the invoke timeout kills it."""
    timeout = 5.0 if how == "killed" else 0.5
    with WorkerEngine(model(V1_025), accelerator="cpu", threads=1, timeout=timeout, shared=shared,
                      fault="hang@9") as worker:
        engine = Watched(worker, kill_at=10 if how == "killed" else None)
        outcomes, failures = run(photos, engine, 30)
        assert not worker.alive
    assert engine.in_flight_at_collect[9] == 2
    # Both frames in flight met the dead child and were classified again on the CPU twin.
    cause = "killed by SIGKILL" if how == "killed" else "no answer within 0.5 s"
    assert len(failures) == 2 and cause in failures[0] and "dead until restart" in failures[1]
    assert [o.seq for o in outcomes] == list(range(30)), "a frame was lost or came out of order"
    assert all(o.classification is not None and o.error is None for o in outcomes)
    redone = [o for o in outcomes if o.classifier is not None and o.classifier.engine is not engine]
    assert [o.seq for o in redone] == list(range(9, 30))  # the two in flight, then the twin's own
    for outcome in outcomes[8:12]:
        assert outcome.classification is not None
        assert outcome.classification.top[0].id == expected(reference, outcome)
    assert not our_segments()
