"""The JSON payloads of results and events (CONTRACT.md: result payload, schema 1)."""

from __future__ import annotations

import json
import math
import time
from json.encoder import encode_basestring
from typing import Any

from edge_classifier.results import Classification, iso_timestamp
from edge_classifier.source.base import Frame

__all__ = ["SCHEMA", "encode", "encode_result", "event_payload", "result_payload"]

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


# The "model" object of a result is the same for every frame of a model: encoded once.
_MODEL_JSON: dict[tuple[str, str, str], str] = {}


def encode_result(device: str, frame: Frame, classification: Classification, now: float | None = None) -> bytes:
    """``encode(result_payload(...))``, byte for byte, without building the dicts.

    The publisher's per-frame hot path: building the nested dicts and ``json.dumps`` of them
    was most of its time per result. The model object (the same for every frame of a model)
    is encoded once per model; strings go through json's own C string encoder, numbers
    through ``repr`` as json does. Anything json would write differently (a score that is not
    a finite float or int) takes the slow path.
    """
    now = time.monotonic() if now is None else now
    inference = _number(round(classification.inference_ms, 2))
    latency = _number(round(max(0.0, now - frame.captured) * 1000.0, 2))
    top = []
    for p in classification.top:
        score = _number(round(p.score, 4))
        if score is None or inference is None or latency is None or not _is_int(p.id, True):
            return encode(result_payload(device, frame, classification, now))
        ident = "null" if p.id is None else int.__repr__(p.id)
        learned = ',"learned":true' if p.learned else ""
        top.append(f'{{"id":{ident},"label":{encode_basestring(p.label)},"score":{score}{learned}}}')
    if not _is_int(frame.index, False):
        return encode(result_payload(device, frame, classification, now))
    text = (f'{{"schema":{SCHEMA},"device":{encode_basestring(device)},"source":{encode_basestring(frame.source)},'
            f'"frame":{int.__repr__(frame.index)},"ts":"{iso_timestamp(frame.timestamp)}","top":[{",".join(top)}],'
            f'"model":{_model_json(classification)},"latency_ms":{{"inference":{inference},"total":{latency}}}}}')
    return text.encode("utf-8")


def _model_json(classification: Classification) -> str:
    model = classification.model
    key = (model.name, model.sha256, model.accelerator)
    text = _MODEL_JSON.get(key)
    if text is None:
        if len(_MODEL_JSON) >= 64:  # a long life of hot swaps: forget them all, encode again on demand
            _MODEL_JSON.clear()
        text = _MODEL_JSON[key] = json.dumps(model.as_payload(), ensure_ascii=False, separators=(",", ":"))
    return text


def _number(value: Any) -> str | None:
    """How json writes a finite float or an int; None for anything else."""
    if type(value) is float:
        return float.__repr__(value) if math.isfinite(value) else None
    return int.__repr__(value) if type(value) is int else None


def _is_int(value: Any, none_ok: bool) -> bool:
    return type(value) is int or (none_ok and value is None)
