#!/usr/bin/env python3
"""The real daemon of two or more checkouts, alternating, in one run (a change's before and after).

For each round: the raw invoke rate (one interpreter, threads = cores), then each checkout's
``edge-classifier run`` in turn, end to end over MQTT as ``throughput.py`` measures it (every
result published QoS 1 to a Mosquitto started here, counted by ``mosquitto_sub``): results a
second, the ratio to the raw rate, and the daemon's CPU per frame. Rounds alternate the trees so
drift hits all alike; the means are printed at the end.

    git worktree add ../before HEAD~1
    python benchmarks/ab.py ../before . [--model PATH] [--frames N] [--fps F] [--rounds R]
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
    parser.add_argument("trees", nargs="+", type=Path, help="checkouts whose daemon to run")
    parser.add_argument("--model", type=Path,
                        default=throughput.TESTDATA / "models" / "mobilenet_v1_0.25_128_quant.tflite")
    parser.add_argument("--frames", type=int, default=10000, help="results a run (at --fps 0)")
    parser.add_argument("--fps", type=float, default=0.0, help="the source's frame-rate cap (0: none)")
    parser.add_argument("--capped-frames", type=int, default=150, help="results a run with a cap")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    args.model = args.model.resolve()  # each daemon runs in its own tree
    cores = os.cpu_count() or 1
    runs: dict[Path, list[dict[str, float]]] = {tree: [] for tree in args.trees}
    with throughput.bench_rig() as (work, port, counter):
        for round_ in range(args.rounds):
            raw, _ = throughput.raw_rate(args.model, cores, 3.0)
            for tree in args.trees:
                throughput.REPO = tree.resolve()  # run_daemon starts `python -m edge_classifier` there
                frames = args.frames if args.fps == 0 else args.capped_frames
                result = throughput.run_daemon(work, args.model, port, frames, args.fps, cores, counter, split=True)
                row = {"rate": result["rate"], "ratio": result["rate"] / raw, "cpu_ms": result["cpu_ms_per_frame"]}
                runs[tree].append(row)
                print(f"round {round_} {tree!s:24s} raw {raw:8.1f} /s  end to end {row['rate']:8.1f} /s  "
                      f"ratio {row['ratio']:.3f}  CPU {row['cpu_ms']:.3f} ms a frame", flush=True)
    for tree, rows in runs.items():
        print(f"mean {tree!s:24s} end to end {statistics.mean(r['rate'] for r in rows):8.1f} /s  ratio "
              f"{statistics.mean(r['ratio'] for r in rows):.3f}  CPU {statistics.mean(r['cpu_ms'] for r in rows):.3f} "
              f"ms a frame ({len(rows)} runs)")


if __name__ == "__main__":
    main()
