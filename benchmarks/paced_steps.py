#!/usr/bin/env python3
"""A worker's steps one by one, paced as at a frame-rate cap, in one thread with no MQTT: the
CPU time of prepare (resize, colour, quantize), invoke, and postprocess + encode (scores, top-k,
the JSON result), each frame after a sleep of 1/fps, against the invoke alone paced the same
way. At a cap every step starts with cold caches; this is what the daemon cannot avoid around
the invoke before any thread hand-off or network write. "float scores" rows pick the labels
from all the float scores (top-k), as the daemon did before it picked them from the raw bytes
(and still does when smoothing needs every score).

    python benchmarks/paced_steps.py [--model PATH] [--fps F] [--frames N]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import throughput

from edge_classifier.classifier import Classifier
from edge_classifier.engine import Engine
from edge_classifier.publish.payload import encode_result
from edge_classifier.results import Classification
from edge_classifier.source.base import Frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path,
                        default=throughput.TESTDATA / "models" / "mobilenet_v2_1.0_224_quant.tflite")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--frames", type=int, default=150)
    args = parser.parse_args()
    picture = cv2.resize(cv2.imread(str(throughput.TESTDATA / "images" / "cat_720p.jpg")), (640, 480))
    with Engine.open(args.model, accelerator="cpu", threads=1) as engine:
        classifier = Classifier(engine, [f"class {i}" for i in range(engine.info.output.shape[-1])])
        tensor = classifier.prepare(picture)
        engine.invoke(tensor)
        rows = {}
        modes = ("invoke alone", "all steps", "all steps, float scores", "invoke alone again", "all steps again",
                 "all steps, float scores again")
        for mode in modes:
            steps = {"prepare": 0.0, "invoke": 0.0, "post+encode": 0.0}
            for _ in range(args.frames):
                time.sleep(1.0 / args.fps)  # the pacing a frame-rate cap gives
                start = time.thread_time()
                if "all" in mode:
                    tensor = classifier.prepare(picture)
                prepared = time.thread_time()
                raw, _ = engine.timed_invoke(tensor)
                invoked = time.thread_time()
                if "all" in mode:
                    # As the pipeline does it (from the raw bytes), or the float scores and top-k
                    # it did before (and still does when smoothing needs every score).
                    top = classifier.pick(classifier.scores(raw)) if "float" in mode else classifier.predictions(raw)
                    frame = Frame(picture, False, "bench", 1, time.monotonic(), time.time())
                    encode_result("bench", frame, Classification(top, classifier.info, 1.0, 2.0))
                done = time.thread_time()
                steps["prepare"] += prepared - start
                steps["invoke"] += invoked - prepared
                steps["post+encode"] += done - invoked
            rows[mode] = {name: round(value / args.frames * 1000.0, 3) for name, value in steps.items()}
            print(f"{mode:30s} " + "  ".join(f"{name} {value:.3f} ms" for name, value in rows[mode].items()))
    print(json.dumps({"model": args.model.name, "fps": args.fps, "frames": args.frames, "cpu_ms": rows}))


if __name__ == "__main__":
    main()
