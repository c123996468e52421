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
- :class:`WatchdogGate` decides *when* to send ``WATCHDOG=1``: while the daemon itself is
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from os import environ as _os_environ
from os import getpid
from socket import AF_UNIX, SOCK_DGRAM, socket
from types import TracebackType

__all__ = ["Intake", "Notifier", "WatchdogGate"]

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


@dataclass(frozen=True, slots=True)
class Intake:
    """How the pipeline takes frames from its source, as the watchdog sees it."""

    taken: int
    """Frames the pipeline has taken so far (only ever grows for one capture)."""
    polled: float | None
    """``time.monotonic()`` of the pipeline's latest request for a frame; None before the first."""


class WatchdogGate:
    """Sends ``WATCHDOG=1`` while the daemon is alive: progressing, or healthily waiting.

    :meth:`tick` (main loop) pings when at least ``period`` seconds passed since the last
    ping (default: the notifier's :attr:`Notifier.watchdog_interval`, i.e. half of
    ``WatchdogSec=``) and one of these holds:

    1. the daemon is healthily idle by decision (:meth:`set_idle_ok`: paused, reloading);
    2. a frame was classified since the last ping, at most ``stall_limit`` seconds ago
       (default: ``period``);
    3. the pipeline is waiting for a frame: since the last ping it took none, and it asked
       the source for one within ``stall_limit`` (``intake``). This is the "no camera yet"
       or "camera gone" state: the capture thread retries the source meanwhile.

    Otherwise the pipeline took frames and finished none (an inference or a stage after it
    hangs), or stopped asking for frames at all (every worker stuck): the ping is withheld
    and ``WatchdogSec=`` after the last one systemd kills and restarts the service. A main
    loop that hangs never calls :meth:`tick`, so it is caught too.

    Threads: :meth:`frame_done` runs on the pipeline thread and only stores a float, which
    is atomic under the GIL; ``intake`` reads two attributes the pipeline's workers store;
    :meth:`tick` and :meth:`set_idle_ok` run on the main loop. No lock is needed and the hot
    path stays cheap.
    """

    def __init__(
        self,
        notifier: Notifier,
        *,
        period: float | None = None,
        stall_limit: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        intake: Callable[[], Intake | None] | None = None,
    ) -> None:
        self._notifier = notifier
        #: Seconds between pings; None disables the gate (no watchdog for this process).
        self.period: float | None = period if period is not None else notifier.watchdog_interval
        #: How old the newest frame (or request for one) may be for the pipeline to count as alive.
        self.stall_limit: float | None = stall_limit if stall_limit is not None else self.period
        self._clock = clock
        self._intake = intake
        self._last_frame: float | None = None  # written by the pipeline thread
        self._last_ping: float | None = None
        self._taken_at_ping = 0
        self._idle_ok = False
        self._stall_logged = False

    def watch(self, intake: Callable[[], Intake | None]) -> None:
        """Read the pipeline's :class:`Intake` from ``intake`` (e.g. the current capture's)."""
        self._intake = intake

    def frame_done(self, now: float | None = None) -> None:
        """Record that a frame was classified and published (called for every result)."""
        self._last_frame = self._clock() if now is None else now

    def set_idle_ok(self, idle_ok: bool) -> None:
        """While True, ping without frames: the daemon is healthy but not processing."""
        self._idle_ok = idle_ok

    @property
    def idle_ok(self) -> bool:
        return self._idle_ok

    def tick(self, now: float | None = None) -> bool:
        """Ping if due and healthy (see the class docstring); returns True when a ping went out.

        Call it from the main loop often compared with ``period`` (every second is fine).
        """
        if self.period is None:
            return False
        now = self._clock() if now is None else now
        if self._last_ping is not None and now - self._last_ping < self.period:
            return False
        intake = self._intake() if self._intake is not None else None
        if not self._healthy(now, intake):
            return False
        self._last_ping = now
        if intake is not None:
            self._taken_at_ping = intake.taken
        self._stall_logged = False
        return self._notifier.watchdog()

    def _healthy(self, now: float, intake: Intake | None) -> bool:
        if self._idle_ok:
            return True
        last_frame = self._last_frame  # one read: the pipeline thread may store a newer one
        fresh = last_frame is not None and (self._last_ping is None or last_frame > self._last_ping)
        limit = self.stall_limit
        if fresh and last_frame is not None and (limit is None or now - last_frame <= limit):
            return True
        if intake is not None:
            # A new capture (reload) counts from 0 again: then all its frames are "since".
            since = intake.taken - self._taken_at_ping if intake.taken >= self._taken_at_ping else intake.taken
            asking = intake.polled is not None and (limit is None or now - intake.polled <= limit)
            if since == 0 and asking:
                return True  # waiting for a frame: healthy, whatever the camera does
            reason = (f"{since} frame(s) taken and none finished" if asking
                      else "the pipeline stopped asking for frames")
        elif last_frame is None:
            return False
        else:
            reason = f"no frame for {now - last_frame:.1f} s"
        if not self._stall_logged:
            self._stall_logged = True
            log.warning("Pipeline stalled (%s): withholding the systemd watchdog ping so the service gets restarted",
                        reason)
        return False
