"""Command requests as they arrive over MQTT, and where their replies go.

A request is a message on ``{prefix}/cmd/{name}`` (or the fleet's
``edge-classifier/all/cmd/{name}``) whose payload is a JSON object, or empty for a command
without arguments. The reply goes, under MQTT 5, to the request's response topic with its
correlation data; otherwise (MQTT 3.1.1, or no response topic) to ``{prefix}/reply/{name}``
with the request's ``request_id`` echoed. Every reply is a JSON object with ``"ok"``, and an
``"error"`` message when ``ok`` is false.

Retained messages on command topics are stale (replayed by the broker at connect, maybe
from long ago) and are ignored without a reply. An empty payload is never a command: it is
how a retained message is cleared (``mosquitto_pub -r -n``), which reaches live subscribers
as an empty, non-retained message; a command without arguments is ``{}``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from typing import Any

__all__ = ["EMPTY_PAYLOAD", "FLEET_PREFIX", "Request", "command_name", "parse_arguments", "peek_request_id"]

FLEET_PREFIX = "edge-classifier/all"
EMPTY_PAYLOAD = ("empty payload: not a command (an empty message is how a retained one is cleared); "
                 "send {} for a command without arguments")
_MAX_NAME = 64
_PEEK_BYTES = 4096
_REQUEST_ID = re.compile(rb'"request_id"\s*:\s*("(?:[^"\\]|\\.){0,200}"|-?\d{1,20})')


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """One command message, as paho delivered it."""

    topic: str
    payload: bytes
    retain: bool = False
    response_topic: str | None = None
    correlation_data: bytes | None = None
    answer: Callable[[dict[str, Any]], None] | None = dataclasses.field(default=None, compare=False, repr=False)
    """Set for a request from the web view: its reply goes here, not to MQTT."""


def command_name(topic: str, prefixes: tuple[str, ...]) -> str | None:
    """The command name of a ``.../cmd/{name}`` topic under one of ``prefixes``, else None."""
    for prefix in prefixes:
        head = f"{prefix}/cmd/"
        if topic.startswith(head):
            name = topic[len(head):]
            if name and "/" not in name and len(name) <= _MAX_NAME:
                return name
    return None


def parse_arguments(payload: bytes, max_payload: int) -> tuple[dict[str, Any], str | None]:
    """The request's arguments and, when they are unusable, why (the error to reply with).

    An empty payload is refused (EMPTY_PAYLOAD). The arguments come back even with an error
    when they could be read, so the reply can still echo ``request_id``; over ``max_payload``
    only the ``request_id`` near the start is looked for (:func:`peek_request_id`).
    """
    if len(payload) > max_payload:
        found = peek_request_id(payload)
        return ({} if found is None else {"request_id": found},
                f"payload of {len(payload)} bytes is over the limit of {max_payload} (commands.max_payload)")
    if not payload.strip():
        return {}, EMPTY_PAYLOAD
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return {}, f"payload is not UTF-8 text: {exc.reason} at byte {exc.start}"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return {}, f"payload is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
    except RecursionError:
        return {}, "payload is not valid JSON: nested too deeply"
    except ValueError as exc:  # e.g. an integer literal too long to convert
        return {}, f"payload is not usable JSON: {exc}"
    if not isinstance(value, dict):
        return {}, f"payload must be a JSON object, not {_json_type(value)}"
    return value, None


def peek_request_id(payload: bytes) -> str | int | None:
    """The ``request_id`` of a payload too large to parse, when it is a string or integer
    in its first 4 KB (a bounded scan: a reply to an oversized command can still be matched)."""
    found = _REQUEST_ID.search(payload[:_PEEK_BYTES])
    if found is None:
        return None
    try:
        value = json.loads(found.group(1))
    except ValueError:
        return None
    return value if isinstance(value, str | int) else None


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number",
             type(None): "null"}
    return names.get(type(value), type(value).__name__)
