#!/usr/bin/env python3
"""Many cameras, one pipeline: the aggregate rate of 1, 2, 4 and 8 live sources, each
offering frames faster than the pipeline can take them, against the one-source rate, and
each source's share of the results; then a 2 fps source beside a full-speed one.

Everything is the daemon's own code in one process: a ``CaptureGroup`` of paced synthetic
live sources (frames made once, stamped anew: the cost is the pipeline's, not the
camera's), the real ``Pipeline`` with the daemon's worker count, and the real LiteRT
interpreters on the demo model (CPU). First the pipeline's capacity is measured with a
file-like source that never lets it wait; each live source then offers 1.5x that rate
(``--offer each``, the default), or 1.5x its fair share of it (``--offer share``: the
sources together offer 1.5x capacity). The paced synthetic sources are Python threads
waking per frame, so with ``each`` and 8 sources (~10,000 wake-ups/s) they compete with
the pipeline for the interpreter lock: part of what that run measures is the benchmark's
own sources; ``share`` keeps their cost at one source's.

    .venv/bin/python benchmarks/sources.py [--seconds S] [--model PATH] [--offer each|share]

Required (issue 12): aggregate >= 0.95 of one source; every share within 10% of fair; the
2 fps source gets every frame it offered classified.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge_classifier.config.loader import parse_config  # noqa: E402
from edge_classifier.config.schema import SourceConfig  # noqa: E402
from edge_classifier.daemon.models import open_model_set, worker_count  # noqa: E402
from edge_classifier.daemon.pipeline import ModelSet, Outcome, Pipeline  # noqa: E402
from edge_classifier.source.base import Frame, stamp  # noqa: E402
from edge_classifier.source.group import CaptureGroup  # noqa: E402

DEMO = REPO / "models" / "demo_shapes_mobilenet_v2_035_96_quant.tflite"


class PacedSource:
    """A live camera at ``fps`` (0: as fast as it is read, backpressured like a file)."""

    def __init__(self, name: str, fps: float, image: np.ndarray) -> None:
        self.name = name
        self.live = fps > 0
        self.fps = fps
        self.offered = 0
        self._image = image
        self._next = 0.0
        self._stop = threading.Event()

    def open(self) -> None:
        self._next = time.monotonic()

    def read(self) -> Frame | None:
        if self.fps > 0:
            self._next += 1.0 / self.fps
            delay = self._next - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return None
        self.offered += 1
        return stamp(self._image, rgb=False, source=self.name, index=self.offered)

    def wake(self) -> None:
        self._stop.set()

    def close(self) -> None:
        pass


def run(models: ModelSet, workers: int, rates: dict[str, float], seconds: float,
        warmup: float = 1.0) -> tuple[dict[str, int], dict[str, int], float]:
    """Results per source counted over ``seconds`` after ``warmup``; offered per source; seconds."""
    image = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    counts: collections.Counter[str] = collections.Counter()
    counting = threading.Event()

    def emit(outcome: Outcome) -> None:
        # Runs in a pipeline worker; Counter updates under the reorder lock (one at a time).
        if counting.is_set() and outcome.classification is not None:
            counts[outcome.frame.source] += 1

    group = CaptureGroup()
    sources = {name: PacedSource(name, fps, image) for name, fps in rates.items()}
    for name, source in sources.items():
        group.add(name, source, SourceConfig(kind="images", name=name))
    pipeline = Pipeline(group, models, emit, workers=workers).start()
    time.sleep(warmup)  # benchmark pacing, not synchronisation
    offered_before = {name: s.offered for name, s in sources.items()}
    counting.set()
    start = time.perf_counter()
    time.sleep(seconds)
    counting.clear()
    elapsed = time.perf_counter() - start
    offered = {name: s.offered - offered_before[name] for name, s in sources.items()}
    pipeline.stop()
    group.close()
    pipeline.join(5)
    return dict(counts), offered, elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--model", type=Path, default=DEMO)
    parser.add_argument("--offer", choices=("each", "share"), default="each")
    args = parser.parse_args()
    config = parse_config({"model": {"path": str(args.model), "accelerator": "cpu"}}, REPO)
    workers = worker_count(config.model, "cpu")
    models = open_model_set(config.model, config.classify)
    report: dict[str, object] = {"model": args.model.name, "workers": workers}
    try:
        counts, _, elapsed = run(models, workers, {"file": 0.0}, args.seconds)
        capacity = counts.get("file", 0) / elapsed
        offer = 1.5 * capacity
        print(f"pipeline capacity (a source that never lets it wait): {capacity:.1f} frames/s; "
              f"each live source offers {offer:.0f} fps" + (" / n" if args.offer == "share" else ""))
        report["offer"] = args.offer
        report["capacity_fps"] = round(capacity, 1)
        single = 0.0
        ok = True
        print(f"{'sources':>7} {'aggregate fps':>13} {'vs one':>7}  shares (fair = 1/n)")
        for n in (1, 2, 4, 8):
            counts, offered, elapsed = run(models, workers, {f"cam{i}": offer if args.offer == "each" else offer / n
                                                             for i in range(n)}, args.seconds)
            total = sum(counts.values())
            rate = total / elapsed
            single = single or rate
            shares = [counts.get(f"cam{i}", 0) / total if total else 0.0 for i in range(n)]
            worst = max(abs(share * n - 1.0) for share in shares)
            ratio = rate / single
            ok &= ratio >= 0.95 and worst <= 0.10
            print(f"{n:>7} {rate:>13.1f} {ratio:>7.3f}  " + " ".join(f"{s:.3f}" for s in shares)
                  + f"  (worst {worst * 100:.1f}% off fair; offered fps "
                  + " ".join(f"{offered[f'cam{i}'] / elapsed:.0f}" for i in range(n)) + ")")
            report[f"sources_{n}"] = {"fps": round(rate, 1), "vs_one": round(ratio, 3),
                                      "shares": [round(s, 4) for s in shares], "worst_off_fair": round(worst, 4)}
        counts, offered, elapsed = run(models, workers, {"fast": offer, "slow": 2.0}, max(args.seconds, 6.0),
                                       warmup=1.0)
        # Frames of the slow camera offered in the window are classified by its end or the
        # one after it (in flight at the edge): allow the frame taken at the boundary.
        slow_ok = counts.get("slow", 0) >= offered["slow"] - 1 and offered["slow"] >= 2 * int(elapsed) - 1
        ok &= slow_ok
        print(f"2 fps beside {offer:.0f} fps: slow offered {offered['slow']}, classified {counts.get('slow', 0)}; "
              f"fast classified {counts.get('fast', 0)} of {offered['fast']} offered")
        report["slow_beside_fast"] = {"slow_offered": offered["slow"], "slow_classified": counts.get("slow", 0),
                                      "fast_offered": offered["fast"], "fast_classified": counts.get("fast", 0)}
    finally:
        models.close()
    report["ok"] = bool(ok)
    print(json.dumps(report))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
