"""A real MJPEG-over-HTTP server on 127.0.0.1 (``multipart/x-mixed-replace``), as IP cameras serve."""

from __future__ import annotations

import http.server
import threading
from typing import Any

import cv2
import numpy as np

GREY = cv2.imencode(".jpg", np.full((48, 64, 3), 90, np.uint8))[1].tobytes()


class MjpegServer:
    """``multipart/x-mixed-replace`` JPEG parts on 127.0.0.1, ~50 frames/s, stoppable
    (dropping every open connection) and restartable on the same port."""

    def __init__(self, port: int = 0, jpeg: bytes = GREY) -> None:
        self.port = port
        self.jpeg = jpeg
        self._stopping = threading.Event()
        self.stalled = threading.Event()  # set: keep connections open but send nothing
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> MjpegServer:
        stopping = self._stopping = threading.Event()
        stalled = self.stalled
        jpeg = self.jpeg

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    while not stopping.wait(0.02):
                        if stalled.is_set():
                            continue
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                         b"Content-Length: %d\r\n\r\n" % len(jpeg) + jpeg + b"\r\n")
                except OSError:
                    pass  # the client went away

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = False  # so server_close() joins the handlers
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="mjpeg-server",
                                        kwargs={"poll_interval": 0.05})
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # every handler leaves its loop and its connection closes
        server.shutdown()
        server.server_close()
        assert self._thread is not None
        self._thread.join(5)
