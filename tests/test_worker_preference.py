"""Which worker takes a frame: the lowest-numbered idle one.

While worker 0 keeps up with the camera it classifies every frame (its interpreter stays warm
and the other workers sleep); a frame that comes while it is busy goes to the next idle worker,
so nothing waits behind a busy worker. The real pipeline, a real capture thread on a live
source the test feeds one frame at a time, two real CPU interpreters of the smallest model.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import cv2
import numpy as np
import pytest
from support.testdata import V1_025, image, model

from edge_classifier.classifier import Classifier
from edge_classifier.daemon.modelsets import ModelSet
from edge_classifier.daemon.pipeline import Outcome, Pipeline
from edge_classifier.engine import Engine
from edge_classifier.engine.interpreter import EngineLike
from edge_classifier.results import Classification
from edge_classifier.source.base import Frame, stamp
from edge_classifier.source.capture import Capture
from edge_classifier.source.handoff import Handoff

LABELS = [str(i) for i in range(1001)]


class Fed:
    """A live source that delivers what the test puts in, one frame at a time."""

    live = True
    name = "fed"

    def __init__(self) -> None:
        self.frames: queue.Queue[np.ndarray | None] = queue.Queue()
        self.index = 0

    def open(self) -> None:
        pass

    def read(self) -> Frame | None:
        picture = self.frames.get(timeout=30)
        if picture is None:
            return None
        self.index += 1
        return stamp(picture, rgb=False, source=self.name, index=self.index)

    def wake(self) -> None:
        self.frames.put(None)  # Capture.stop: the blocked read ends

    def close(self) -> None:
        pass


class Gated:
    """A real engine whose invoke waits while ``gate`` is clear (a worker kept busy)."""

    def __init__(self, engine: EngineLike) -> None:
        self.engine = engine
        self.info = engine.info
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def timed_invoke(self, tensor: np.ndarray) -> tuple[np.ndarray, float]:
        self.entered.set()
        assert self.gate.wait(30), "the test never opened the gate"
        return self.engine.timed_invoke(tensor)

    def invoke(self, tensor: np.ndarray) -> np.ndarray:
        return self.timed_invoke(tensor)[0]

    def close(self) -> None:
        self.engine.close()


class Run:
    """A two-worker pipeline on the fed source; which worker classified each frame (by index)."""

    def __init__(self, engines: list[Gated], max_frames: int | None = None) -> None:
        self.source = Fed()
        self.capture = Capture(self.source)
        self.by_worker: dict[int, int] = {}
        self.outcomes: list[Outcome] = []
        self.classified: dict[int, threading.Event] = {}
        self.emitted = threading.Condition()
        models = ModelSet([Classifier(engine, LABELS) for engine in engines])
        self.pipeline = Pipeline(self.capture, models, self._emit, workers=2, post=self._post, max_frames=max_frames)

    def _post(self, worker: int, frame: Frame, result: Classification, engine: EngineLike) -> Classification:
        self.by_worker[frame.index] = worker
        self.classified.setdefault(frame.index, threading.Event()).set()
        return result

    def _emit(self, outcome: Outcome) -> None:
        with self.emitted:
            self.outcomes.append(outcome)
            self.emitted.notify_all()

    def wait_emitted(self, count: int) -> None:
        with self.emitted:
            assert self.emitted.wait_for(lambda: len(self.outcomes) >= count, 30), \
                f"{len(self.outcomes)} of {count} frames emitted"

    def wait_classified(self, index: int) -> None:
        event = self.classified.setdefault(index, threading.Event())
        assert event.wait(30), f"frame {index} was not classified"


@pytest.fixture
def picture() -> np.ndarray:
    return cv2.resize(cv2.imread(str(image("parrot.jpg"))), (320, 240))


@pytest.fixture
def engines() -> Iterator[list[Gated]]:
    opened = [Gated(Engine.open(model(V1_025), accelerator="cpu", threads=1)) for _ in range(2)]
    yield opened
    for engine in opened:
        engine.gate.set()
        engine.close()


def test_worker_zero_takes_every_frame_while_it_keeps_up(picture: np.ndarray, engines: list[Gated]) -> None:
    run = Run(engines)
    with run.capture:
        run.pipeline.start()
        for count in range(1, 21):
            run.source.frames.put(picture)  # the next frame only once the last one is done
            run.wait_emitted(count)
        run.pipeline.stop()
        assert run.pipeline.join(10)
    assert [o.error for o in run.outcomes] == [None] * 20
    # With the take lock as the queue, the workers took the frames in turn (0, 1, 0, 1, ...).
    assert sorted(run.by_worker) == list(range(1, 21))
    assert set(run.by_worker.values()) == {0}, f"workers by frame: {run.by_worker}"


def test_a_frame_that_comes_while_worker_zero_is_busy_goes_to_the_next(picture: np.ndarray,
                                                                        engines: list[Gated]) -> None:
    run = Run(engines)
    busy = engines[0]
    with run.capture:
        run.pipeline.start()
        busy.gate.clear()
        run.source.frames.put(picture)
        assert busy.entered.wait(30), "worker 0 did not take the first frame"
        run.source.frames.put(picture)
        run.wait_classified(2)  # classified while worker 0 still holds frame 1
        assert run.by_worker == {2: 1}
        busy.gate.set()
        run.wait_emitted(2)
        run.source.frames.put(picture)
        run.wait_emitted(3)
        run.pipeline.stop()
        assert run.pipeline.join(10)
    assert [o.frame.index for o in run.outcomes] == [1, 2, 3]  # still emitted in frame order
    assert run.by_worker == {1: 0, 2: 1, 3: 0}


def wait_sleeping(handoff: Handoff, count: int) -> None:
    # A thread blocked in wait_frame sets no event of its own to await: poll the registry of
    # sleepers, which is what put reads, with a deadline.
    deadline = time.monotonic() + 10
    while len(handoff._sleepers) < count:
        assert time.monotonic() < deadline, f"{len(handoff._sleepers)} of {count} consumers waiting"
        time.sleep(0.001)


def test_handoff_wakes_the_lowest_rank_waiting_and_close_wakes_the_rest(picture: np.ndarray) -> None:
    handoff = Handoff(overwrite=True)
    answers: dict[int, bool] = {}
    done = {rank: threading.Event() for rank in (0, 1, 2)}

    def consumer(rank: int) -> None:
        answers[rank] = handoff.wait_frame(30, rank=rank)
        done[rank].set()

    threads = [threading.Thread(target=consumer, args=(rank,)) for rank in (2, 0, 1)]
    for thread in threads:
        thread.start()
    wait_sleeping(handoff, 3)
    handoff.put(stamp(picture, rgb=False, source="a", index=1), threading.Event())
    assert done[0].wait(10) and answers[0] is True
    assert not done[1].is_set() and not done[2].is_set()  # one frame, one consumer woken
    assert [rank for rank, _ in handoff._sleepers] == [1, 2]
    handoff.put(stamp(picture, rgb=False, source="b", index=1), threading.Event())
    assert done[1].wait(10) and answers[1] is True
    assert handoff.get(0) is not None and handoff.get(0) is not None
    handoff.close()  # nothing left: the last consumer wakes with no frame
    assert done[2].wait(10) and answers[2] is False
    for thread in threads:
        thread.join(10)
    assert handoff.wait_frame(30) is False  # closed and empty: at once


def test_wait_frame_times_out_and_leaves_no_sleeper_behind() -> None:
    handoff = Handoff(overwrite=True)
    start = time.monotonic()
    assert handoff.wait_frame(0.05, rank=3) is False
    assert time.monotonic() - start >= 0.05
    assert handoff._sleepers == []


def test_stop_and_the_frame_limit_end_a_sleeping_worker_at_once(picture: np.ndarray, engines: list[Gated]) -> None:
    # Worker 1 sleeps up to a second between looks while worker 0 keeps up; stop() and worker 0's
    # end must wake it rather than leave the pipeline waiting that second.
    run = Run(engines)
    with run.capture:
        run.pipeline.start()
        wait_sleeping(run.capture._handoff, 2)  # both idle: worker 1 among the sleepers
        started = time.monotonic()
        run.pipeline.stop()
        assert run.pipeline.join(10)
        assert time.monotonic() - started < 0.7, "stop waited for an idle worker's next look"

    limited = Run(engines, max_frames=1)
    with limited.capture:
        limited.pipeline.start()
        wait_sleeping(limited.capture._handoff, 2)
        limited.source.frames.put(picture)
        limited.wait_emitted(1)
        started = time.monotonic()
        assert limited.pipeline.join(10)
        assert time.monotonic() - started < 0.7, "the frame limit waited for an idle worker's next look"
    assert limited.by_worker == {1: 0}
