#!/usr/bin/env python3
"""The daemon's per-frame overhead, measured in one run (issue 15, goals 1, 2, 5 and 6).

For each model (the smallest test model, a stand-in for a cheap Edge TPU invoke, and
MobileNetV2):

1. raw invoke rate (one interpreter, threads = cores; before and after the end-to-end run,
   averaged) against the real ``edge-classifier run`` end to end: every result published
   QoS 1 to a Mosquitto started here on a loopback port and counted by ``mosquitto_sub``; and
   against as many single-thread interpreters invoking side by side as the daemon has workers
   (what its own interpreters do with nothing else);
2. CPU time per frame of the whole daemon with the source capped at 30 fps, against one
   invoke paced at 30/s (before and after the daemon's run, averaged; ``ab.py --fps 30`` gives
   the spread over alternating rounds);
3. RSS sampled every half second over the long end-to-end run: first, max, last (and the
   demo model on the demo images, the same way);
4. each thread's CPU and context switches a result, in both daemon runs (thread names from
   ``py-spy dump`` when py-spy is installed, else thread ids): where the time beside the
   invoke goes.

And the supervised worker's crossing (the Edge TPU path) on the smallest model: the
parent's round trip minus the invoke time the child measured itself, per frame (median
and 90th percentile), plus the older estimate (worker per-frame time minus an in-process
engine's, alternating blocks); and with two frames in flight (the pipeline's way), the
per-frame time minus the child's invoke: what of the crossing is left on the critical path.

    python benchmarks/overhead.py [--small-frames N] [--v2-frames N] [--crossings N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import throughput  # noqa: E402
import worker_overhead  # noqa: E402

from edge_classifier.engine.worker import WorkerEngine  # noqa: E402

MODELS = throughput.TESTDATA / "models"
SMALL = MODELS / "mobilenet_v1_0.25_128_quant.tflite"
V2 = MODELS / "mobilenet_v2_1.0_224_quant.tflite"
DEMO = throughput.REPO / "models" / "demo_shapes_mobilenet_v2_035_96_quant.tflite"
DEMO_IMAGES = throughput.REPO / "demo" / "images"


def crossing(path: Path, frames: int) -> dict[str, float]:
    """Per-frame crossing of the supervised worker, from the child's own invoke time."""
    with WorkerEngine(path, accelerator="cpu", threads=1) as worker:
        shape, dtype = worker.info.input.shape, worker.info.input.dtype
        tensor = np.random.default_rng(0).integers(0, 256, shape).astype(dtype)
        for _ in range(50):
            worker.invoke(tensor)
        samples = []
        for _ in range(frames):
            start = time.perf_counter()
            worker.invoke(tensor)
            samples.append((time.perf_counter() - start) * 1e6 - worker.last_child_invoke_us)
    samples.sort()
    # The minimum is the path's own cost (syscalls, copies, pickles) with no scheduling delay;
    # the median adds the wake-ups' latency, which depends on how busy the machine is.
    return {"min_us": round(samples[0], 1), "p10_us": round(samples[len(samples) // 10], 1),
            "median_us": round(statistics.median(samples), 1),
            "p90_us": round(samples[int(len(samples) * 0.9)], 1), "frames": frames}


def overlapped_crossing(path: Path, frames: int) -> dict[str, float]:
    """Per frame with two frames in flight (submit N+1, then collect N: the pipeline's way on a
    worker child): wall time minus the child's own invoke time, i.e. what of the crossing is
    still on the critical path once the next frame waits in the pipe."""
    with WorkerEngine(path, accelerator="cpu", threads=1) as worker:
        shape, dtype = worker.info.input.shape, worker.info.input.dtype
        tensor = np.random.default_rng(0).integers(0, 256, shape).astype(dtype)
        for _ in range(50):
            worker.invoke(tensor)
        worker.submit(tensor)
        child_ms = 0.0
        start = time.perf_counter()
        for _ in range(frames):
            worker.submit(tensor)
            child_ms += worker.collect()[1]
        wall = time.perf_counter() - start
        worker.collect()
    per_frame_us = wall / frames * 1e6
    return {"per_frame_us": round(per_frame_us, 1), "child_invoke_us": round(child_ms / frames * 1000.0, 1),
            "crossing_us": round(per_frame_us - child_ms / frames * 1000.0, 1), "frames": frames}


def model_run(model: Path, frames: int, port: int, counter: throughput.Counter, work: Path,
              args: argparse.Namespace, frames_dir: Path | None = None) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    raw1, _ = throughput.raw_rate(model, cores, args.seconds)
    e2e = throughput.run_daemon(work, model, port, frames, 0, cores, counter, frames_dir=frames_dir, split=True)
    raw2, _ = throughput.raw_rate(model, cores, args.seconds)
    side = throughput.side_by_side_rate(model, cores, args.seconds)
    # The paced invoke before and after the capped run, averaged (as the raw rate is): one paced
    # run minutes from the daemon's once read 10.36 ms against 7.6-9.3 in the rounds around it.
    paced1 = throughput.paced_invoke_cpu(model, 30, args.capped_frames)
    capped = throughput.run_daemon(work, model, port, args.capped_frames, 30, cores, counter,
                                   frames_dir=frames_dir, split=True)
    paced2 = throughput.paced_invoke_cpu(model, 30, args.capped_frames)
    paced = (paced1 + paced2) / 2
    raw = (raw1 + raw2) / 2
    rss = e2e["rss_samples_mb"] or [e2e["rss_first_mb"]]
    return {
        "model": model.name, "raw_per_s": round(raw, 1), "raw_runs": [round(raw1, 1), round(raw2, 1)],
        "end_to_end_per_s": round(e2e["rate"], 1), "ratio": round(e2e["rate"] / raw, 3),
        "side_by_side_per_s": round(side, 1), "ratio_side_by_side": round(e2e["rate"] / side, 3),
        "results": e2e["results"],
        "cpu_ms_frame_30fps": round(capped["cpu_ms_per_frame"], 3), "cpu_ms_invoke_paced": round(paced, 3),
        "cpu_ms_invoke_paced_runs": [round(paced1, 3), round(paced2, 3)],
        "cpu_ratio_30fps": round(capped["cpu_ms_per_frame"] / paced, 3),
        "rss_mb_first_max_last": [round(rss[0], 1), round(max(rss), 1), round(rss[-1], 1)],
        "rss_samples": len(rss), "run_s": round((e2e["results"] - 1) / e2e["rate"], 1),
        "threads_full_rate": e2e["threads"], "threads_30fps": capped["threads"],
    }


def show(row: dict[str, Any]) -> None:
    first, peak, last = row["rss_mb_first_max_last"]
    print(f"{row['model']}")
    print(f"  raw invoke {row['raw_per_s']:9.1f} /s (runs {row['raw_runs'][0]}, {row['raw_runs'][1]})   "
          f"end to end {row['end_to_end_per_s']:9.1f} /s ({row['results']} results, QoS 1)   "
          f"ratio {row['ratio']:.3f}")
    print(f"  {os.cpu_count()} single-thread interpreters side by side {row['side_by_side_per_s']:.1f} /s "
          f"(the daemon's workers' invokes alone): end to end / that {row['ratio_side_by_side']:.3f}")
    print(f"  CPU per frame at 30 fps {row['cpu_ms_frame_30fps']:.3f} ms   invoke alone (paced 30/s) "
          f"{row['cpu_ms_invoke_paced']:.3f} ms (runs {row['cpu_ms_invoke_paced_runs'][0]}, "
          f"{row['cpu_ms_invoke_paced_runs'][1]})   ratio {row['cpu_ratio_30fps']:.3f} "
          "(benchmarks/ab.py --fps 30 gives its spread)")
    print(f"  RSS over {row['run_s']} s ({row['rss_samples']} samples): first {first} MB, max {peak} MB, "
          f"last {last} MB")
    for key, title in (("threads_full_rate", "full rate"), ("threads_30fps", "30 fps")):
        parts = [f"{t['thread']} {t['cpu_us']:.0f} µs ({t['voluntary']:.1f}+{t['involuntary']:.1f} switches)"
                 for t in row[key]]
        print(f"  per thread a result, {title} (CPU; voluntary+involuntary context switches): " + ", ".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small-frames", type=int, default=20000, help="end-to-end frames, smallest model")
    parser.add_argument("--v2-frames", type=int, default=3000, help="end-to-end frames, MobileNetV2")
    parser.add_argument("--demo-frames", type=int, default=20000, help="end-to-end frames, demo model")
    parser.add_argument("--capped-frames", type=int, default=150, help="frames in each 30 fps run")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each raw measurement")
    parser.add_argument("--crossings", type=int, default=3000, help="worker invokes for the crossing")
    args = parser.parse_args()
    if shutil.which("mosquitto") is None:
        raise SystemExit("mosquitto is not installed (apt-get install mosquitto)")
    cross = crossing(SMALL, args.crossings)
    overlapped = overlapped_crossing(SMALL, args.crossings)
    old = worker_overhead.measure(SMALL, 500, 5, shared=False)
    with throughput.bench_rig() as (work, port, counter):
        rows = [model_run(SMALL, args.small_frames, port, counter, work, args),
                model_run(V2, args.v2_frames, port, counter, work, args),
                model_run(DEMO, args.demo_frames, port, counter, work, args, frames_dir=DEMO_IMAGES)]
    for row in rows:
        show(row)
    print(f"worker crossing ({SMALL.name}): min {cross['min_us']} µs, p10 {cross['p10_us']} µs, "
          f"median {cross['median_us']} µs, p90 {cross['p90_us']} µs a frame "
          f"(round trip minus the child's invoke, {cross['frames']} frames); worker minus engine "
          f"{old['overhead_us']} µs ({old['overhead_us_min']}..{old['overhead_us_max']})")
    print(f"worker crossing with two frames in flight: {overlapped['crossing_us']} µs a frame on the critical "
          f"path ({overlapped['per_frame_us']} µs a frame against the child's {overlapped['child_invoke_us']} µs "
          f"invoke)")
    print(json.dumps({"cores": os.cpu_count(), "models": rows, "crossing": cross, "overlapped_crossing": overlapped,
                      "worker_minus_engine_us": old["overhead_us"]}))


if __name__ == "__main__":
    main()
