#!/usr/bin/env python3
"""Memory of per-source models: the real daemon (``edge-classifier run``) with two ``[[sources]]``
on one model (the [model] set, shared) against two sources on two different models (one on
[model], one naming its own: two sets), and one source alone for reference, measured in one
run. Each daemon classifies ``--frames`` frames of a test image from looping image folders on
the CPU, without MQTT, and exits; its peak RSS
(``ru_maxrss`` of that child, from ``os.wait4``) and its RSS near the end (``/proc/PID/status``,
read while it runs) are printed.

    .venv/bin/python benchmarks/source_models.py [--frames N] [--model A] [--other B]

Models and images come from ../shared/testdata (copied into a temporary store: the store
refuses files that resolve outside it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTDATA = Path(os.environ.get("EDGE_CLASSIFIER_TESTDATA", REPO.parent / "shared" / "testdata"))


def _config(folder: Path, models: list[str], default: str) -> Path:
    """Sources on ``models`` (``default``: no ``model`` key, the source uses [model])."""
    tables = "".join(f'[[sources]]\nname = "cam{i}"\nkind = "images"\nuri = "{folder / "images"}"\nloop = true\n'
                     + (f'model = "{name}.tflite"\n' if name != default else "") for i, name in enumerate(models))
    path = folder / f"config-{len(models)}-{len(set(models))}.toml"
    path.write_text(f"""
[device]
id = "bench"
{tables}
[model]
path = "{default}.tflite"
dir = "{folder / "models"}"
accelerator = "cpu"
[mqtt]
enabled = false
[publish]
stats_interval = 0
""")
    return path


def _run(config: Path, frames: int) -> dict[str, float]:
    """Run the daemon to ``frames`` results; its peak and late RSS in MiB."""
    proc = subprocess.Popen([sys.executable, "-m", "edge_classifier", "run", "-c", str(config), "--stdout",
                             "--max-frames", str(frames)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, cwd=REPO)
    assert proc.stdout is not None
    late = 0.0
    models: set[str] = set()
    for count, line in enumerate(proc.stdout, 1):
        models.add(json.loads(line)["model"]["name"])
        if count == frames - 5:
            for row in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if row.startswith("VmRSS:"):
                    late = int(row.split()[1]) / 1024.0
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{config.name}: the daemon exited with {proc.returncode}")
    return {"peak_rss_mb": round(usage.ru_maxrss / 1024.0, 1), "rss_mb": round(late, 1),
            "models_in_results": len(models)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--model", default="mobilenet_v2_1.0_224_quant")
    parser.add_argument("--other", default="mobilenet_v2_1.0_224_inat_bird_quant")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="source-models-") as tmp:
        folder = Path(tmp)
        (folder / "models").mkdir()
        (folder / "images").mkdir()
        for name in (args.model, args.other):
            shutil.copy(TESTDATA / "models" / f"{name}.tflite", folder / "models" / f"{name}.tflite")
        shutil.copy(TESTDATA / "images" / "bird.bmp", folder / "images" / "bird.bmp")
        runs = {
            "1 source, 1 model": [args.model],
            "2 sources, 1 model (shared)": [args.model, args.model],
            "2 sources, 2 models": [args.model, args.other],
        }
        figures = {what: _run(_config(folder, models, args.model), args.frames) for what, models in runs.items()}
    for what, row in figures.items():
        print(f"{what:30s} peak RSS {row['peak_rss_mb']:7.1f} MiB   RSS near the end {row['rss_mb']:7.1f} MiB"
              f"   models in results: {row['models_in_results']}")
    shared, two = figures["2 sources, 1 model (shared)"], figures["2 sources, 2 models"]
    print(f"second model costs {two['peak_rss_mb'] - shared['peak_rss_mb']:+.1f} MiB peak "
          f"({two['peak_rss_mb'] / shared['peak_rss_mb']:.2f}x), {two['rss_mb'] - shared['rss_mb']:+.1f} MiB late; "
          f"models: {args.model} / {args.other}, {args.frames} frames each run")


if __name__ == "__main__":
    main()
