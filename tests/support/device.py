"""Talking to a running daemon over MQTT, as the tests of the real daemon do: its config file,
its retained ``online``, its commands, the JPEG frames sent to an ``mqtt`` source."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from support.broker import Probe
from support.daemon import write_config


def daemon_config(path: Path, *, device: str, port: int, model: Path | str, sources: str,
                  extra: str = "", mqtt: str = "", store: Path | str | None = None) -> Path:
    """A config file for a daemon on the CPU with MQTT on the test broker: ``sources`` are its
    ``[source]`` or ``[[sources]]`` tables, ``store`` its ``model.dir``, ``mqtt`` more lines of
    ``[mqtt]``, ``extra`` any further sections."""
    store_line = f'dir = "{store}"' if store is not None else ""
    return write_config(path, f"""
[device]
id = "{device}"
{sources}
[model]
path = "{model}"
{store_line}
accelerator = "cpu"
[mqtt]
host = "127.0.0.1"
port = {port}
{mqtt}
{extra}
""")


def jpeg(picture: np.ndarray, quality: int = 92) -> bytes:
    return cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


def wait_online(probe: Probe, prefix: str) -> None:
    """Until the daemon says ``online`` on ``{prefix}/status`` (``probe`` subscribed to it): its
    command subscription and every mqtt source's are in place then."""
    while probe.expect(f"{prefix}/status", timeout=30).text != "online":
        pass


def ask(probe: Probe, prefix: str, name: str, arguments: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
    """Command ``name`` and its reply (MQTT 5 request/response)."""
    return json.loads(probe.request(f"{prefix}/cmd/{name}", json.dumps(arguments).encode(), timeout=timeout).payload)


def retained(broker: Any, under: str = "homeassistant") -> dict[str, bytes]:
    """The retained messages under ``under``/# on the broker now, by topic, as a late
    subscriber (a Home Assistant starting later) finds them."""
    with Probe(broker.host, broker.port) as late:
        late.subscribe(f"{under}/#")
        late.publish(f"{under}/fence", b"x", qos=1)  # not retained: marks the end of the replay
        found = {}
        while (message := late.expect(f"{under}/#", timeout=10)).topic != f"{under}/fence":
            found[message.topic] = message.payload
        return found
