"""WorkerEngine: the real interpreter in a real spawned child, on the real CPU model.

The failures are staged in the child the way the real ones happen (``os.abort()`` as
libedgetpu does on a USB transfer error, a RuntimeError out of invoke, an invoke that
never returns), and the Edge TPU failure is the real one: no libedgetpu on this machine.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from support.testdata import REPO, V1_025, image, model

from edge_classifier.classifier import Classifier
from edge_classifier.cli.classify import read_image
from edge_classifier.engine import Engine
from edge_classifier.engine.shm import SHM_PREFIX
from edge_classifier.engine.worker import WorkerEngine
from edge_classifier.engine.worker_child import FAULT_ENV, PACE_ENV, Fault
from edge_classifier.errors import AcceleratorError, AcceleratorFailed, ConfigError, InputMissingError

TIMEOUT = 0.5  # the hung-device timeout in these tests
IMAGES = ("parrot.jpg", "cat.bmp", "bird.bmp", "grace_hopper.bmp")


def our_segments() -> set[str]:
    """This process's worker segments in /dev/shm."""
    mine = f"{SHM_PREFIX}{os.getpid()}-"
    return {name for name in os.listdir("/dev/shm") if name.startswith(mine)}


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with Engine.open(model(V1_025), accelerator="cpu", threads=1) as opened:
        yield opened


@pytest.fixture(scope="module")
def tensors(engine: Engine) -> list[np.ndarray]:
    classifier = Classifier(engine, [str(i) for i in range(engine.info.classes)])
    return [classifier.prepare(read_image(str(image(name)))) for name in IMAGES]


@pytest.fixture
def worker() -> Iterator[WorkerEngine]:
    assert not our_segments()
    with WorkerEngine(model(V1_025), accelerator="cpu", threads=1, timeout=TIMEOUT) as started:
        yield started
    assert not our_segments(), "shared memory leaked"


def assert_healthy(worker: WorkerEngine, engine: Engine, tensors: list[np.ndarray]) -> None:
    assert worker.alive and worker.failure is None
    for tensor in tensors:
        expected = engine.invoke(tensor)
        got = worker.invoke(tensor)
        assert got.dtype == expected.dtype and got.shape == expected.shape
        assert np.array_equal(got, expected)


def test_results_equal_the_in_process_engine_bit_for_bit(worker, engine, tensors):
    assert worker.info == engine.info
    assert worker.pid is not None and worker.pid != os.getpid()
    assert len(our_segments()) == 2  # one input segment, one output segment (two slots each)
    assert_healthy(worker, engine, tensors)
    raw, ms = worker.timed_invoke(tensors[0])
    assert ms > 0 and np.array_equal(raw, engine.invoke(tensors[0]))


def test_a_classifier_runs_on_the_worker(worker):
    classifier = Classifier(worker, [str(i) for i in range(1001)])
    result = classifier.classify(read_image(str(image("parrot.jpg"))))
    assert result.top[0].id == 89
    assert result.model.accelerator == "cpu"


def test_the_returned_output_is_a_copy(worker, tensors):
    first = worker.invoke(tensors[0])
    kept = first.copy()
    worker.invoke(tensors[1])
    assert np.array_equal(first, kept)


@pytest.mark.parametrize(
    ("fault", "message", "limit"),
    [
        ("abort", r"died while invoking: killed by SIGABRT", 1.0),
        ("raise", r"invoke failed in the worker: RuntimeError: .*EdgeTpuDelegateForCustomOp", 1.0),
        ("hang", rf"no answer within {TIMEOUT:g} s while invoking; killed it", TIMEOUT + 0.5),
    ],
)
def test_a_failing_child_is_an_error_in_the_parent_then_restart_recovers(
    worker, engine, tensors, fault, message, limit
):
    assert_healthy(worker, engine, tensors[:1])
    old_pid = worker.pid
    worker.inject_fault(fault)
    start = time.monotonic()
    with pytest.raises(AcceleratorFailed, match=message) as caught:
        worker.invoke(tensors[0])
    elapsed = time.monotonic() - start
    assert elapsed < limit, f"{fault}: detected after {elapsed:.3f} s"
    assert caught.value.exit_code == 69
    assert f"pid {old_pid}" in str(caught.value)
    # The parent survives, the child is gone, its shared memory is unlinked.
    assert not worker.alive
    assert worker.failure is not None and worker.failure.kind == {"abort": "died", "raise": "raised"}.get(
        fault, "timeout")
    assert not our_segments()
    assert old_pid is not None and not Path(f"/proc/{old_pid}").exists()
    with pytest.raises(AcceleratorFailed, match="dead until restart"):
        worker.invoke(tensors[0])
    # A fresh child behaves normally.
    worker.restart()
    assert worker.pid != old_pid and worker.restarts == 1
    assert_healthy(worker, engine, tensors)


def test_a_fault_after_n_good_frames(worker, engine, tensors):
    worker.inject_fault("raise@3")
    assert_healthy(worker, engine, tensors[:3])
    with pytest.raises(AcceleratorFailed, match="RuntimeError"):
        worker.invoke(tensors[3])


def test_a_fault_from_the_constructor_is_for_the_first_child_only(engine, tensors):
    with WorkerEngine(model(V1_025), accelerator="cpu", timeout=TIMEOUT, fault="abort") as worker:
        with pytest.raises(AcceleratorFailed, match="SIGABRT"):
            worker.invoke(tensors[0])
        worker.restart()
        assert_healthy(worker, engine, tensors)
        worker.restart(fault="raise")
        with pytest.raises(AcceleratorFailed, match="RuntimeError"):
            worker.invoke(tensors[0])
    assert not our_segments()


def test_a_fault_from_the_environment_is_read_by_every_child(monkeypatch, engine, tensors):
    monkeypatch.setenv(FAULT_ENV, "abort@1")
    with WorkerEngine(model(V1_025), accelerator="cpu", timeout=TIMEOUT) as worker:
        assert_healthy(worker, engine, tensors[:1])
        with pytest.raises(AcceleratorFailed, match="SIGABRT"):
            worker.invoke(tensors[0])
        worker.restart()  # still told to fail
        assert_healthy(worker, engine, tensors[:1])
        with pytest.raises(AcceleratorFailed, match="SIGABRT"):
            worker.invoke(tensors[0])
        monkeypatch.delenv(FAULT_ENV)
        worker.restart()
        assert_healthy(worker, engine, tensors)


def test_a_bad_fault_in_the_environment_is_a_config_error(monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "explode")
    with pytest.raises(ConfigError, match=f"{FAULT_ENV}: Invalid worker fault: 'explode'"):
        WorkerEngine(model(V1_025), accelerator="cpu")
    assert not our_segments()


def test_the_pace_drill_makes_every_invoke_last_as_long_with_the_real_answers(monkeypatch, engine, tensors):
    monkeypatch.setenv(PACE_ENV, "40")
    with WorkerEngine(model(V1_025), accelerator="cpu", threads=1) as worker:
        for tensor in tensors:
            # The child's clock covers the real invoke and the drill's sleep: at least 40 ms,
            # where this model's own invoke is well under 10 ms.
            start = time.perf_counter()
            answer = worker.invoke(tensor)
            assert time.perf_counter() - start >= 0.040
            assert worker.last_child_invoke_us >= 40_000
            np.testing.assert_array_equal(answer, engine.invoke(tensor))


@pytest.mark.parametrize("value", ["fast", "-1", "nan", "20000"])
def test_a_bad_pace_is_a_config_error_naming_it(monkeypatch, value):
    monkeypatch.setenv(PACE_ENV, value)
    with pytest.raises(ConfigError, match=f"{PACE_ENV}: '{value}' is not a number of milliseconds"):
        WorkerEngine(model(V1_025), accelerator="cpu")
    assert not our_segments()


def test_fault_parsing():
    assert Fault.parse("hang@7") == Fault("hang", 7)
    with pytest.raises(ValueError, match="Invalid worker fault: 'abort@x'"):
        Fault.parse("abort@x")
    with pytest.raises(ValueError, match="'melt'"):
        WorkerEngine(model(V1_025), fault="melt")


def test_the_missing_edgetpu_runtime_is_an_accelerator_error_from_the_constructor():
    """The real failure here: libedgetpu.so.1 is absent, load_delegate raises OSError in the child."""
    start = time.monotonic()
    with pytest.raises(AcceleratorError, match=r"libedgetpu\.so\.1 is not installed") as caught:
        WorkerEngine(model(V1_025), accelerator="edgetpu", start_timeout=30)
    assert time.monotonic() - start < 10
    assert type(caught.value) is AcceleratorError and caught.value.exit_code == 69
    assert not our_segments()


def test_auto_falls_back_to_the_cpu_twin_in_the_child(engine, tensors):
    with WorkerEngine(model(V1_025), accelerator="auto") as worker:
        assert worker.info.accelerator == "cpu"
        assert worker.info.fallback is not None and "libedgetpu" in worker.info.fallback
        assert_healthy(worker, engine, tensors[:1])


def test_the_model_errors_keep_their_class(tmp_path):
    with pytest.raises(InputMissingError, match="model file not found"):
        WorkerEngine(tmp_path / "nope.tflite")
    with pytest.raises(ConfigError, match=r"model\.accelerator"):
        WorkerEngine(model(V1_025), accelerator="gpu")
    assert not our_segments()


@pytest.mark.parametrize(("fault", "message"), [("abort-open", "died while loading the model: killed by SIGABRT"),
                                                ("hang-open", "no answer within 1 s while loading the model")])
def test_a_child_that_dies_or_hangs_while_loading(fault, message):
    start = time.monotonic()
    with pytest.raises(AcceleratorFailed, match=message):
        WorkerEngine(model(V1_025), accelerator="cpu", start_timeout=1.0, fault=fault)
    assert time.monotonic() - start < 2.5
    assert not our_segments()


def test_a_failed_restart_leaves_the_worker_dead(worker, engine, tensors):
    with pytest.raises(AcceleratorFailed, match="SIGABRT"):
        worker.restart(fault="abort-open")
    assert not worker.alive
    with pytest.raises(AcceleratorFailed):
        worker.invoke(tensors[0])
    worker.restart()
    assert_healthy(worker, engine, tensors[:1])


def test_a_wrong_tensor_is_a_value_error_and_the_worker_carries_on(worker, engine, tensors):
    with pytest.raises(ValueError, match=r"input must be uint8 \[1, 128, 128, 3\], not uint8 \[1, 64, 64, 3\]"):
        worker.invoke(np.zeros((1, 64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="not float32"):
        worker.invoke(np.zeros((1, 128, 128, 3), np.float32))
    assert_healthy(worker, engine, tensors[:1])


def test_two_frames_in_flight_come_back_in_order(worker, engine, tensors):
    assert worker.slots == 2 and worker.in_flight == 0
    for first, second in itertools.pairwise(tensors):
        worker.submit(first)
        worker.submit(second)
        assert worker.in_flight == 2
        with pytest.raises(RuntimeError, match="2 frames in flight"):
            worker.submit(first)
        with pytest.raises(RuntimeError, match="not collected"):
            worker.invoke(first)
        got, ms = worker.collect()
        assert ms > 0 and np.array_equal(got, engine.invoke(first))
        worker.submit(first)  # the slot just collected is free again
        assert np.array_equal(worker.collect()[0], engine.invoke(second))
        assert np.array_equal(worker.collect()[0], engine.invoke(first))
    assert worker.in_flight == 0
    with pytest.raises(RuntimeError, match="no frame submitted"):
        worker.collect()
    assert_healthy(worker, engine, tensors)


@pytest.mark.parametrize(("fault", "first"), [("raise@1", "invoke failed in the worker: RuntimeError"),
                                              ("abort@1", "died while invoking: killed by SIGABRT")])
def test_a_failure_with_two_frames_in_flight_fails_both(worker, engine, tensors, fault, first):
    worker.inject_fault(fault)
    worker.submit(tensors[0])  # good
    worker.submit(tensors[1])  # fails
    assert np.array_equal(worker.collect()[0], engine.invoke(tensors[0]))
    with pytest.raises(AcceleratorFailed, match=first):
        worker.collect()
    assert worker.in_flight == 0 and not worker.alive and not our_segments()
    with pytest.raises(AcceleratorFailed, match="dead until restart"):
        worker.submit(tensors[0])
    worker.restart()
    assert_healthy(worker, engine, tensors)


def test_a_failure_on_the_first_of_two_frames_loses_the_second_too(worker, engine, tensors):
    worker.inject_fault("raise")
    worker.submit(tensors[0])
    worker.submit(tensors[1])
    with pytest.raises(AcceleratorFailed, match="invoke failed in the worker"):
        worker.collect()
    with pytest.raises(AcceleratorFailed, match="dead until restart"):
        worker.collect()
    assert worker.in_flight == 0 and not our_segments()


def test_close_is_idempotent_and_final(tensors):
    worker = WorkerEngine(model(V1_025), accelerator="cpu")
    pid = worker.pid
    worker.close()
    worker.close()
    assert not our_segments() and not Path(f"/proc/{pid}").exists()
    with pytest.raises(AcceleratorFailed, match="closed"):
        worker.invoke(tensors[0])
    with pytest.raises(AcceleratorFailed, match="closed"):
        worker.restart()


def test_close_from_another_thread_wakes_a_hung_invoke(tensors):
    worker = WorkerEngine(model(V1_025), accelerator="cpu", timeout=60.0)
    worker.inject_fault("hang")
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            worker.invoke(tensors[0])
        except BaseException as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call, name="test-invoke")
    caller.start()
    time.sleep(0.3)
    start = time.monotonic()
    worker.close()
    caller.join(5)
    assert time.monotonic() - start < 2
    assert len(outcome) == 1 and isinstance(outcome[0], AcceleratorFailed)
    assert "closed meanwhile" in str(outcome[0])
    assert not our_segments()


def test_no_resource_tracker_complaints_after_every_failure():
    """The resource tracker reports leaked segments on stderr when the program ends."""
    script = textwrap.dedent(f"""
        import numpy as np
        from edge_classifier.engine.worker import WorkerEngine
        from edge_classifier.errors import AcceleratorFailed

        if __name__ == "__main__":
            tensor = np.zeros((1, 128, 128, 3), np.uint8)
            with WorkerEngine({str(model(V1_025))!r}, accelerator="cpu", timeout=0.5) as worker:
                for fault in ("abort", "raise", "hang"):
                    worker.invoke(tensor)
                    worker.inject_fault(fault)
                    try:
                        worker.invoke(tensor)
                    except AcceleratorFailed:
                        worker.restart()
                worker.invoke(tensor)
            print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    assert "resource_tracker" not in done.stderr and "leaked" not in done.stderr, done.stderr
