"""Which TFLite runtime is installed: LiteRT (``ai_edge_litert``) first, ``tflite_runtime`` second.

LiteRT runs int8 models through XNNPACK (about 20x faster than tflite-runtime 2.14 on
x86-64 and recent Arm). ``tflite_runtime`` is still accepted for older devices where
LiteRT has no wheel; it needs numpy<2.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from edge_classifier.errors import RuntimeMissingError

__all__ = ["RUNTIMES", "Runtime", "load_runtime"]

# (distribution, module) in order of preference.
RUNTIMES = (("ai-edge-litert", "ai_edge_litert.interpreter"), ("tflite-runtime", "tflite_runtime.interpreter"))


@dataclasses.dataclass(frozen=True, slots=True)
class Runtime:
    """The interpreter module of the runtime in use."""

    name: str  # the distribution name, e.g. "ai-edge-litert"
    version: str
    Interpreter: Any
    load_delegate: Any


def load_runtime() -> Runtime:
    """The preferred runtime that imports; RuntimeMissingError when none does."""
    failures = []
    for distribution, module_name in RUNTIMES:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            failures.append(f"{distribution}: {exc}")
            continue
        return Runtime(distribution, _version(distribution), module.Interpreter, module.load_delegate)
    raise RuntimeMissingError(
        "no TFLite runtime: install ai-edge-litert (pip install ai-edge-litert), or on older "
        "devices tflite-runtime with numpy<2 (" + "; ".join(failures) + ")"
    )


def _version(distribution: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"
