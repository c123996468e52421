#!/usr/bin/env python3
"""Build the project's own offline demo model and the demo images it runs on.

The daemon must work on a fresh machine with no camera and no network, so the repository
ships a small classifier that it makes itself:

1. a synthetic image generator (deterministic for a given seed) of simple classes:
   ``background`` (textured or plain, no shape), ``circle``, ``square``, ``triangle``,
   ``star``, with random colours, sizes, positions, rotations, backgrounds, noise, blur,
   brightness and JPEG artefacts;
2. a Keras MobileNetV2 (alpha 0.35, no pretrained weights) trained on it from scratch;
3. the TFLite converter's full-integer quantization with uint8 input and output, calibrated
   on generated images;
4. the labels appended to the .tflite as a ZIP archive holding ``labels.txt`` -- the way the
   Coral models carry theirs, so ``zipfile.ZipFile(model)`` reads them;
5. demo images (320x240 JPEG) from the same generator with a held-out seed.

Preprocessing matches the daemon exactly: RGB, the whole frame stretched to the model input
with cv2.INTER_LINEAR, raw uint8 pixels as the model input. The model's real-valued input is
``(pixel - 128) / 128`` (a Rescaling layer while training); it is calibrated so that the
uint8 input quantization is (1/128, 128), the Coral convention, which makes the daemon feed
pixels unchanged.

TensorFlow is a tools-only dependency: run this in a throwaway venv, e.g.

    python3 -m venv /tmp/tfvenv
    /tmp/tfvenv/bin/pip install tensorflow-cpu==2.21.0 opencv-python-headless numpy
    /tmp/tfvenv/bin/python tools/make_demo_model.py
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

CLASSES = ("background", "circle", "square", "triangle", "star")
INPUT_SIZE = 96
ALPHA = 0.35
MODEL_NAME = f"demo_shapes_mobilenet_v2_{int(ALPHA * 100):03d}_{INPUT_SIZE}_quant"
REPO = Path(__file__).resolve().parent.parent

# Seed offsets: each data split draws from its own stream, so no image is shared.
SPLIT_TRAIN, SPLIT_VAL, SPLIT_TEST, SPLIT_CALIB, SPLIT_DEMO = 0, 1, 2, 3, 4

# Frame sizes a camera or an image file might give; the model sees them all stretched.
FRAME_SIZES = ((320, 240), (240, 180), (160, 120), (320, 180), (256, 256), (180, 240), (200, 150))


# --------------------------------------------------------------------------- generator


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=3).astype(np.float32)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A float32 H x W x 3 background: plain, gradient, blotchy texture or fine noise."""
    kind = rng.integers(0, 5)
    base = _random_colour(rng)
    if kind == 0:  # plain
        img = np.broadcast_to(base, (h, w, 3)).copy()
    elif kind == 1:  # linear gradient between two colours, any direction
        other = _random_colour(rng)
        angle = rng.uniform(0, 2 * math.pi)
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        t = xs * math.cos(angle) + ys * math.sin(angle)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
        img = base + t[..., None] * (other - base)
    elif kind == 2:  # low-frequency blotches: coarse noise upsampled smoothly
        cells = int(rng.integers(2, 9))
        coarse = rng.uniform(-1, 1, size=(cells, cells, 3)).astype(np.float32)
        smooth = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
        img = base + smooth * rng.uniform(20, 90)
    elif kind == 3:  # fine grain texture (sand, carpet, concrete)
        grain = rng.normal(0, 1, size=(h // 2 + 1, w // 2 + 1, 1)).astype(np.float32)
        grain = cv2.resize(grain, (w, h), interpolation=cv2.INTER_LINEAR)[..., None]
        img = base + grain * rng.uniform(8, 35)
    else:  # gradient plus blotches
        other = _random_colour(rng)
        ys = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
        coarse = rng.uniform(-1, 1, size=(4, 4, 3)).astype(np.float32)
        smooth = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
        img = base + ys * (other - base) + smooth * rng.uniform(10, 40)
    return img.astype(np.float32)


def _star_points(cx: float, cy: float, r: float, angle: float, inner: float) -> np.ndarray:
    pts = []
    for k in range(10):
        radius = r if k % 2 == 0 else r * inner
        a = angle + k * math.pi / 5
        pts.append((cx + radius * math.sin(a), cy - radius * math.cos(a)))
    return np.array(pts)


def _polygon(name: str, rng: np.random.Generator, cx: float, cy: float, r: float) -> np.ndarray:
    angle = rng.uniform(0, 2 * math.pi)
    if name == "square":
        corners = [angle + math.pi / 4 + k * math.pi / 2 for k in range(4)]
        return np.array([(cx + r * math.cos(a), cy + r * math.sin(a)) for a in corners])
    if name == "triangle":
        # Near-equilateral: each vertex's angle jitters a little.
        corners = [angle + k * 2 * math.pi / 3 + rng.uniform(-0.15, 0.15) for k in range(3)]
        return np.array([(cx + r * math.cos(a), cy + r * math.sin(a)) for a in corners])
    if name == "star":
        return _star_points(cx, cy, r, angle, rng.uniform(0.38, 0.5))
    raise ValueError(f"unknown polygon {name!r}")


def _shape_colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A random colour that stands out from the mean colour of the background under it."""
    for _ in range(20):
        colour = _random_colour(rng)
        if np.abs(colour - under).sum() > 150 and abs(float(colour.mean() - under.mean())) > 35:
            return colour
    return np.where(under > 127, 0.0, 255.0).astype(np.float32)


def draw_frame(rng: np.random.Generator, label: str, size: tuple[int, int], demo: bool = False) -> np.ndarray:
    """One uint8 RGB frame of ``size`` (width, height) showing ``label``."""
    w, h = size
    img = _background(rng, h, w)
    if label != "background":
        short = min(w, h)
        # Radius of the circumscribed circle, as a fraction of the short side.
        r = short * (rng.uniform(0.22, 0.42) if demo else rng.uniform(0.12, 0.45))
        margin = r * (0.7 if label == "circle" else 0.85) if not demo else r
        cx = rng.uniform(margin, max(margin + 1, w - margin))
        cy = rng.uniform(margin, max(margin + 1, h - margin))
        y0, y1 = int(max(0, cy - r)), int(min(h, cy + r + 1))
        x0, x1 = int(max(0, cx - r)), int(min(w, cx + r + 1))
        colour = _shape_colour(rng, img[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0))
        outline = (not demo) and rng.random() < 0.2
        thickness = max(2, int(r * rng.uniform(0.12, 0.25))) if outline else cv2.FILLED
        # Draw on a mask at 4x sub-pixel precision, then blend: anti-aliased edges.
        mask = np.zeros((h, w), np.uint8)
        shift = 2
        scale = 1 << shift
        if label == "circle":
            cv2.circle(
                mask, (round(cx * scale), round(cy * scale)), round(r * 0.8 * scale), 255, thickness, cv2.LINE_AA, shift
            )
        else:
            pts = np.round(_polygon(label, rng, cx, cy, r) * scale).astype(np.int32)
            if outline:
                cv2.polylines(mask, [pts], True, 255, thickness, cv2.LINE_AA, shift)
            else:
                cv2.fillPoly(mask, [pts], 255, cv2.LINE_AA, shift)
        alpha = (mask.astype(np.float32) / 255.0)[..., None]
        # A little shading across the shape, like real lighting.
        shade = 1.0 + rng.uniform(-0.15, 0.15) * np.linspace(-1, 1, w, dtype=np.float32)[None, :, None]
        img = img * (1 - alpha) + (colour * shade) * alpha
    # Photometric noise: brightness, contrast, sensor noise, blur, JPEG.
    contrast = rng.uniform(0.6, 1.3) if not demo else rng.uniform(0.85, 1.15)
    brightness = rng.uniform(-50, 50) if not demo else rng.uniform(-20, 20)
    img = (img - 128) * contrast + 128 + brightness
    sigma = rng.uniform(0, 14) if not demo else rng.uniform(0, 4)
    if sigma > 0.5:
        img = img + rng.normal(0, sigma, size=img.shape).astype(np.float32)
    frame = np.clip(np.round(img), 0, 255).astype(np.uint8)
    blur = int(rng.integers(0, 4)) if not demo else int(rng.integers(0, 2))
    if blur:
        frame = cv2.GaussianBlur(frame, (2 * blur + 1, 2 * blur + 1), 0)
    if not demo and rng.random() < 0.5:
        quality = int(rng.integers(40, 96))
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert ok
        frame = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return frame


def to_model_input(frame_rgb: np.ndarray) -> np.ndarray:
    """What the daemon does: the whole RGB frame stretched to the input, bilinear."""
    return cv2.resize(frame_rgb, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR)


def make_split(seed: int, split: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` model-sized uint8 RGB images with balanced labels, deterministic in (seed, split)."""
    images = np.empty((count, INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
    labels = np.empty(count, np.int64)
    for i in range(count):
        rng = np.random.default_rng([seed, split, i])  # one stream per image: order-independent
        label = i % len(CLASSES)
        size = FRAME_SIZES[int(rng.integers(0, len(FRAME_SIZES)))]
        images[i] = to_model_input(draw_frame(rng, CLASSES[label], size))
        labels[i] = label
    return images, labels


# --------------------------------------------------------------------------- model


def build_model(tf):  # type: ignore[no-untyped-def]
    """(training model taking raw pixels 0..255, core model taking (pixel - 128) / 128)."""
    keras = tf.keras
    backbone = keras.applications.MobileNetV2(
        input_shape=(INPUT_SIZE, INPUT_SIZE, 3), alpha=ALPHA, include_top=False, weights=None
    )
    # Keras' MobileNetV2 keeps BatchNorm statistics with momentum 0.999, made for long
    # ImageNet runs; a short run from scratch needs them to follow the weights faster.
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.99
    core_in = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="image")
    x = backbone(core_in)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    # Softmax last, so the uint8 output dequantizes to probabilities.
    out = keras.layers.Dense(len(CLASSES), activation="softmax", name="probabilities")(x)
    core = keras.Model(core_in, out, name=MODEL_NAME)

    pixels = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="pixels")
    y = keras.layers.RandomFlip("horizontal")(pixels)
    # [0, 255] -> [-1, 127/128]: the real value behind uint8 quantization (1/128, 128).
    y = keras.layers.Rescaling(1.0 / 128, offset=-1.0)(y)
    train = keras.Model(pixels, core(y), name="train")
    return train, core


def to_core_input(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) / 128.0 - 1.0


def convert(tf, core, calib: np.ndarray) -> bytes:  # type: ignore[no-untyped-def]
    """Full-integer quantization, uint8 in and out, calibrated on generated frames."""

    def representative() -> Iterator[list[np.ndarray]]:
        # One frame spanning the full pixel range pins the input range to [-1, 127/128],
        # which gives the input quantization (1/128, 128) exactly.
        full = np.zeros((1, INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
        full[0, : INPUT_SIZE // 2] = 255
        yield [to_core_input(full)]
        for image in calib:
            yield [to_core_input(image[np.newaxis])]

    # Keras 3: export an inference-only SavedModel with a fixed batch of 1, then convert it.
    with tempfile.TemporaryDirectory() as saved:
        core.export(
            saved,
            format="tf_saved_model",
            verbose=False,
            input_signature=[tf.TensorSpec((1, INPUT_SIZE, INPUT_SIZE, 3), tf.float32)],
        )
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
        return converter.convert()


def append_labels(model_path: Path) -> None:
    """Append a ZIP archive holding labels.txt to the .tflite, as TFLite metadata does."""
    text = "".join(f"{label}\n" for label in CLASSES)
    # Mode "a" on a file that is not a ZIP appends a new archive at its end.
    with zipfile.ZipFile(model_path, "a", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("labels.txt", text)
    with zipfile.ZipFile(model_path) as archive:
        assert archive.namelist() == ["labels.txt"], archive.namelist()
        assert archive.read("labels.txt").decode() == text


def tflite_accuracy(model_bytes: bytes, images: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Top-1 accuracy of the quantized model on uint8 images, and the confusion matrix."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    interp = Interpreter(model_content=model_bytes, num_threads=2)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    confusion = np.zeros((len(CLASSES), len(CLASSES)), np.int64)
    for image, label in zip(images, labels, strict=True):
        interp.set_tensor(inp["index"], image[np.newaxis])  # raw pixels: quantization (1/128, 128)
        interp.invoke()
        confusion[label, int(np.argmax(interp.get_tensor(out["index"])[0]))] += 1
    return float(np.trace(confusion) / confusion.sum()), confusion


# --------------------------------------------------------------------------- demo images


def write_demo_images(images_dir: Path, seed: int, per_class: int) -> list[Path]:
    images_dir.mkdir(parents=True, exist_ok=True)
    for old in images_dir.glob("*.jpg"):
        old.unlink()
    paths = []
    n = 0
    for _k in range(per_class):
        for label in CLASSES:
            n += 1
            rng = np.random.default_rng([seed, SPLIT_DEMO, n])
            frame = draw_frame(rng, label, (320, 240), demo=True)
            path = images_dir / f"{n:02d}_{label}.jpg"
            bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
            ok = cv2.imwrite(str(path), bgr, [cv2.IMWRITE_JPEG_QUALITY, 85])
            assert ok, path
            paths.append(path)
    return paths


# --------------------------------------------------------------------------- main


def fit(tf, args, x_train, y_train, x_val, y_val):  # type: ignore[no-untyped-def]
    """Train from scratch; returns the core model (input (pixel - 128) / 128)."""
    train, core = build_model(tf)
    steps = args.epochs * math.ceil(len(y_train) / args.batch_size)
    schedule = tf.keras.optimizers.schedules.CosineDecay(2e-3, steps)
    train.compile(
        optimizer=tf.keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    t0 = time.monotonic()
    train.fit(
        x_train.astype(np.float32),
        y_train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        validation_data=(x_val.astype(np.float32), y_val),
        verbose=2,
        shuffle=True,
    )
    print(f"trained in {time.monotonic() - t0:.0f} s", flush=True)
    if args.save_keras:
        args.save_keras.parent.mkdir(parents=True, exist_ok=True)
        core.save(args.save_keras)
        print(f"saved the float model to {args.save_keras}", flush=True)
    return core


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=REPO / "models")
    parser.add_argument("--images-dir", type=Path, default=REPO / "demo" / "images")
    parser.add_argument("--epochs", type=int, default=14)
    parser.add_argument("--seed", type=int, default=20261129)
    parser.add_argument("--train-count", type=int, default=12000)
    parser.add_argument("--test-count", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--demo-per-class", type=int, default=3)
    parser.add_argument("--save-keras", type=Path, help="also save the trained float model (.keras)")
    parser.add_argument("--from-keras", type=Path, help="skip training: convert this saved float model")
    parser.add_argument("--images-only", action="store_true", help="only write the demo images")
    args = parser.parse_args(argv)

    demo = write_demo_images(args.images_dir, args.seed + 1, args.demo_per_class)
    print(f"wrote {len(demo)} demo images to {args.images_dir}", flush=True)
    if args.images_only:
        return 0

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.keras.utils.set_random_seed(args.seed)
    t0 = time.monotonic()
    x_train, y_train = make_split(args.seed, SPLIT_TRAIN, args.train_count)
    x_val, y_val = make_split(args.seed, SPLIT_VAL, 1000)
    x_test, y_test = make_split(args.seed, SPLIT_TEST, args.test_count)
    x_calib, _ = make_split(args.seed, SPLIT_CALIB, 300)
    print(f"generated data in {time.monotonic() - t0:.0f} s", flush=True)

    if args.from_keras:
        core = tf.keras.models.load_model(args.from_keras)
        print(f"loaded {args.from_keras}: no training", flush=True)
    else:
        core = fit(tf, args, x_train, y_train, x_val, y_val)
    predicted = np.argmax(core.predict(to_core_input(x_test), batch_size=256, verbose=0), axis=1)
    float_acc = float(np.mean(predicted == y_test))
    print(f"float held-out accuracy: {float_acc:.4f}", flush=True)

    model_bytes = convert(tf, core, x_calib)
    acc, confusion = tflite_accuracy(model_bytes, x_test, y_test)
    print(f"int8 held-out accuracy: {acc:.4f} on {len(y_test)} images", flush=True)
    print("confusion (rows = truth, columns = predicted):", ", ".join(CLASSES))
    print(confusion)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    path = args.out_dir / f"{MODEL_NAME}.tflite"
    path.write_bytes(model_bytes)
    append_labels(path)
    print(f"wrote {path} ({path.stat().st_size} bytes), TF {tf.__version__}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
