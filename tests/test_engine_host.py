"""The engine host: several models' interpreters in ONE supervised child (a USB Coral serves one
process). Real spawned children, the real LiteRT runtime on the real CPU models (no TPU here:
the shared host runs the CPU twins with ``shared=True``, the same code the Edge TPU's workers
take), the real OSError from load_delegate("libedgetpu.so.1"), a real SIGKILL."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from support.testdata import BIRDS, V1_050, image, model
from test_worker import our_segments

from edge_classifier.classifier import Classifier
from edge_classifier.cli.classify import read_image
from edge_classifier.engine import Engine
from edge_classifier.engine.worker import WorkerEngine
from edge_classifier.errors import AcceleratorError, AcceleratorFailed

# bird.bmp: the ImageNet model says 20 (chickadee), the iNaturalist birds model 659.
TOP1 = {V1_050: 20, BIRDS: 659}


def hosts() -> list[int]:
    """The pids of this process's engine host children."""
    return [child.pid for child in multiprocessing.active_children()
            if child.name == "edge-classifier-engine-host" and child.pid is not None]


def tensor(engine: WorkerEngine | Engine) -> np.ndarray:
    return Classifier(engine, [str(i) for i in range(engine.info.classes)]).prepare(read_image(str(image("bird.bmp"))))


def top1(engine: WorkerEngine) -> int:
    return int(np.argmax(engine.invoke(tensor(engine))))


@pytest.fixture
def pair() -> Iterator[tuple[WorkerEngine, WorkerEngine]]:
    assert not hosts() and not our_segments()
    with WorkerEngine(model(V1_050), accelerator="cpu", shared=True, timeout=5) as first, \
            WorkerEngine(model(BIRDS), accelerator="cpu", shared=True, timeout=5) as second:
        yield first, second
    assert not hosts(), "the host outlived its last model"
    assert not our_segments(), "shared memory leaked"


def test_two_models_live_in_one_child_each_with_its_own_interpreter(pair):
    first, second = pair
    assert hosts() == [first.pid] and second.pid == first.pid != os.getpid()
    assert len(our_segments()) == 4  # each model its own input and output slot
    assert (top1(first), top1(second)) == (TOP1[V1_050], TOP1[BIRDS])
    for worker in pair:
        with Engine.open(model(worker.info.path.stem), accelerator="cpu", threads=1) as engine:
            assert np.array_equal(worker.invoke(tensor(worker)), engine.invoke(tensor(engine)))


def test_two_threads_invoking_two_models_at_once_get_their_own_answers(pair):
    answers: dict[str, list[int]] = {}
    start = threading.Barrier(2)

    def run(worker: WorkerEngine) -> None:
        frame = tensor(worker)
        start.wait()
        answers[worker.info.name] = [int(np.argmax(worker.invoke(frame))) for _ in range(25)]

    threads = [threading.Thread(target=run, args=(worker,)) for worker in pair]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert answers == {V1_050: [TOP1[V1_050]] * 25, BIRDS: [TOP1[BIRDS]] * 25}


def test_killing_the_host_fails_both_models_and_both_restart_in_one_fresh_host(pair):
    first, second = pair
    old = first.pid
    assert old is not None
    os.kill(old, signal.SIGKILL)
    for worker in pair:
        with pytest.raises(AcceleratorFailed, match=rf"pid {old}, .*died while invoking: killed by SIGKILL"):
            worker.invoke(tensor(worker))
        assert not worker.alive and worker.failure is not None and worker.failure.kind == "died"
    assert not hosts() and not our_segments()
    assert not Path(f"/proc/{old}").exists()
    first.restart()
    second.restart()
    assert hosts() == [first.pid] and second.pid == first.pid != old
    assert (top1(first), top1(second)) == (TOP1[V1_050], TOP1[BIRDS])


def test_one_model_failing_alone_leaves_the_other_serving_in_the_same_host(pair):
    first, second = pair
    host = first.pid
    first.inject_fault("raise")
    with pytest.raises(AcceleratorFailed, match="invoke failed in the worker: RuntimeError"):
        first.invoke(tensor(first))
    assert second.alive and top1(second) == TOP1[BIRDS] and hosts() == [host]
    first.restart()
    assert first.pid == host and top1(first) == TOP1[V1_050]


def test_the_host_lives_while_a_model_does(pair):
    first, second = pair
    host = second.pid
    first.close()
    assert hosts() == [host] and top1(second) == TOP1[BIRDS]
    second.close()
    assert not hosts() and not Path(f"/proc/{host}").exists()


def test_a_model_the_host_cannot_open_is_its_error_and_disturbs_no_other(pair):
    """The real failure: no libedgetpu.so.1, load_delegate raises OSError in the host's thread."""
    first, second = pair
    with pytest.raises(AcceleratorError, match=r"libedgetpu\.so\.1 is not installed"):
        WorkerEngine(model(V1_050).with_name(f"{V1_050}_edgetpu.tflite"), accelerator="edgetpu", shared=True,
                     start_timeout=30)
    assert hosts() == [first.pid] and (top1(first), top1(second)) == (TOP1[V1_050], TOP1[BIRDS])
