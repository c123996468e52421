"""Talk to systemd: ``sd_notify`` messages and the watchdog policy.

The protocol (``sd_notify(3)``): the service manager puts an ``AF_UNIX`` datagram socket
address in ``$NOTIFY_SOCKET``, either a file-system path (``/run/systemd/notify``) or an
abstract-namespace name written with a leading ``@``. Each message is one datagram of
newline-separated ``KEY=VALUE`` lines. With ``WatchdogSec=`` the manager also sets
``$WATCHDOG_USEC`` (the timeout) and ``$WATCHDOG_PID`` (the process it expects pings from).

Two pieces:

- :class:`Notifier` sends the messages. Outside systemd (no ``$NOTIFY_SOCKET``) every call is
  a cheap no-op, and a failed send is logged once at debug level and otherwise ignored: the
  daemon must never die because systemd went away.
- :class:`WatchdogGate` (``watchdog.py``) decides *when* to send ``WATCHDOG=1``: while the daemon itself is
  alive. The main loop calls :meth:`WatchdogGate.tick`, so a hung main loop sends nothing;
  and the gate pings only while the pipeline makes progress (frames classified) or is
  healthily waiting for a frame (asking the source and getting none: no camera yet, a
  camera that went away, a paused daemon). A pipeline that took frames and finished none
  within the stall limit is hung: no ping, and systemd restarts the service. A missing
  camera is never a reason to restart (that is a restart loop that cannot help).

Typical wiring in the daemon::

    with Notifier.from_env() as notifier:
        gate = WatchdogGate(notifier)
        gate = WatchdogGate(notifier, intake=lambda: capture.intake)
        notifier.ready()                # model loaded, MQTT set up: frames may come later
        while running:                  # pipeline thread calls gate.frame_done() per result
            gate.tick()
            ...
        notifier.stopping()
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from os import environ as _os_environ
from os import getpid
from socket import AF_UNIX, SOCK_DGRAM, socket
from types import TracebackType

__all__ = ["Notifier"]

log = logging.getLogger(__name__)


def _socket_address(value: str) -> str:
    """Turn a ``$NOTIFY_SOCKET`` value into an address for ``sendto``.

    ``@name`` is the abstract namespace: the kernel address is a NUL byte followed by the
    name (no terminator), which Python spells as a str starting with ``"\\0"``.
    """
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    raise ValueError(f"Invalid NOTIFY_SOCKET address: {value!r} (expected an absolute path or @name)")


class Notifier:
    """Sends ``sd_notify`` messages over one ``AF_UNIX``/``SOCK_DGRAM`` socket.

    Thread-safe: any thread may call any method; a lock serialises the sends with
    :meth:`close`, so a send never lands on a closed (or reused) file descriptor.

    The socket is non-blocking: if the manager stops reading, a send fails with
    ``EAGAIN`` (logged once, ignored) instead of stalling the daemon's main loop.
    """

    def __init__(self, address: str | None = None, watchdog_usec: int | None = None) -> None:
        """``address`` is a ``$NOTIFY_SOCKET`` value (``/path`` or ``@name``), or None for
        a disabled notifier; ``watchdog_usec`` is ``$WATCHDOG_USEC`` when the watchdog
        applies to this process, else None."""
        self._address = _socket_address(address) if address else None
        self._display = address or ""
        self._lock = threading.Lock()
        self._failure_logged = False
        self._sock: socket | None = None
        if self._address is not None:
            self._sock = socket(AF_UNIX, SOCK_DGRAM)
            self._sock.setblocking(False)
        #: Seconds between watchdog pings: half of ``WatchdogSec=``, as ``sd_watchdog_enabled(3)``
        #: recommends; None when there is no watchdog for this process.
        self.watchdog_interval: float | None = (
            watchdog_usec / 2e6 if watchdog_usec and watchdog_usec > 0 and self._sock else None
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = _os_environ, *, pid: int | None = None) -> Notifier:
        """Build from ``$NOTIFY_SOCKET``, ``$WATCHDOG_USEC`` and ``$WATCHDOG_PID``.

        The watchdog applies only when ``WATCHDOG_PID`` is unset or names this process
        (``pid``, default :func:`os.getpid`). The environment is only read, never changed.
        A malformed value disables the feature it belongs to, with a warning: a daemon
        that cannot talk to systemd still classifies frames.
        """
        address = environ.get("NOTIFY_SOCKET") or None
        if address is not None:
            try:
                _socket_address(address)
            except ValueError as exc:
                log.warning("Not notifying systemd: %s", exc)
                address = None
        watchdog_usec: int | None = None
        raw_usec = environ.get("WATCHDOG_USEC")
        raw_pid = environ.get("WATCHDOG_PID")
        if raw_usec:
            try:
                watchdog_usec = int(raw_usec)
                if raw_pid and int(raw_pid) != (getpid() if pid is None else pid):
                    watchdog_usec = None  # the watchdog belongs to another process
            except ValueError:
                log.warning(
                    "Ignoring the systemd watchdog: WATCHDOG_USEC=%r WATCHDOG_PID=%r", raw_usec, raw_pid
                )
                watchdog_usec = None
        return cls(address, watchdog_usec)

    @property
    def enabled(self) -> bool:
        """True while there is a socket to send to (running under systemd, not closed)."""
        return self._sock is not None

    def notify(self, **fields: object) -> bool:
        """Send one datagram of ``KEY=VALUE`` lines, e.g. ``notify(STATUS="warming up")``.

        Returns True when the datagram went out. Keys must be non-empty and free of ``=``
        and newlines, values free of newlines (ValueError otherwise: a programming error).
        """
        if self._sock is None:
            return False
        lines = []
        for key, value in fields.items():
            text = str(value)
            if not key or "=" in key or "\n" in key or "\n" in text:
                raise ValueError(f"Invalid sd_notify field: {key}={text!r}")
            lines.append(f"{key}={text}")
        if not lines:
            return False
        return self._send("\n".join(lines).encode())

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``: startup (or a reload) is finished; optionally with a status line."""
        if status is None:
            return self.notify(READY=1)
        return self.notify(READY=1, STATUS=_one_line(status))

    def reloading(self) -> bool:
        """``RELOADING=1`` with ``MONOTONIC_USEC``; send :meth:`ready` when the reload is done.

        systemd >= 253 (``Type=notify-reload``) wants the ``CLOCK_MONOTONIC`` time in µs
        alongside, to tell this reload from an older one; older versions ignore it.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify(RELOADING=1, MONOTONIC_USEC=usec)

    def stopping(self) -> bool:
        """``STOPPING=1``: shutdown has begun."""
        return self.notify(STOPPING=1)

    def status(self, text: str) -> bool:
        """``STATUS=...``: the one-line status ``systemctl status`` shows (newlines become spaces)."""
        return self.notify(STATUS=_one_line(text))

    def watchdog(self) -> bool:
        """``WATCHDOG=1``; a no-op when no watchdog applies to this process."""
        if self.watchdog_interval is None:
            return False
        return self.notify(WATCHDOG=1)

    def extend_timeout(self, seconds: float) -> bool:
        """``EXTEND_TIMEOUT_USEC``: ask for more time to start, reload or stop (slow model loads)."""
        return self.notify(EXTEND_TIMEOUT_USEC=int(seconds * 1_000_000))

    def _send(self, data: bytes) -> bool:
        with self._lock:
            if self._sock is None or self._address is None:
                return False
            try:
                self._sock.sendto(data, self._address)
            except OSError as exc:
                # The manager is gone or not reading (ENOENT, ECONNREFUSED, EAGAIN ...).
                # Never fatal; logged once so a flood of pings cannot flood the log.
                if not self._failure_logged:
                    self._failure_logged = True
                    log.debug("sd_notify to %s failed (not logged again): %s", self._display, exc)
                return False
            return True

    def close(self) -> None:
        """Close the socket; later calls are no-ops. Safe to call more than once."""
        with self._lock:
            sock, self._sock = self._sock, None
            self.watchdog_interval = None
        if sock is not None:
            sock.close()

    def __enter__(self) -> Notifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Notifier(address={self._display!r}, watchdog_interval={self.watchdog_interval!r})"


def _one_line(text: str) -> str:
    return " ".join(text.splitlines())
