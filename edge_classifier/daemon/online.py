"""What the publish thread sends after each connect before ``{prefix}/status online``: the
retained state (Home Assistant discovery, through the announcer), once every mqtt source
has subscribed, so an image sent when the device says online is never lost (issue 12).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from edge_classifier import __version__
from edge_classifier.config import Config
from edge_classifier.config.sources import sources_of
from edge_classifier.daemon.pipeline import ModelSet
from edge_classifier.daemon.sources import ha_cameras
from edge_classifier.publish.announce import ANNOUNCED_FILE, Announcer
from edge_classifier.publish.outbox import Message
from edge_classifier.publish.publisher import Topics
from edge_classifier.source.group import CaptureGroup

__all__ = ["BeforeOnline"]

log = logging.getLogger(__name__)

SOURCE_WAIT = 5.0  # `online` waits this long for the mqtt sources' subscriptions at most


class BeforeOnline:
    """The publisher's ``retained_state`` callback (called by the publish thread after each
    connect, before ``online``, and after a model swap)."""

    def __init__(self, config: Callable[[], Config], topics: Topics,
                 models: Callable[[], ModelSet | None]) -> None:
        self._config = config
        self._topics = topics
        self._models = models
        self._announcer: Announcer | None = None  # made by the publish thread when first needed
        self._capture: CaptureGroup | None = None
        self._opened = threading.Event()  # set by the main thread, awaited by the publish thread

    def sources_opened(self, capture: CaptureGroup) -> None:
        """Main thread: every configured source has been added to ``capture``."""
        self._capture = capture
        self._opened.set()

    def __call__(self) -> list[Message]:
        self._await_sources()
        config = self._config()
        if self._announcer is None:
            self._announcer = Announcer(config.homeassistant, device_id=config.device.id,
                                        prefix=self._topics.prefix, path=Path(config.model.dir) / ANNOUNCED_FILE)
        models = self._models()
        model = models.info.name if models else "edge-classifier"
        return self._announcer.messages(model, __version__, cameras=ha_cameras(config))

    def _await_sources(self) -> None:
        """An mqtt source subscribed first (at most SOURCE_WAIT)."""
        if not any(s.kind == "mqtt" for s in sources_of(self._config())) or \
                not self._opened.wait(SOURCE_WAIT) or self._capture is None:
            return
        if not self._capture.wait_ready(SOURCE_WAIT):
            log.warning("saying online before the mqtt source has subscribed (not within %.0f s)", SOURCE_WAIT)
