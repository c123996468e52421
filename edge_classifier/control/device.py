"""What the control plane sees of the running daemon: one small interface.

The commands (``control/commands.py``), the reports (``daemon/report.py``) and the web view
reach the daemon only through :class:`Device`, never through the ``Daemon`` class itself, so
none of them imports ``daemon/app.py`` (which imports them: no import circle). The daemon
satisfies it structurally; a test can hand in anything shaped alike.

Everything here is read or called on the daemon's main thread (commands, the stats timer),
except the reads of the web view's request threads: single attribute reads of objects the
other threads replace whole, as the status command's are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from edge_classifier.config.schema import Config
    from edge_classifier.control.requests import Request
    from edge_classifier.daemon.learning import Learning
    from edge_classifier.daemon.modelctl import ModelControl
    from edge_classifier.daemon.pipeline import ModelSet
    from edge_classifier.publish.connection import MqttConnection
    from edge_classifier.publish.publisher import Publisher, Topics
    from edge_classifier.source.group import CaptureGroup

__all__ = ["Device"]


class Device(Protocol):
    """The running daemon as commands and reports see it."""

    stats_last: tuple[float, int, int]
    """(time, frames captured, results published) of the previous ``{prefix}/stats``."""

    @property
    def config(self) -> Config:
        """The configuration in force (replaced whole by ``config`` and reloads)."""

    @property
    def topics(self) -> Topics: ...

    @property
    def started(self) -> float:
        """``time.monotonic()`` at start (uptime)."""

    @property
    def running(self) -> bool:
        """Whether the pipeline runs (the startup is done)."""

    @property
    def paused(self) -> bool:
        """Whether the whole daemon is paused (the ``pause`` command without a source)."""

    @property
    def capture(self) -> CaptureGroup | None:
        """The sources, once they run."""

    @property
    def models(self) -> ModelSet | None:
        """The model set classifying now (it changes with swaps and Edge TPU fallbacks)."""

    @property
    def modelctl(self) -> ModelControl | None: ...

    @property
    def learning(self) -> Learning | None:
        """The learned classes, when ``[learn]`` is enabled."""

    @property
    def publisher(self) -> Publisher | None: ...

    @property
    def connection(self) -> MqttConnection | None:
        """The MQTT connection, when ``[mqtt]`` is enabled."""

    def submit(self, request: Request) -> None:
        """Queue a command request for the main loop (any thread: the web view's come this way)."""

    def set_paused(self, paused: bool) -> None:
        """Pause or resume every source's classification."""

    def apply_runtime(self, new: Config) -> None:
        """Apply the runtime settings of ``new`` (already validated) in place."""

    def reload(self) -> str | None:
        """Load the config file again and apply it; None when applied, else why not."""

    def publish_event(self, name: str, **details: Any) -> None:
        """Send an event on ``{prefix}/event``."""
