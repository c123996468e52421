"""A daemon with ``[web]`` on, fed frames over MQTT, and a small HTTP client for its web side."""

from __future__ import annotations

import base64
import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

import numpy as np

from support.broker import Probe, free_port
from support.daemon import DaemonProcess, write_config
from support.device import jpeg, wait_online

DEVICE = "webpi"
PREFIX = f"edge-classifier/{DEVICE}"
CAMERA = "cams/door/image"
PASSWORD = "s3cret-web-pass"


def web_config(tmp_path: Path, broker_port: int, *, web: str = "", extra: str = "", model: Path,
               learn: str = "", source: str = "") -> tuple[Path, int]:
    """A config with the mqtt source on ``cams/+/image`` and [web] on a free port."""
    port = free_port()
    (tmp_path / "models").mkdir(exist_ok=True)  # the model store (empty unless a test fills it)
    config = write_config(tmp_path / "config.toml", f"""
[device]
id = "{DEVICE}"
[source]
kind = "mqtt"
uri = "cams/+/image"
{source}
[model]
path = "{model}"
dir = "{tmp_path / "models"}"
accelerator = "cpu"
[mqtt]
host = "127.0.0.1"
port = {broker_port}
[publish]
stats_interval = 1.0
{extra}
{learn}
[web]
enabled = true
port = {port}
{web}
""")
    return config, port


def online(probe: Probe) -> None:
    wait_online(probe, PREFIX)


def classify(probe: Probe, picture: np.ndarray) -> dict[str, Any]:
    """Send one frame to the camera topic and wait for its result on MQTT."""
    probe.publish(CAMERA, jpeg(picture), qos=1)
    return json.loads(probe.expect(f"{PREFIX}/result", timeout=20).payload)


@contextlib.contextmanager
def start_web_daemon(config: Path) -> Iterator[DaemonProcess]:
    """The daemon, once its web side and its MQTT source listen; killed at the end if still running."""
    with DaemonProcess("-c", str(config)) as daemon:
        daemon.wait_for_log(r"web view on http://", timeout=60)
        daemon.wait_for_log(r"mqtt source: listening on", timeout=60)  # frames sent before are lost
        yield daemon


@dataclass
class Reply:
    status: int
    headers: Message
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebClient:
    port: int
    password: str | None = None
    user: str = "edge"
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _auth(self) -> dict[str, str]:
        if self.password is None:
            return {}
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
                timeout: float = 30) -> Reply:
        all_headers = {**self._auth(), **self.headers, **(headers or {})}
        request = urllib.request.Request(self.base + path, data=body, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return Reply(response.status, response.headers, response.read())
        except urllib.error.HTTPError as error:
            with error:
                return Reply(error.code, error.headers, error.read())

    def get(self, path: str, **options: Any) -> Reply:
        return self.request("GET", path, **options)

    def post(self, path: str, payload: dict[str, Any], **options: Any) -> Reply:
        headers = {"Content-Type": "application/json", **options.pop("headers", {})}
        return self.request("POST", path, json.dumps(payload).encode(), headers=headers, **options)
