"""The main loop's side of teaching (``learn``): frames or images collected for a class are
added to the head file and the command answered; a collection that runs out of time is
answered with why; a head file changed by the CLI is picked up.

Main thread only: ``FramesCollected`` items come off the control queue (put there by the
pipeline's workers or thread ``learn-images``, see ``daemon/learning.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from edge_classifier.control.requests import Request
from edge_classifier.daemon.learning import COLLECT_TIMEOUT, FramesCollected, Learning
from edge_classifier.errors import EdgeClassifierError

__all__ = ["Teaching"]

log = logging.getLogger(__name__)

Reply = Callable[[str, Request, dict[str, Any]], None]
"""``reply(command, request, body)``: the command channel's ``reply_to``."""
Event = Callable[..., None]
"""``event(name, **details)``: an event on ``{prefix}/event``."""


class Teaching:
    def __init__(self, learning: Learning, reply: Reply, event: Event) -> None:
        self.learning = learning
        self._reply = reply
        self._event = event

    def collected(self, item: FramesCollected) -> None:
        """Learn what a ``learn`` command's frames or images gave, and answer it."""
        request = item.request
        if item.error:
            self._answer(request, {"ok": False, "error": item.error})
            return
        try:
            head = self.learning.change(lambda current: current.with_examples(item.label, item.embeddings))
        except EdgeClassifierError as exc:
            self._answer(request, {"ok": False, "error": str(exc)})
            return
        log.info("learned %d examples of %r (%d classes now)", len(item.embeddings), item.label, len(head))
        self._event("class_learned", label=item.label, added=len(item.embeddings), classes=dict(head.classes()))
        self._answer(request, {"ok": True, "label": item.label, "added": len(item.embeddings),
                               "classes": dict(head.classes())})

    def tick(self, now: float) -> None:
        """Answer a collection that ran out of time; pick up a head file the CLI changed."""
        expired = self.learning.expired(now)
        if expired is not None:
            error = (f"only {len(expired.embeddings)} of {expired.wanted} frames came in "
                     f"{COLLECT_TIMEOUT:.0f} s (is the source paused or lost?); nothing was learned")
            self._answer(expired.request, {"ok": False, "error": error})
        if self.learning.poll(now):
            self._event("classes_reloaded", classes=dict(self.learning.head.classes()))

    def _answer(self, request: Request | None, body: dict[str, Any]) -> None:
        if request is not None:
            self._reply("learn", request, body)
