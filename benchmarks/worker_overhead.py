#!/usr/bin/env python3
"""What crossing to the engine worker process costs per frame.

For each model: an in-process ``Engine`` and a ``WorkerEngine`` (child process, shared
memory slots, pipe round trip) on the same model, 1 thread each, invoked on the same
preprocessed tensor in alternating blocks (so drift and noise hit both alike). The
overhead is the median per-frame time of the worker minus that of the engine. The tiny
MobileNet v1 0.25 makes the crossing visible; MobileNet v2 shows it against a real model.
Also the one-off cost: starting a worker (spawn + model load), as a restart costs.
``--shared`` puts the worker in the engine host (``engine/host.py``, where every Edge TPU
model of the daemon runs) instead of a child of its own.

``--daemon N``: what the overlap in the pipeline buys on the Edge TPU path. The real
``edge-classifier run`` on the smallest model in ONE supervised worker child with one thread
(``model.isolate``, ``interpreters = 1``: the shape of a one-Coral set; the child's invoke runs
on the other core, as a Coral's runs off the parent's CPU), every result published QoS 1 to a
Mosquitto started here and counted by ``mosquitto_sub``; N frames per run, serial
(``EDGE_CLASSIFIER_OVERLAP=0``) and overlapped alternately, twice each. Against the child's
own invoke rate (its invoke time as the child measures it, serial invokes through the same
worker): the ceiling, what a daemon with no overhead would publish. Also CPU per frame of the
daemon process and of its worker child, from /proc. On a 2-core machine the child's invoke,
the daemon's other threads, the broker and the counting subscriber share the cores, which a
Coral's invoke would not: the overlap gains more on the real thing than it can show here.
With ``--shared`` the daemon's worker is a thread of the engine host, as a TPU model's is.
``--pace-ms T`` (with ``--daemon``): the worker child's pace drill (``engine/worker_child.py``):
every invoke lasts at least T ms, the rest of it a sleep that costs no CPU, as a Coral's invoke
does (about 2.6 ms for MobileNetV2): whether the daemon keeps such a device busy.

    python benchmarks/worker_overhead.py [--frames N] [--rounds R] [--model PATH ...] [--shared]
                                         [--daemon N [--daemon-model PATH] [--pace-ms T]]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TESTDATA = Path(os.environ.get("EDGE_CLASSIFIER_TESTDATA", REPO.parent / "shared" / "testdata"))
sys.path.insert(0, str(REPO))

from edge_classifier.engine import Engine  # noqa: E402
from edge_classifier.engine.worker import WorkerEngine  # noqa: E402
from edge_classifier.engine.worker_child import PACE_ENV  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
import throughput  # noqa: E402

MODELS = ("mobilenet_v1_0.25_128_quant.tflite", "mobilenet_v2_1.0_224_quant.tflite")


def per_frame_us(invoke, tensor: np.ndarray, frames: int) -> float:
    start = time.perf_counter()
    for _ in range(frames):
        invoke(tensor)
    return (time.perf_counter() - start) / frames * 1e6


def measure(path: Path, frames: int, rounds: int, shared: bool) -> dict[str, float | str]:
    start = time.perf_counter()
    worker = WorkerEngine(path, accelerator="cpu", threads=1, shared=shared)
    start_ms = (time.perf_counter() - start) * 1000.0
    with Engine.open(path, accelerator="cpu", threads=1) as engine, worker:
        shape, dtype = engine.info.input.shape, engine.info.input.dtype
        tensor = np.random.default_rng(0).integers(0, 256, shape).astype(dtype)
        assert np.array_equal(engine.invoke(tensor), worker.invoke(tensor))
        per_frame_us(engine.invoke, tensor, frames // 4)  # warm both up
        per_frame_us(worker.invoke, tensor, frames // 4)
        local, remote = [], []
        for _ in range(rounds):
            local.append(per_frame_us(engine.invoke, tensor, frames))
            remote.append(per_frame_us(worker.invoke, tensor, frames))
    engine_us, worker_us = statistics.median(local), statistics.median(remote)
    overheads = [r - lo for lo, r in zip(local, remote, strict=True)]
    return {
        "model": path.name,
        "engine_us": round(engine_us, 1),
        "worker_us": round(worker_us, 1),
        "overhead_us": round(worker_us - engine_us, 1),
        "overhead_us_min": round(min(overheads), 1),
        "overhead_us_max": round(max(overheads), 1),
        "overhead_pct": round((worker_us - engine_us) / engine_us * 100.0, 1),
        "engine_per_s": round(1e6 / engine_us, 1),
        "worker_per_s": round(1e6 / worker_us, 1),
        "worker_start_ms": round(start_ms, 1),
    }


def child_invoke_rate(path: Path, frames: int) -> float:
    """Invokes per second by the child's own clock: the rate a daemon without overhead reaches."""
    with WorkerEngine(path, accelerator="cpu", threads=1) as worker:
        tensor = np.random.default_rng(0).integers(0, 256, worker.info.input.shape).astype(worker.info.input.dtype)
        for _ in range(100):
            worker.invoke(tensor)
        total = 0.0
        for _ in range(frames):
            worker.invoke(tensor)
            total += worker.last_child_invoke_us
    return 1e6 / (total / frames)


def daemon_rate(work: Path, path: Path, port: int, counter: throughput.Counter, frames: int,
                overlap: bool, shared: bool) -> dict[str, float]:
    env = {**os.environ, "EDGE_CLASSIFIER_OVERLAP": "1" if overlap else "0"}
    if shared:
        env["EDGE_CLASSIFIER_WORKER_HOST"] = "shared"  # the worker is a thread of the engine host
    run = throughput.run_daemon(work, path, port, frames, 0, 1, counter,
                                model_extra="interpreters = 1\nisolate = true", env=env)
    return {"per_s": run["rate"], "cpu_ms_frame": run["cpu_ms_per_frame"],
            "child_cpu_ms_frame": run["child_cpu_ms_per_frame"]}


def overlap_rows(path: Path, frames: int, shared: bool) -> dict[str, object]:
    ceiling = child_invoke_rate(path, 2000)
    runs: dict[str, list[dict[str, float]]] = {"serial": [], "overlap": []}
    with throughput.bench_rig() as (work, port, counter):
        for _ in range(2):
            for mode in ("serial", "overlap"):
                runs[mode].append(daemon_rate(work, path, port, counter, frames, mode == "overlap", shared))
    ceiling_after = child_invoke_rate(path, 2000)
    invoke = (ceiling + ceiling_after) / 2
    row: dict[str, object] = {"model": path.name, "shared": shared, "child_invoke_per_s": round(invoke, 1),
                              "child_invoke_runs": [round(ceiling, 1), round(ceiling_after, 1)], "frames": frames}
    for mode, results in runs.items():
        rate = statistics.median(r["per_s"] for r in results)
        row[mode] = {"per_s": round(rate, 1), "runs": [round(r["per_s"], 1) for r in results],
                     "ratio_to_invoke": round(rate / invoke, 3),
                     "cpu_ms_frame": round(statistics.median(r["cpu_ms_frame"] for r in results), 3),
                     "child_cpu_ms_frame": round(statistics.median(r["child_cpu_ms_frame"] for r in results), 3)}
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=500, help="invokes per block (default 500)")
    parser.add_argument("--rounds", type=int, default=7, help="alternating blocks per side (default 7)")
    parser.add_argument("--model", action="append", type=Path, help="model file (repeatable)")
    parser.add_argument("--shared", action="store_true", help="the worker in the engine host (the Edge TPU's way)")
    parser.add_argument("--daemon", type=int, default=0, metavar="N",
                        help="also the daemon through one worker child, serial vs overlapped, N frames a run")
    parser.add_argument("--daemon-model", type=Path, default=TESTDATA / "models" / MODELS[0],
                        help="the model of --daemon (default: the smallest)")
    parser.add_argument("--pace-ms", type=float, default=0.0, metavar="T",
                        help="with --daemon: every worker invoke lasts at least T ms (a Coral stand-in)")
    args = parser.parse_args()
    if args.pace_ms:
        os.environ[PACE_ENV] = f"{args.pace_ms:g}"  # read by every worker child, the daemon's too
    paths = args.model or [TESTDATA / "models" / name for name in MODELS]
    rows = [measure(path, args.frames, args.rounds, args.shared) for path in paths]
    print(f"{'model':40} {'engine µs':>10} {'worker µs':>10} {'overhead µs':>12} {'(min..max)':>14} "
          f"{'%':>6} {'engine/s':>9} {'worker/s':>9} {'start ms':>9}")
    for row in rows:
        spread = f"{row['overhead_us_min']}..{row['overhead_us_max']}"
        print(f"{row['model']!s:40} {row['engine_us']:>10} {row['worker_us']:>10} {row['overhead_us']:>12} "
              f"{spread:>14} {row['overhead_pct']:>6} {row['engine_per_s']:>9} {row['worker_per_s']:>9} "
              f"{row['worker_start_ms']:>9}")
    overlap = overlap_rows(args.daemon_model.resolve(), args.daemon, args.shared) if args.daemon else None
    if overlap is not None:
        where = "the engine host" if args.shared else "one worker child"
        paced = f", every invoke paced to {args.pace_ms:g} ms" if args.pace_ms else ""
        print(f"daemon through {where} ({overlap['model']}{paced}, {overlap['frames']} frames a run, QoS 1): "
              f"child's own invoke rate {overlap['child_invoke_per_s']} /s (runs {overlap['child_invoke_runs']})")
        for mode in ("serial", "overlap"):
            cell = overlap[mode]
            assert isinstance(cell, dict)
            print(f"  {mode:8} {cell['per_s']:8} /s (runs {cell['runs']})  ratio to the child's invoke "
                  f"{cell['ratio_to_invoke']:.3f}   CPU per frame: daemon {cell['cpu_ms_frame']:.3f} ms, "
                  f"worker child {cell['child_cpu_ms_frame']:.3f} ms")
    print(json.dumps({"frames": args.frames, "rounds": args.rounds, "shared": args.shared, "cpus": os.cpu_count(),
                      "pace_ms": args.pace_ms,
                      "results": rows, "overlap": overlap}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
