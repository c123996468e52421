"""The routes: the page, the JSON API, the live view, the stream and /metrics (bottle).

Every route sits behind ``guard`` (a WSGI wrapper): with a password set nothing answers
without it (401 and no data); a POST must be JSON from the page's own origin (a form on
another site cannot send one, so it cannot drive the device through a logged-in browser);
without a password only loopback host names are served (no DNS rebinding).

| route | what |
|---|---|
| ``GET /`` | the page |
| ``GET /api/status`` | the ``status`` command's state |
| ``GET /api/stats`` | ``{prefix}/stats``'s fields (rates since the previous call) |
| ``GET /api/stream`` | Server-Sent Events: ``result`` (as ``{prefix}/result``; not with ``?results=0``) and ``event`` |
| ``GET /api/sources`` | the sources and their newest result |
| ``GET /api/sources/<name>/frame.jpg`` | the newest frame, scaled down; ``X-Result`` header; |
| | ``?view=camera``: the uncropped camera frame, ``X-ROI`` header |
| ``GET /api/classes`` | learned classes: examples, held-out score, nearest class |
| ``GET /api/models`` | the model store, as ``models list`` |
| ``POST /api/cmd/<name>`` | a command, as on ``{prefix}/cmd/<name>``; the reply |
| ``GET /metrics`` | Prometheus text format |
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import bottle

from edge_classifier.errors import EdgeClassifierError
from edge_classifier.web.auth import Gate, is_loopback
from edge_classifier.web.live import LiveView
from edge_classifier.web.metrics import CONTENT_TYPE, Metrics
from edge_classifier.web.port import DaemonPort
from edge_classifier.web.quality import class_quality

__all__ = ["build_app", "guard"]

log = logging.getLogger(__name__)

_KEEPALIVE = 15.0  # seconds between comments on an idle stream (finds closed connections)
_MAX_WAIT = 10.0  # longest a frame request waits for a newer frame
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def guard(app: WSGIApp, gate: Gate) -> WSGIApp:
    """``app`` behind the password (if any), the same-origin rule for POSTs and the host check."""

    refusals = _Refusals()

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not gate.allows(environ.get("HTTP_AUTHORIZATION")):
            if environ.get("HTTP_AUTHORIZATION"):  # wrong credentials (not a browser's first, bare try)
                refusals.note(environ.get("REMOTE_ADDR", "?"))
            start_response("401 Unauthorized", [("Content-Type", "text/plain; charset=utf-8"),
                                                ("WWW-Authenticate", 'Basic realm="edge-classifier", charset="UTF-8"'),
                                                ("Cache-Control", "no-store")])
            return [b"401 Unauthorized: this edge-classifier needs its web password\n"]
        host = environ.get("HTTP_HOST", "")
        if not gate.required and not is_loopback(urlsplit(f"//{host}").hostname or ""):
            return _refuse(start_response, "403 Forbidden", f"host {host!r} is not served without a web password")
        if environ.get("REQUEST_METHOD") == "POST":
            if environ.get("CONTENT_TYPE", "").split(";")[0].strip() != "application/json":
                return _refuse(start_response, "415 Unsupported Media Type", "POST a JSON body")
            origin = environ.get("HTTP_ORIGIN")
            if origin is not None and urlsplit(origin).netloc != host:
                return _refuse(start_response, "403 Forbidden", f"origin {origin!r} is not this device")
        return app(environ, start_response)

    return guarded


class _Refusals:
    """Wrong passwords, logged at most once a minute (request threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._logged = float("-inf")

    def note(self, address: str) -> None:
        with self._lock:
            self._count += 1
            now = time.monotonic()
            if now - self._logged < 60.0:
                return
            self._logged, count, self._count = now, self._count, 0
        log.warning("web: %d request(s) with a wrong password, the latest from %s", count, address)


def _refuse(start_response: Callable[..., Any], status: str, why: str) -> list[bytes]:
    start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
    return [f"{status}: {why}\n".encode()]


def build_app(port: DaemonPort, live: LiveView, metrics: Metrics, *, preview_fps: float,
              latencies: collections.deque[float]) -> bottle.Bottle:
    app = bottle.Bottle(catchall=True)
    page = resources.files("edge_classifier.web").joinpath("static/index.html").read_bytes()

    def json_error(status: int, message: str) -> str:
        bottle.response.status = status
        bottle.response.content_type = "application/json"
        return json.dumps({"ok": False, "error": message})

    def ready() -> None:
        if not port.ready:
            bottle.abort(503, "starting")

    @app.get("/")
    def index() -> bytes:
        bottle.response.content_type = "text/html; charset=utf-8"
        bottle.response.set_header("Cache-Control", "no-cache")
        return page

    @app.get("/api/status")
    def status() -> dict[str, Any]:
        ready()
        return {**port.status(), "web": {"preview_fps": preview_fps, "preview_width": live.preview_width,
                                         "sources": live.sources(), **port.view_settings()}}

    @app.get("/api/stats")
    def stats() -> dict[str, Any]:
        ready()
        taken = []
        while latencies:
            taken.append(latencies.popleft())  # crossing: appended by the pipeline's emitter
        return port.stats(taken)

    @app.get("/api/sources")
    def sources() -> dict[str, Any]:
        rows = []
        for name in live.sources():
            outcome = live.latest(name)
            rows.append({"name": name, "result": live.payload(outcome) if outcome else None})
        return {"sources": rows}

    @app.get("/api/sources/<name:path>/frame.jpg")
    def frame(name: str) -> bytes | str:
        after = _int(bottle.request.query.get("after"), -1)
        wait = min(_MAX_WAIT, max(0.0, _float(bottle.request.query.get("wait"), 0.0)))
        width = _int(bottle.request.query.get("width"), 0) or None
        outcome = live.wait_newer(name, after, wait) if wait else live.latest(name)
        if outcome is None:
            outcome = live.latest(name)
        if outcome is None:
            known = ", ".join(live.sources()) or "none"
            return json_error(404, f"no frame from source {name!r} yet (sources: {known})")
        if bottle.request.query.get("view") == "camera":
            # The whole camera frame (rotated, flipped, not cropped) with the ROI on it: to aim.
            camera = port.camera(name)
            if camera is None:
                return json_error(404, f"no camera frame from source {name!r}")
            image, rgb, roi = camera
            preview = live.encode(image, rgb, width, live.payload(outcome))
            bottle.response.set_header("X-ROI", json.dumps(list(roi)))
        else:
            preview = live.preview(outcome, width)
        bottle.response.content_type = "image/jpeg"
        bottle.response.set_header("Cache-Control", "no-store")
        bottle.response.set_header("X-Result", json.dumps(preview.result, ensure_ascii=True))
        bottle.response.set_header("X-Preview-Scale", f"{preview.scale:.6f}")
        return preview.jpeg

    @app.get("/api/stream")
    def stream() -> Iterator[bytes]:
        bottle.response.content_type = "text/event-stream"
        bottle.response.set_header("Cache-Control", "no-store")
        subscription = live.subscribe(results=bottle.request.query.get("results", "1") != "0")

        def events() -> Iterator[bytes]:
            try:
                yield b"retry: 2000\n\n"
                while not live.closed:
                    items = live.next_items(subscription, _KEEPALIVE)
                    if not items:
                        yield b": idle\n\n"
                    for kind, payload in items:
                        yield f"event: {kind}\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()
            finally:
                live.unsubscribe(subscription)

        return events()

    @app.get("/api/classes")
    def classes() -> dict[str, Any]:
        head = port.head()
        if head is None:
            return {"enabled": False, "classes": []}
        return {"enabled": True, "threshold": head.threshold, "classes": class_quality(head)}

    @app.get("/api/models")
    def models() -> dict[str, Any] | str:
        try:
            return {"models": port.models()}
        except EdgeClassifierError as exc:
            return json_error(500, str(exc))

    @app.post("/api/cmd/<name>")
    def command(name: str) -> str:
        ready()
        if bottle.request.content_length > port.max_payload:
            return json_error(413, f"the body of {bottle.request.content_length} bytes is over the limit of "
                                   f"{port.max_payload} (commands.max_payload)")
        try:
            body = bottle.request.body.read()
            arguments = json.loads(body) if body.strip() else {}
        except (ValueError, UnicodeDecodeError) as exc:
            return json_error(400, f"the body is not JSON: {exc}")
        if not isinstance(arguments, dict):
            return json_error(400, "the body must be a JSON object")
        reply = port.command(name, arguments)
        bottle.response.status = 200 if reply.get("ok") else 400
        bottle.response.content_type = "application/json"
        return json.dumps(reply, ensure_ascii=False)

    @app.get("/metrics")
    def prometheus() -> bytes:
        bottle.response.content_type = CONTENT_TYPE
        return metrics.text()

    return app


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text else default
    except ValueError:
        return default


def _float(text: str | None, default: float) -> float:
    try:
        return float(text) if text else default
    except ValueError:
        return default
