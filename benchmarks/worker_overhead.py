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

    python benchmarks/worker_overhead.py [--frames N] [--rounds R] [--model PATH ...] [--shared]
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=500, help="invokes per block (default 500)")
    parser.add_argument("--rounds", type=int, default=7, help="alternating blocks per side (default 7)")
    parser.add_argument("--model", action="append", type=Path, help="model file (repeatable)")
    parser.add_argument("--shared", action="store_true", help="the worker in the engine host (the Edge TPU's way)")
    args = parser.parse_args()
    paths = args.model or [TESTDATA / "models" / name for name in MODELS]
    rows = [measure(path, args.frames, args.rounds, args.shared) for path in paths]
    print(f"{'model':40} {'engine µs':>10} {'worker µs':>10} {'overhead µs':>12} {'(min..max)':>14} "
          f"{'%':>6} {'engine/s':>9} {'worker/s':>9} {'start ms':>9}")
    for row in rows:
        spread = f"{row['overhead_us_min']}..{row['overhead_us_max']}"
        print(f"{row['model']!s:40} {row['engine_us']:>10} {row['worker_us']:>10} {row['overhead_us']:>12} "
              f"{spread:>14} {row['overhead_pct']:>6} {row['engine_per_s']:>9} {row['worker_per_s']:>9} "
              f"{row['worker_start_ms']:>9}")
    print(json.dumps({"frames": args.frames, "rounds": args.rounds, "shared": args.shared, "cpus": os.cpu_count(),
                      "results": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
