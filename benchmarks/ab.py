#!/usr/bin/env python3
"""The real daemon of two or more checkouts, alternating, in one run (a change's before and after).

For each round a baseline, then each checkout's ``edge-classifier run`` in turn, end to end over
MQTT as ``throughput.py`` measures it (every result published QoS 1 to a Mosquitto started here,
counted by ``mosquitto_sub``): results a second and the daemon's CPU per frame (the scheduler's
nanosecond counts of its threads between the first and the last counted result). The baseline
and the ratio depend on the cap:

- at full rate (``--fps 0``): the raw invoke rate (one interpreter, threads = cores), and the
  ratio is end to end / raw (issue 15, goal 1);
- under a cap (``--fps F``): one invoke paced at F a second (one single-thread interpreter, the
  CPU of the invoke alone, as ``overhead.py`` measures it), and the ratio is the daemon's CPU a
  frame / that (issue 15, goal 5). On these machines it moves by about 0.06 between runs, which
  one pair in ``overhead.py`` cannot show: the rounds give its spread.

Rounds alternate the trees so drift hits all alike; per checkout the means, the lowest and highest
ratio, and the last round's CPU a frame per thread are printed at the end.

    git worktree add ../before HEAD~1
    python benchmarks/ab.py ../before . [--model PATH] [--frames N] [--fps F] [--capped-frames N] [--rounds R]
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
    capped = args.fps > 0
    frames = args.capped_frames if capped else args.frames
    runs: dict[Path, list[dict[str, float]]] = {tree: [] for tree in args.trees}
    threads: dict[Path, list[dict[str, float]]] = {}
    with throughput.bench_rig() as (work, port, counter):
        for round_ in range(args.rounds):
            if capped:
                base = throughput.paced_invoke_cpu(args.model, args.fps, max(150, frames // 2))
                baseline = f"invoke alone {base:6.3f} ms"
            else:
                base, _ = throughput.raw_rate(args.model, cores, 3.0)
                baseline = f"raw {base:8.1f} /s"
            for tree in args.trees:
                throughput.REPO = tree.resolve()  # run_daemon starts `python -m edge_classifier` there
                result = throughput.run_daemon(work, args.model, port, frames, args.fps, cores, counter, split=True)
                cpu = result["cpu_ms_per_frame"]
                ratio = cpu / base if capped else result["rate"] / base
                runs[tree].append({"rate": result["rate"], "ratio": ratio, "cpu_ms": cpu})
                threads[tree] = result["threads"]
                print(f"round {round_} {tree!s:24s} {baseline}  end to end {result['rate']:8.1f} /s  "
                      f"CPU {cpu:.3f} ms a frame  ratio {ratio:.3f}", flush=True)
    what = "CPU a frame / invoke alone" if capped else "end to end / raw"
    for tree, rows in runs.items():
        ratios = [r["ratio"] for r in rows]
        print(f"mean {tree!s:24s} end to end {statistics.mean(r['rate'] for r in rows):8.1f} /s  CPU "
              f"{statistics.mean(r['cpu_ms'] for r in rows):.3f} ms a frame  {what} {statistics.mean(ratios):.3f} "
              f"(lowest {min(ratios):.3f}, highest {max(ratios):.3f}; {len(rows)} runs)")
        print(f"     {'':24s} last round per thread: " + ", ".join(
            f"{t['thread']} {t['cpu_us']:.0f} µs ({t['voluntary']:.2f} switches)" for t in threads[tree]))


if __name__ == "__main__":
    main()
