"""``edge-classifier bench``: the CONTRACT's JSON summary, on a real model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from support.testdata import model


def test_bench_prints_the_summary():
    done = subprocess.run([sys.executable, "-m", "edge_classifier", "bench", "--model",
                           str(model("mobilenet_v1_0.25_128_quant")), "--frames", "60"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["model"] == "mobilenet_v1_0.25_128_quant"
    assert summary["raw_invokes_per_s"] > 0 and summary["end_to_end_per_s"] > 0
    # The ratio is taken from the unrounded rates: the printed ones agree with it to their rounding.
    assert summary["ratio"] == pytest.approx(summary["end_to_end_per_s"] / summary["raw_invokes_per_s"], abs=0.002)
    assert summary["raw_latency_ms"]["p50"] <= summary["raw_latency_ms"]["p95"]
    assert summary["end_to_end_latency_ms"]["p50"] <= summary["end_to_end_latency_ms"]["p95"]
    assert summary["peak_rss_mb"] > 10


def test_bench_rejects_too_few_frames():
    done = subprocess.run([sys.executable, "-m", "edge_classifier", "bench", "--frames", "3"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "--frames: must be >= 10" in done.stderr
