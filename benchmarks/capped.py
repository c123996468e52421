#!/usr/bin/env python3
"""Goal 5 of issue 15 with its spread: the daemon's CPU a frame at a 30 fps cap against one
invoke paced at 30/s, in alternating rounds (one run of ``overhead.py`` gives one pair, and on
these machines the ratio moves by about 0.06 between runs).

Each round measures the paced invoke (one single-thread interpreter, CPU of the invoke alone,
as ``overhead.py`` does), then the real ``edge-classifier run`` of each checkout given, capped
at ``--fps``, every result published QoS 1 to a Mosquitto started here and counted by
``mosquitto_sub``; the daemon's CPU from the scheduler's nanosecond counts of its threads between
the first and the last counted result. Printed: each round's ratio, then per checkout the mean,
lowest and highest ratio, and the last round's CPU a frame per thread.

    python benchmarks/capped.py [TREE ...] [--model PATH] [--rounds R] [--frames N] [--fps F]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="*", type=Path, help="checkouts whose daemon to run (default: this one)")
    parser.add_argument("--model", type=Path,
                        default=throughput.TESTDATA / "models" / "mobilenet_v2_1.0_224_quant.tflite")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--frames", type=int, default=300, help="results a daemon run")
    parser.add_argument("--fps", type=float, default=30.0)
    args = parser.parse_args()
    model = args.model.resolve()
    trees = [tree.resolve() for tree in args.trees] or [throughput.REPO]
    ratios: dict[Path, list[float]] = {tree: [] for tree in trees}
    last: dict[Path, list[dict[str, float]]] = {}
    with throughput.bench_rig() as (work, port, counter):
        for round_ in range(args.rounds):
            paced = throughput.paced_invoke_cpu(model, args.fps, max(150, args.frames // 2))
            for tree in trees:
                throughput.REPO = tree  # run_daemon starts `python -m edge_classifier` there
                result = throughput.run_daemon(work, model, port, args.frames, args.fps, os.cpu_count() or 1, counter,
                                             split=True)
                ratio = result["cpu_ms_per_frame"] / paced
                ratios[tree].append(ratio)
                last[tree] = result["threads"]
                print(f"round {round_} {tree.name:16s} CPU a frame {result['cpu_ms_per_frame']:.3f} ms, invoke "
                      f"alone {paced:.3f} ms: ratio {ratio:.3f} ({result['rate']:.1f} results/s)", flush=True)
    print(f"{model.name} at {args.fps:g} fps, {args.rounds} rounds of {args.frames} results:")
    for tree, values in ratios.items():
        threads = ", ".join(f"{t['thread']} {t['cpu_us']:.0f} µs ({t['voluntary']:.2f} switches)"
                            for t in last[tree])
        print(f"  {tree.name:16s} CPU a frame / invoke alone: mean {statistics.mean(values):.3f}, lowest "
              f"{min(values):.3f}, highest {max(values):.3f}")
        print(f"  {'':16s} last round per thread: {threads}")


if __name__ == "__main__":
    main()
