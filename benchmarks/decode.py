#!/usr/bin/env python3
"""What a reduced-scale JPEG decode (``source.reduced_decode``) saves on a 1080p frame.

A 1920x1080 JPEG (cat_720p.jpg upscaled, quality 90) decoded by ``decode_image`` whole and
at the reductions chosen for the test models' inputs (224 -> 1/4, 128 -> 1/8), plus the
stretch to the model input that follows, in alternating blocks so drift hits all alike.
Prints the median milliseconds per decode and the ratios, all from this one run.

    python benchmarks/decode.py [--frames N] [--rounds R]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
TESTDATA = Path(os.environ.get("EDGE_CLASSIFIER_TESTDATA", REPO.parent / "shared" / "testdata"))
sys.path.insert(0, str(REPO))

from edge_classifier.preprocess.decode import ImageLimits, decode_image  # noqa: E402
from edge_classifier.preprocess.resize import stretch  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=30, help="decodes per block")
    parser.add_argument("--rounds", type=int, default=5, help="alternating blocks per variant")
    args = parser.parse_args()

    frame = cv2.resize(cv2.imread(str(TESTDATA / "images" / "cat_720p.jpg")), (1920, 1080),
                       interpolation=cv2.INTER_CUBIC)
    data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    limits = ImageLimits()
    cv2.setNumThreads(1)  # one core, as a source thread has on a Pi under load

    def variant(target: tuple[int, int] | None, size: int) -> Callable[[], None]:
        return lambda: stretch(decode_image(data, limits, reduce_to=target), size, size)

    variants = {
        "whole -> 224": variant(None, 224), "reduced -> 224": variant((224, 224), 224),
        "whole -> 128": variant(None, 128), "reduced -> 128": variant((128, 128), 128),
    }
    shapes = {name: list(decode_image(data, limits, reduce_to=None if "whole" in name else
                                      (int(name[-3:]),) * 2).shape[:2]) for name in variants}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for call in variants.values():
        call()
    for _ in range(args.rounds):
        for name, call in variants.items():
            start = time.perf_counter()
            for _ in range(args.frames):
                call()
            times[name].append((time.perf_counter() - start) / args.frames * 1e3)
    ms = {name: round(statistics.median(values), 2) for name, values in times.items()}
    print(json.dumps({
        "machine": f"{os.cpu_count()} cpus, 1 OpenCV thread",
        "jpeg": {"size": "1920x1080", "bytes": len(data)},
        "decoded_hw": shapes,
        "decode_and_stretch_ms": ms,
        "ratio_224": round(ms["reduced -> 224"] / ms["whole -> 224"], 2),
        "ratio_128": round(ms["reduced -> 128"] / ms["whole -> 128"], 2),
    }, indent=1))


if __name__ == "__main__":
    main()
