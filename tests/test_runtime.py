"""Runtime discovery: LiteRT first, tflite_runtime as the fallback, a clear error with neither."""

from __future__ import annotations

import sys
import types

import pytest
from support.testdata import image, model

from edge_classifier.engine import Engine, load_runtime
from edge_classifier.errors import RuntimeMissingError


def test_litert_is_preferred():
    assert load_runtime().name == "ai-edge-litert"


def test_falls_back_to_tflite_runtime(monkeypatch):
    """With ai_edge_litert unimportable, tflite_runtime.interpreter is used.

    tflite-runtime itself cannot be installed beside numpy 2, so the module standing in
    for it is LiteRT's own interpreter module, which has the same API.
    """
    import ai_edge_litert.interpreter as litert

    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    package = types.ModuleType("tflite_runtime")
    monkeypatch.setitem(sys.modules, "tflite_runtime", package)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", litert)
    runtime = load_runtime()
    assert runtime.name == "tflite-runtime"
    import cv2

    from edge_classifier.classifier import Classifier

    with Engine.open(model("mobilenet_v1_0.25_128_quant"), accelerator="cpu", runtime=runtime) as engine:
        result = Classifier(engine, [str(i) for i in range(1001)]).classify(cv2.imread(str(image("parrot.jpg"))))
        assert result.top[0].id == 89
        assert engine.info.runtime.startswith("tflite-runtime")


def test_no_runtime_is_a_clear_69(monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", None)
    with pytest.raises(RuntimeMissingError, match="pip install ai-edge-litert") as caught:
        load_runtime()
    assert caught.value.exit_code == 69


def test_delegate_failure_is_the_real_oserror_and_leaves_no_noise():
    """The real failure on a machine without libedgetpu: OSError inside load_delegate.

    pytest turns unraisable exceptions (the runtime's Delegate.__del__ on a half-built
    delegate) into errors here, so this also proves the clean-up works.
    """
    import gc

    from edge_classifier.engine.edgetpu import AcceleratorUnavailable, load_edgetpu_delegate

    with pytest.raises(AcceleratorUnavailable, match=r"libedgetpu\.so\.1 is not installed"):
        load_edgetpu_delegate(load_runtime(), "usb:0")
    gc.collect()
