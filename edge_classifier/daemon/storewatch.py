"""``model.watch``: notice the ``.tflite`` files that appear in (or change in) the model store.

A file counts once its size and modification time have held still for one poll (about a
second apart), so a copy still in progress is never taken. The main loop polls; what to do
with a file is ``ModelControl.poll_store``'s business.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

__all__ = ["StoreWatch"]

log = logging.getLogger(__name__)

_Stamp = tuple[int, int]  # size, mtime in ns


class StoreWatch:
    def __init__(self, store: Callable[[], Path], *, period: float = 1.0) -> None:
        self._store = store
        self._period = period
        self._seen: dict[str, _Stamp] | None = None
        self._candidates: dict[str, _Stamp] = {}
        self._current: dict[str, _Stamp] = {}
        self._checked = 0.0

    def start(self) -> None:
        """What the store holds now is not new."""
        self._seen = self._scan()

    def poll(self, now: float) -> list[str]:
        """The files new or changed since they were last ``taken``, held still for one poll."""
        if now - self._checked < self._period:
            return []
        self._checked = now
        current = self._scan()
        if current is None:
            return []
        if self._seen is None:
            self._seen = current
            return []
        self._current = current
        ready = []
        for name, stamp in current.items():
            if self._seen.get(name) == stamp:
                continue
            if self._candidates.get(name) != stamp:
                self._candidates[name] = stamp  # seen once: wait for it to hold still
                continue
            ready.append(name)
        for name in list(self._seen):
            if name not in current:
                del self._seen[name]
        return ready

    def taken(self, name: str) -> None:
        """``name`` was acted on: it is not new any more (until it changes again)."""
        if self._seen is not None and name in self._current:
            self._seen[name] = self._current[name]
        self._candidates.pop(name, None)

    def _scan(self) -> dict[str, _Stamp] | None:
        store = self._store()
        try:
            return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in store.glob("*.tflite")
                    if not p.name.startswith(".")}
        except OSError as exc:
            log.warning("model.watch: cannot list %s: %s", store, exc)
            return None
