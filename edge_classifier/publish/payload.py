"""The JSON payloads of results and events (CONTRACT.md: result payload, schema 1)."""

from __future__ import annotations

import json
import time
from typing import Any

from edge_classifier.results import Classification, iso_timestamp
from edge_classifier.source.base import Frame

__all__ = ["SCHEMA", "encode", "event_payload", "result_payload"]

SCHEMA = 1


def result_payload(
    device: str, frame: Frame, classification: Classification, now: float | None = None
) -> dict[str, Any]:
    """The result message for one classified frame.

    ``latency_ms.total`` runs from capture (``frame.captured``) to ``now`` (monotonic),
    which the caller takes just before the message leaves.
    """
    now = time.monotonic() if now is None else now
    body = classification.as_payload()
    body["latency_ms"]["total"] = round(max(0.0, now - frame.captured) * 1000.0, 2)
    return {
        "schema": SCHEMA,
        "device": device,
        "source": frame.source,
        "frame": frame.index,
        "ts": iso_timestamp(frame.timestamp),
        **body,
    }


def event_payload(device: str, name: str, details: dict[str, Any], wall: float | None = None) -> dict[str, Any]:
    """An event message: ``{"schema", "device", "ts", "event", ...details}``."""
    wall = time.time() if wall is None else wall
    return {"schema": SCHEMA, "device": device, "ts": iso_timestamp(wall), "event": name, **details}


def encode(payload: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON, as it goes on the wire."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
