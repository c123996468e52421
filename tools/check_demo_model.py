#!/usr/bin/env python3
"""Check the committed demo model on the demo images with the real runtime (LiteRT).

Preprocessing is the daemon's: BGR -> RGB, the whole image stretched to the model input
with cv2.INTER_LINEAR, raw uint8 pixels in (the model's input quantization is (1/128, 128)).
Scores are dequantized as ``scale * (q - zero_point)``. An image passes when its top-1
label is the class in its file name (``NN_<class>.jpg``) with a score >= --min-score.
Prints a table and the invoke time per frame; exits 1 if any image fails.

Needs only numpy, opencv and ai-edge-litert (no TensorFlow):

    python3 tools/check_demo_model.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
from ai_edge_litert.interpreter import Interpreter

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO / "models" / "demo_shapes_mobilenet_v2_035_96_quant.tflite"


def embedded_labels(model: Path) -> list[str]:
    with zipfile.ZipFile(model) as archive:
        return archive.read("labels.txt").decode("utf-8").splitlines()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--images", type=Path, default=REPO / "demo" / "images")
    parser.add_argument("--min-score", type=float, default=0.8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=200, help="invokes per image for the timing")
    args = parser.parse_args(argv)

    labels = embedded_labels(args.model)
    interp = Interpreter(model_path=str(args.model), num_threads=args.threads)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    _, height, width, _ = inp["shape"]
    in_scale, in_zero = inp["quantization"]
    out_scale, out_zero = out["quantization"]
    size = args.model.stat().st_size
    print(f"model   {args.model.name} ({size} bytes, {size / 1024:.0f} KiB)")
    print(f"input   {inp['shape'].tolist()} {np.dtype(inp['dtype']).name} quant ({in_scale}, {in_zero})")
    print(f"output  {out['shape'].tolist()} {np.dtype(out['dtype']).name} quant ({out_scale}, {out_zero})")
    print(f"labels  {labels} (embedded labels.txt)")
    if len(labels) != out["shape"][-1]:
        print(f"FAIL: {len(labels)} labels for {out['shape'][-1]} outputs")
        return 1

    paths = sorted(args.images.glob("*.jpg"))
    if not paths:
        print(f"FAIL: no .jpg in {args.images}")
        return 1
    print()
    print(f"{'image':<22} {'size':>8}  {'top-1':<11} {'score':>6}  {'2nd':<11} {'score':>6}  result")
    failures = 0
    times: list[float] = []
    for path in paths:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            print(f"{path.name:<22} unreadable")
            failures += 1
            continue
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        tensor = cv2.resize(rgb, (int(width), int(height)), interpolation=cv2.INTER_LINEAR)
        interp.set_tensor(inp["index"], tensor[np.newaxis])
        interp.invoke()
        q = interp.get_tensor(out["index"])[0]
        scores = out_scale * (q.astype(np.float32) - out_zero)  # dequantize: scale * (q - zero_point)
        order = np.argsort(scores)[::-1]
        want = path.stem.split("_", 1)[1]
        top, second = int(order[0]), int(order[1])
        ok = labels[top] == want and scores[top] >= args.min_score
        failures += not ok
        print(
            f"{path.name:<22} {bgr.shape[1]}x{bgr.shape[0]:<4}  {labels[top]:<11} {scores[top]:6.3f}  "
            f"{labels[second]:<11} {scores[second]:6.3f}  {'ok' if ok else 'FAIL (want ' + want + ')'}"
        )
        for _ in range(args.repeat):
            start = time.perf_counter()
            interp.invoke()
            times.append((time.perf_counter() - start) * 1000)
    print()
    times.sort()
    print(
        f"invoke  {args.threads} thread(s): median {statistics.median(times):.2f} ms, "
        f"p90 {times[int(len(times) * 0.9)]:.2f} ms, min {times[0]:.2f} ms over {len(times)} invokes"
    )
    print(f"{len(paths) - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
