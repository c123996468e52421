#!/usr/bin/env python3
"""What few-shot learning costs on this machine.

- Learning a class: 5 images -> 5 embeddings -> head update -> atomic save of the head
  file (with fsyncs), as ``edge-classifier learn add`` does after loading the extractor.
- Per frame: the base classifier alone (prepare + invoke + top-k) against the base
  classifier plus the learned head, both ways: before (``learn.extractor`` a file: the
  extractor's prepare + invoke + scoring of N classes) and after (``learn.extractor =
  "model"``: the classifier's one invoke also gives its penultimate tensor, then scoring),
  on the same frame, in blocks in a shuffled order each round so drift hits all alike.
  1 thread each.
- Held-out top-1 of the learning tests (3 classes of 5 examples, 12 other variants each)
  with either embedding.

    python benchmarks/learning.py [--frames N] [--rounds R] [--classes C]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
TESTDATA = Path(os.environ.get("EDGE_CLASSIFIER_TESTDATA", REPO.parent / "shared" / "testdata"))
sys.path.insert(0, str(REPO))

from edge_classifier.classifier import Classifier, resolve_labels  # noqa: E402
from edge_classifier.engine import Engine  # noqa: E402
from edge_classifier.learn import Embedder, ExtractorId, LearnedHead, save_head  # noqa: E402

sys.path.insert(0, str(REPO / "tests"))
from support.variants import CLASSES, variants  # noqa: E402

EXTRACTOR = TESTDATA / "models" / "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"
BASE = TESTDATA / "models" / "mobilenet_v2_1.0_224_quant.tflite"
IMAGES = ("cat.bmp", "bird.bmp", "sunflower.bmp", "parrot.jpg", "grace_hopper.bmp")


def learn_class_ms(embedder: Embedder, images: list[np.ndarray], head: LearnedHead, path: Path,
                   extractor: ExtractorId, label: str) -> tuple[float, float, float, LearnedHead]:
    """(embedding ms, head update ms, save ms) to learn ``label`` from ``images``."""
    start = time.perf_counter()
    embeddings = [embedder.embed(image) for image in images]
    embedded = time.perf_counter()
    head = head.with_examples(label, embeddings)
    updated = time.perf_counter()
    save_head(path, head, extractor)
    saved = time.perf_counter()
    return (embedded - start) * 1e3, (updated - embedded) * 1e3, (saved - updated) * 1e3, head


def paired(times: dict[str, list[float]], name: str) -> float:
    """The median over rounds of ``name``'s time over the base's in the same round."""
    return round(statistics.median(v / b for v, b in zip(times[name], times["base"], strict=True)), 3)


def held_out_top1(embedder: Embedder) -> str:
    """The learning tests' held-out top-1 (tests/test_learn.py: the same seeds)."""
    head = LearnedHead(embedder.size)
    rng = np.random.default_rng(1234)
    for label in CLASSES:
        head = head.with_examples(label, [embedder.embed(v) for v in variants(label, 5, rng)])
    rng = np.random.default_rng(98765)
    right = total = 0
    for label in CLASSES:
        for picture in variants(label, 12, rng):
            best = head.best(embedder.embed(picture))
            right += best is not None and best[0] == label
            total += 1
    return f"{right}/{total}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10, help="frames per block")
    parser.add_argument("--rounds", type=int, default=30, help="blocks per variant, in a shuffled order each round")
    parser.add_argument("--classes", type=int, default=10, help="learned classes for the per-frame figure")
    args = parser.parse_args()

    pictures = [cv2.imread(str(TESTDATA / "images" / name)) for name in IMAGES]
    with Embedder.open(EXTRACTOR) as embedder, tempfile.TemporaryDirectory() as scratch:
        extractor = ExtractorId.of(embedder.info, embedder.size)
        path = Path(scratch) / "learned_head.json"
        head = LearnedHead(extractor.size)
        embedder.embed(pictures[0])  # warm-up
        learn = []
        for index in range(args.classes):
            batch = [pictures[(index + k) % len(pictures)][:, :: 1 if k % 2 else -1] for k in range(5)]
            batch = [np.ascontiguousarray(b) for b in batch]
            *parts, head = learn_class_ms(embedder, batch, head, path, extractor, f"class{index}")
            learn.append(parts)
        embed_ms, update_ms, save_ms = (statistics.median(column) for column in zip(*learn, strict=True))
        file_bytes = path.stat().st_size

        engine = Engine.open(BASE, accelerator="cpu", threads=1)
        one = Engine.open(BASE, accelerator="cpu", threads=1, embedding=True)
        own = Embedder(one)  # the same engine: its penultimate tensor, as the daemon's workers
        own_head = LearnedHead(own.size)
        for index in range(args.classes):
            batch = [np.ascontiguousarray(pictures[(index + k) % len(pictures)][:, :: 1 if k % 2 else -1])
                     for k in range(5)]
            own_head = own_head.with_examples(f"class{index}", [own.embed(b) for b in batch])
        labels, origin = resolve_labels(engine.info, None)
        with Classifier(engine, labels, label_source=origin) as classifier, \
                Classifier(one, labels, label_source=origin) as both:
            frame = pictures[0]

            def base() -> None:
                classifier.classify(frame)

            def learned() -> None:
                classifier.classify(frame)
                head.best(embedder.embed(frame))

            def one_invoke() -> None:
                both.classify(frame)
                raw = one.embedding()
                assert raw is not None
                own_head.best(own.vector(raw))

            def one_invoke_alone() -> None:
                both.classify(frame)  # the model loaded with its second output, no learned head

            def head_only() -> None:
                head.best(embedder.embed(frame))

            vector = embedder.embed(frame)

            def scoring() -> None:
                head.best(vector)

            variants_ = {"base": base, "base+learned, extractor (before)": learned,
                         "base+learned, one invoke (after)": one_invoke,
                         "base, model with the embedding output": one_invoke_alone, "extractor only": head_only,
                         "scoring only": scoring}
            for call in variants_.values():
                call()
            times: dict[str, list[float]] = {name: [] for name in variants_}
            order = list(variants_)
            shuffle = np.random.default_rng(0)
            for _ in range(args.rounds):
                shuffle.shuffle(order)  # no variant always follows the heavy one
                for name in order:
                    call = variants_[name]
                    start = time.perf_counter()
                    for _ in range(args.frames):
                        call()
                    times[name].append((time.perf_counter() - start) / args.frames * 1e3)
            accuracy = {"extractor": held_out_top1(embedder), "one invoke (model)": held_out_top1(own)}
        per_frame = {name: round(statistics.median(values), 3) for name, values in times.items()}
    summary = {
        "machine": f"{os.cpu_count()} cpus",
        "learn_class_5_images_ms": {"embedding": round(embed_ms, 2), "head_update": round(update_ms, 3),
                                    "atomic_save": round(save_ms, 2),
                                    "total": round(embed_ms + update_ms + save_ms, 2)},
        "head_file_bytes": {"classes": args.classes, "bytes": file_bytes},
        "per_frame_ms": per_frame,
        "learned_classes": args.classes,
        # Each round's ratio to that round's base (adjacent blocks), then the median: on a
        # shared, busy machine this pairs each figure with a base measured under the same load.
        "learned_x_before": paired(times, "base+learned, extractor (before)"),
        "learned_x_after": paired(times, "base+learned, one invoke (after)"),
        "held_out_top1": accuracy,
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
