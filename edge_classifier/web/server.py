"""The HTTP listener: the standard library's WSGI server, one named thread per request.

Why this stack (measured on the 2-core x86-64 dev box, on top of the daemon's numpy, OpenCV
and paho; see the README): bottle + ``wsgiref`` add 2.1 MB RSS and 21 ms of import, aiohttp
13.6 MB and 268 ms, nearly the whole 15 MB budget before serving anything. A thread per
request costs nothing while nobody connects (the accept loop sleeps in ``select``), and a
few viewers of a local device need a few threads. HTTP parsing is ``http.server``'s,
routing bottle's; nothing here parses HTTP by hand.

Threads: ``web`` runs the accept loop; each connection is served in a ``web-request``
thread (at most ``MAX_CONNECTIONS`` at once; more are closed at once).
"""

from __future__ import annotations

import errno
import logging
import socket
import socketserver
import threading
import time
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from edge_classifier.errors import ConfigError, ServiceUnavailableError

__all__ = ["MAX_CONNECTIONS", "Listener"]

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 16


class _Handler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class _Server(WSGIServer):
    daemon_threads = True
    request_queue_size = 16

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily) -> None:
        self.address_family = family
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._count = 0
        self._requests: set[threading.Thread] = set()  # request threads still running
        self._requests_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # As HTTPServer.server_bind, without its reverse DNS lookup of the address (getfqdn),
        # which can hang for seconds on a device without a resolver.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)
        self.setup_environ()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.warning("web: more than %d connections at once, closing one from %s", MAX_CONNECTIONS,
                        client_address[0])
            self.shutdown_request(request)
            return
        self._count += 1
        thread = threading.Thread(target=self._serve, args=(request, client_address),
                                  name=f"web-request-{self._count}", daemon=True)
        with self._requests_lock:
            self._requests.add(thread)
        thread.start()

    def _serve(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self._slots.release()
            with self._requests_lock:
                self._requests.discard(threading.current_thread())

    def join_requests(self, timeout: float) -> int:
        """Wait up to ``timeout`` s for the request threads to end; how many are still running.

        A daemon thread still inside OpenCV (a preview's resize or JPEG encoding) when the
        interpreter finalizes is ended by pthread_exit, whose unwinding through OpenCV's C++
        frames aborts the process: the daemon exited with SIGABRT instead of 0 once in a CI run
        that stopped it with a browser attached."""
        deadline = time.monotonic() + timeout
        with self._requests_lock:
            running = list(self._requests)
        for thread in running:
            thread.join(max(0.0, deadline - time.monotonic()))
        return sum(thread.is_alive() for thread in running)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("web: connection from %s failed", client_address[0], exc_info=True)


class Listener:
    """Bound at construction (so a taken port fails the start), serving once ``start``ed."""

    def __init__(self, host: str, port: int, app: Any) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self._server = _Server((host.strip("[]"), port), family)
        except OSError as exc:
            why = f"cannot listen on {host}:{port}: {exc.strerror or exc}"
            if exc.errno == errno.EADDRINUSE:  # another process (maybe an old instance): may pass
                raise ServiceUnavailableError(f"web.port: {why}") from exc
            raise ConfigError([f"web.host: {why}"]) from exc
        self._server.set_app(app)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="web", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop accepting; requests in flight end with their connection. Idempotent."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(2.0)
        # Requests in flight (a live stream woken by the caller's close) end before the process
        # may: see _Server.join_requests.
        left = self._server.join_requests(2.0)
        if left:
            log.warning("web: %d request(s) still running at close", left)
        self._server.server_close()

    def __enter__(self) -> Listener:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
