"""``edge-classifier bench``: raw invoke rate against the pipeline's end-to-end rate, as JSON.

In process, on a synthetic 640x480 frame: (1) one interpreter with ``model.threads``
threads invoking on a prepared tensor; (2) the daemon's pipeline (its interpreters, frame
order, preprocessing) fed the same frame as fast as it takes them, without MQTT (for the
rate with every result published over MQTT, run ``benchmarks/throughput.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import time

import numpy as np

from edge_classifier.cli.common import add_config_option, config_from_args
from edge_classifier.daemon.models import open_model_set
from edge_classifier.daemon.pipeline import Outcome, Pipeline
from edge_classifier.daemon.telemetry import percentile
from edge_classifier.engine.interpreter import Engine
from edge_classifier.errors import UsageError
from edge_classifier.source.base import Frame, stamp
from edge_classifier.source.capture import Capture

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="measure raw and end-to-end inference rates (JSON)")
    add_config_option(parser)
    parser.add_argument("--model", metavar="M", help="model file (default: model.path from the config)")
    parser.add_argument("--frames", type=int, default=500, metavar="N", help="frames per measurement")
    parser.set_defaults(run=run)


class _SameFrame:
    """A finite source handing out one synthetic frame ``count`` times."""

    live = False

    def __init__(self, image: np.ndarray, count: int) -> None:
        self.name = "bench"
        self._image = image
        self._left = count
        self._index = 0

    def open(self) -> None:
        pass

    def read(self) -> Frame | None:
        if self._left <= 0:
            return None
        self._left -= 1
        self._index += 1
        return stamp(self._image, rgb=False, source=self.name, index=self._index)

    def close(self) -> None:
        pass


def run(args: argparse.Namespace) -> int:
    if args.frames < 10:
        raise UsageError(f"--frames: must be >= 10, not {args.frames}")
    config = config_from_args(args)
    if args.model:
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, path=args.model))
    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    models = open_model_set(config.model, config.classify)
    try:
        info = models.info
        raw_rate, raw_ms = _raw(config.model.threads, info.path, info.accelerator, config.model.device,
                                models.classifiers[0].prepare(image), args.frames)
        totals: list[float] = []
        stamps: list[float] = []

        def emit(outcome: Outcome) -> None:
            # Crossing: pipeline workers call this in frame order; the lists are only appended to.
            if outcome.classification is not None:
                totals.append(outcome.classification.total_ms)
                stamps.append(time.perf_counter())

        capture = Capture(_SameFrame(image, args.frames + 20)).start()
        pipeline = Pipeline(capture, models, emit, max_frames=args.frames + 20)
        pipeline.start()
        pipeline.finished.wait()
        capture.close()
        # The first 20 results warm up; the rate is over the rest, from emit to emit.
        timed = stamps[20:]
        end_to_end = (len(timed) - 1) / (timed[-1] - timed[0]) if len(timed) > 1 else 0.0
    finally:
        models.close()
    summary = {
        "model": info.name,
        "accelerator": info.accelerator,
        "threads": config.model.threads,
        "interpreters": len(models.classifiers),
        "frames": args.frames,
        "raw_invokes_per_s": round(raw_rate, 1),
        "raw_latency_ms": {"p50": percentile(raw_ms, 50), "p95": percentile(raw_ms, 95)},
        "end_to_end_per_s": round(end_to_end, 1),
        "ratio": round(end_to_end / raw_rate, 3) if raw_rate else None,
        "end_to_end_latency_ms": {"p50": percentile(totals, 50), "p95": percentile(totals, 95)},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
    }
    print(json.dumps(summary))
    return 0


def _raw(threads: int, path: object, accelerator: str, device: str, tensor: np.ndarray,
         frames: int) -> tuple[float, list[float]]:
    engine_accelerator = "cpu" if accelerator == "cpu" else "edgetpu"
    with Engine.open(str(path), accelerator=engine_accelerator, device=device, threads=threads) as engine:
        for _ in range(10):
            engine.invoke(tensor)
        times = []
        start = time.perf_counter()
        for _ in range(frames):
            _, ms = engine.timed_invoke(tensor)
            times.append(ms)
        return frames / (time.perf_counter() - start), times
