"""The commands a device answers: status, pause, resume, config, snapshot, reload, model.

``CommandHandler.handle`` runs on the daemon's main thread (requests cross from paho's
network thread through the daemon's control queue), so it may touch the pipeline, the
capture and the publisher the way the main thread does. It returns the reply body; the
caller sends it. Unknown commands and bad arguments get ``{"ok": false, "error": ...}``
and change nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edge_classifier.config.runtime import apply_changes
from edge_classifier.errors import ConfigError, EdgeClassifierError

if TYPE_CHECKING:
    from edge_classifier.daemon.app import Daemon

__all__ = ["CommandHandler"]

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class CommandError(Exception):
    """A command that cannot be carried out; the message is the reply's ``error``."""


class CommandHandler:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.commands: dict[str, Handler] = {
            "status": self.status,
            "pause": self.pause,
            "resume": self.resume,
            "config": self.config,
            "snapshot": self.snapshot,
            "reload": self.reload,
            "model": self.model,
        }

    def handle(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """The reply body for one request (``ok`` plus results, or ``error``)."""
        handler = self.commands.get(name)
        if handler is None:
            return {"ok": False, "error": f"unknown command {name!r} (known: {', '.join(sorted(self.commands))})"}
        try:
            return {"ok": True, **handler(arguments)}
        except CommandError as exc:
            return {"ok": False, "error": str(exc)}
        except ConfigError as exc:
            return {"ok": False, "error": "; ".join(exc.problems), "problems": list(exc.problems)}
        except EdgeClassifierError as exc:
            return {"ok": False, "error": str(exc)}

    # --- the commands -------------------------------------------------------------------

    def status(self, arguments: dict[str, Any]) -> dict[str, Any]:
        _no_arguments(arguments)
        return {"state": self.daemon.state()}

    def pause(self, arguments: dict[str, Any]) -> dict[str, Any]:
        _no_arguments(arguments)
        self.daemon.set_paused(True)
        return {"paused": True}

    def resume(self, arguments: dict[str, Any]) -> dict[str, Any]:
        _no_arguments(arguments)
        self.daemon.set_paused(False)
        return {"paused": False}

    def config(self, arguments: dict[str, Any]) -> dict[str, Any]:
        changes = {k: v for k, v in arguments.items() if k != "request_id"}
        new = apply_changes(self.daemon.config, changes)  # ConfigError: nothing changes
        self.daemon.apply_runtime(new)
        return {"config": self.daemon.runtime_settings()}

    def snapshot(self, arguments: dict[str, Any]) -> dict[str, Any]:
        _no_arguments(arguments)
        return self.daemon.snapshot()

    def reload(self, arguments: dict[str, Any]) -> dict[str, Any]:
        _no_arguments(arguments)
        error = self.daemon.reload()
        if error is not None:
            raise CommandError(error)
        return {"reloaded": True}

    def model(self, arguments: dict[str, Any]) -> dict[str, Any]:
        raise CommandError("the model command is not supported yet: change model.path and send reload")


def _no_arguments(arguments: dict[str, Any]) -> None:
    extra = sorted(k for k in arguments if k != "request_id")
    if extra:
        raise CommandError(f"unexpected arguments: {', '.join(extra)}")
