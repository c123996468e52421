"""When to send ``WATCHDOG=1``: the daemon is alive when it progresses or healthily waits.

See :class:`WatchdogGate`. The protocol itself (the socket, the messages) is
:class:`edge_classifier.service.systemd.Notifier`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge_classifier.service.systemd import Notifier

__all__ = ["Intake", "WatchdogGate"]

log = logging.getLogger(__name__)


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
