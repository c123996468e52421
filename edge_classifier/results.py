"""What a classification produces, and its JSON shapes (see CONTRACT.md)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from edge_classifier.engine.interpreter import ModelInfo

__all__ = ["Classification", "Prediction", "iso_timestamp"]


@dataclasses.dataclass(frozen=True, slots=True)
class Prediction:
    id: int | None  # the model's class id; None for a class learned on the device
    label: str
    score: float
    learned: bool = False

    def as_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"id": self.id, "label": self.label, "score": round(self.score, 4)}
        if self.learned:
            payload["learned"] = True
        return payload


@dataclasses.dataclass(frozen=True, slots=True)
class Classification:
    """The outcome of classifying one image."""

    top: tuple[Prediction, ...]
    model: ModelInfo
    inference_ms: float  # the interpreter's invoke alone
    total_ms: float  # preprocessing + inference + postprocessing (the daemon adds capture-to-publish)

    def as_payload(self) -> dict[str, Any]:
        return {
            "top": [p.as_payload() for p in self.top],
            "model": self.model.as_payload(),
            "latency_ms": {"inference": round(self.inference_ms, 2), "total": round(self.total_ms, 2)},
        }


_SECOND: tuple[int, str] = (-1, "")  # the last whole second formatted, and its text


def iso_timestamp(seconds: float) -> str:
    """UTC ISO-8601 with milliseconds and a Z, e.g. 2026-11-29T07:00:00.123Z (once per result:
    the seconds part is formatted once per second, time.strftime being most of the cost)."""
    global _SECOND
    whole = int(seconds)
    millis = int((seconds - whole) * 1000)
    cached, text = _SECOND  # one tuple read: another thread may replace it meanwhile, never half of it
    if cached != whole:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        _SECOND = (whole, text)
    return f"{text}.{millis:03d}Z"
