"""What the publisher says when delivery goes wrong: dropped for the bounds, refused by the broker,
left undelivered at shutdown. Logged (rate-limited or once) here; the events go out through the
publisher, which owns the sending. Only the publish thread uses a :class:`DeliveryTrouble`."""

from __future__ import annotations

import logging
import time
from typing import Any

__all__ = ["DeliveryTrouble"]

log = logging.getLogger(__name__)

_OVERFLOW_EVENT_EVERY = 10.0  # seconds between spool_overflow log lines / events while dropping


class DeliveryTrouble:
    def __init__(self) -> None:
        self._overflow_reported = float("-inf")
        self._overflow_logged = float("-inf")
        self._overflow_pending = 0  # dropped and not yet reported by an event
        self._refusals: set[tuple[str, int]] = set()  # (topic, reason code) already logged

    def dropped(self, count: int, dropped_total: int) -> None:
        """``count`` oldest messages dropped for the bounds: counted; logged every few seconds."""
        self._overflow_pending += count
        now = time.monotonic()
        if now - self._overflow_logged >= _OVERFLOW_EVENT_EVERY:
            self._overflow_logged = now
            log.warning("publisher: spool full, dropped the oldest undelivered messages (%d in all)", dropped_total)

    def overflow_event(self, dropped_total: int) -> dict[str, Any] | None:
        """The ``spool_overflow`` event's details when one is due (at most every few seconds)."""
        if not self._overflow_pending:
            return None
        now = time.monotonic()
        if now - self._overflow_reported < _OVERFLOW_EVENT_EVERY:
            return None
        self._overflow_reported = now
        count, self._overflow_pending = self._overflow_pending, 0
        return {"dropped": count, "dropped_total": dropped_total}

    def refused(self, topic: str, code: int, reason: str, refused_total: int) -> dict[str, Any] | None:
        """The broker refused a message on ``topic``: logged once per topic and reason; the
        ``publish_refused`` event's details the first time, else None."""
        if (topic, code) in self._refusals:
            return None
        self._refusals.add((topic, code))
        log.error("MQTT broker refused a message on %s: %s (reason code 0x%02X); dropped, not retried "
                  "(check the broker's ACL for this client; logged once per topic and reason)", topic, reason, code)
        return {"topic": topic, "reason": reason, "reason_code": code, "refused_total": refused_total}

    @staticmethod
    def undelivered(count: int, durable: bool, write_errors: int) -> None:
        """Shutdown with ``count`` messages not delivered: lost, or kept in the spool."""
        if not durable:
            log.warning("publisher: %d messages not delivered at shutdown (lost: the outbox is in memory; "
                        "set publish.spool_dir to keep them)", count)
        elif write_errors:
            log.warning("publisher: %d messages not delivered at shutdown; the spool could not be written to "
                        "(see above), so some of them may be lost", count)
        else:
            log.info("publisher: %d messages not delivered yet: kept in the spool for the next start", count)
