"""Where the shared test data lives, and its reference table (../shared/testdata/README.md).

Tests read the real models and images from ``../shared/testdata`` beside the project, or
from ``$EDGE_CLASSIFIER_TESTDATA``; nothing is copied into the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTDATA = Path(os.environ.get("EDGE_CLASSIFIER_TESTDATA", REPO.parent / "shared" / "testdata"))
MODELS = TESTDATA / "models"
IMAGES = TESTDATA / "images"

V2 = "mobilenet_v2_1.0_224_quant"
V1_050 = "mobilenet_v1_0.5_160_quant"
V1_025 = "mobilenet_v1_0.25_128_quant"
BIRDS = "mobilenet_v2_1.0_224_inat_bird_quant"

# (model, image, [(id, score), ...]) as in the README's table; scores within 0.1 and the
# same top-1 id are what "reproduces" means there.
REFERENCE = [
    (V2, "cat.bmp", [(286, 0.840), (282, 0.094), (283, 0.039)]),
    (V2, "bird.bmp", [(20, 0.992), (14, 0.004)]),
    (V2, "grace_hopper.bmp", [(653, 0.879), (835, 0.020), (753, 0.016)]),
    (V2, "parrot.jpg", [(89, 0.996)]),
    (V2, "sunflower.bmp", [(986, 0.980), (310, 0.008), (309, 0.004)]),
    (V2, "cat_720p.jpg", [(286, 0.875), (282, 0.051), (283, 0.051)]),
    (V1_050, "cat.bmp", [(286, 0.594), (283, 0.285), (282, 0.102)]),
    (V1_050, "bird.bmp", [(20, 0.992)]),
    (V1_050, "parrot.jpg", [(89, 0.988), (91, 0.012)]),
    (V1_025, "parrot.jpg", [(89, 0.828), (91, 0.090)]),
    (V1_025, "cat.bmp", [(283, 0.324), (286, 0.219), (282, 0.191)]),
    (BIRDS, "bird.bmp", [(659, 0.590), (658, 0.156)]),
    (BIRDS, "parrot.jpg", [(923, 0.688), (837, 0.102)]),
    (BIRDS, "cat.bmp", [(964, 0.824)]),
]

LABELS = {V2: "imagenet_labels.txt", V1_050: "imagenet_labels.txt", V1_025: "imagenet_labels.txt",
          BIRDS: "inat_bird_labels.txt"}


def model(name: str) -> Path:
    return MODELS / f"{name}.tflite"


def image(name: str) -> Path:
    return IMAGES / name


def labels(name: str) -> Path:
    return MODELS / LABELS[name]
