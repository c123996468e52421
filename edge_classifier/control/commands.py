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

import cv2

from edge_classifier.config.runtime import apply_changes
from edge_classifier.control.requests import Request
from edge_classifier.daemon import report
from edge_classifier.errors import ConfigError, EdgeClassifierError, shown

if TYPE_CHECKING:
    from edge_classifier.control.device import Device

__all__ = ["CommandHandler"]

log = logging.getLogger(__name__)

# A handler gets the arguments and the request; it returns the reply's body, or None when the
# reply comes later (the request is kept to answer then: a model swap, frames to learn from).
Handler = Callable[[dict[str, Any], "Request | None"], "dict[str, Any] | None"]


class CommandError(Exception):
    """A command that cannot be carried out; the message is the reply's ``error``."""


class CommandHandler:
    def __init__(self, daemon: Device) -> None:
        self.daemon = daemon
        self.commands: dict[str, Handler] = {
            "status": self.status,
            "pause": self.pause,
            "resume": self.resume,
            "config": self.config,
            "snapshot": self.snapshot,
            "reload": self.reload,
            "model": self.model,
            "learn": self.learn,
            "forget": self.forget,
            "classes": self.classes,
        }

    def handle(self, name: str, arguments: dict[str, Any], request: Request | None = None) -> dict[str, Any] | None:
        """The reply body for one request (``ok`` plus results, or ``error``); None when the
        reply comes later (a model swap answers when it is done)."""
        handler = self.commands.get(name)
        if handler is None:
            return {"ok": False, "error": f"unknown command {name!r} (known: {', '.join(sorted(self.commands))})"}
        try:
            body = handler(arguments, request)
            return None if body is None else {"ok": True, **body}
        except CommandError as exc:
            return {"ok": False, "error": str(exc)}
        except ConfigError as exc:
            return {"ok": False, "error": "; ".join(exc.problems), "problems": list(exc.problems)}
        except EdgeClassifierError as exc:
            return {"ok": False, "error": str(exc)}

    # --- the commands -------------------------------------------------------------------

    def status(self, arguments: dict[str, Any], request: Request | None = None) -> dict[str, Any]:
        _no_arguments(arguments)
        return {"state": report.state(self.daemon)}

    def pause(self, arguments: dict[str, Any], request: Request | None = None) -> dict[str, Any]:
        """``{}``: every source; ``{"source": NAME}``: that source only (its camera stays open)."""
        return self._pause(arguments, True)

    def resume(self, arguments: dict[str, Any], request: Request | None = None) -> dict[str, Any]:
        return self._pause(arguments, False)

    def _pause(self, arguments: dict[str, Any], paused: bool) -> dict[str, Any]:
        name = _source_argument(arguments)
        if name is None:
            self.daemon.set_paused(paused)
            return {"paused": paused}
        capture = self._group().capture(name)
        if capture is None:
            raise self._no_source(name)
        capture.paused = paused  # read by its capture thread at its next frame
        log.info("source %s %s", name, "paused" if paused else "resumed")
        return {"paused": paused, "source": name}

    def _group(self) -> Any:
        group = self.daemon.capture
        if group is None:
            raise CommandError("no source is running yet")
        return group

    def _no_source(self, name: str) -> CommandError:
        names = ", ".join(self._group().names()) or "none"
        return CommandError(f"source: no source named {shown(name, 40)} (running: {names})")

    def config(self, arguments: dict[str, Any], request: Request | None = None) -> dict[str, Any]:
        changes = {k: v for k, v in arguments.items() if k != "request_id"}
        new = apply_changes(self.daemon.config, changes)  # ConfigError: nothing changes
        if new.sources and new.source.fps != self.daemon.config.source.fps:
            raise CommandError("source.fps: with [[sources]] each source has its own fps; "
                               "change it in the file and reload")
        self.daemon.apply_runtime(new)
        return {"config": report.runtime_settings(self.daemon.config)}

    def snapshot(self, arguments: dict[str, Any], request: Request | None = None) -> dict[str, Any]:
        """The latest frame as JPEG on ``{prefix}/snapshot``; ``{"source": NAME}``: that source's
        (a configured source's name, or a camera's as results report it: an mqtt topic)."""
        name = _source_argument(arguments)
        daemon = self.daemon
        group = self._group()
        frame = group.last_frame if name is None else group.last_frame_of(name)
        if frame is None:
            if name is not None and group.frames_of(name) is None:
                raise self._no_source(name)
            raise CommandError("no frame captured yet")
        image = cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR) if frame.rgb else frame.image
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise CommandError("could not encode the frame as JPEG")
        data = jpeg.tobytes()
        if daemon.connection is not None:
            daemon.connection.publish(daemon.topics.snapshot, data, qos=1)
        return {"topic": daemon.topics.snapshot, "bytes": len(data), "frame": frame.index, "source": frame.source,
                "width": frame.size[0], "height": frame.size[1]}

    def reload(self, arguments: dict[str, Any], request: Request | None = None) -> dict[str, Any]:
        _no_arguments(arguments)
        error = self.daemon.reload()
        if error is not None:
            raise CommandError(error)
        return {"reloaded": True}


    def _learning(self) -> Any:
        learning = self.daemon.learning
        if learning is None:
            raise CommandError("learning is off: set [learn] enabled = true (and restart)")
        return learning

    def learn(self, arguments: dict[str, Any], request: Request | None = None) -> dict[str, Any] | None:
        """``{"label": L, "images": [base64 JPEG/PNG, ...]}``, or ``{"label": L, "frames": N}``
        (answered when the frames came)."""
        if "frames" in arguments:
            self.start_learning_frames(arguments, request)
            return None
        learning = self._learning()
        label = _Learn.label(arguments, ("images",))
        images = arguments.get("images")
        if not isinstance(images, list) or not images:
            raise CommandError("give images (a list of base64 JPEG/PNG images) or frames (a count)")
        learning.learn_images(label, images, request)  # embedded off the main loop; answered when done
        return None

    def start_learning_frames(self, arguments: dict[str, Any], request: Request | None) -> None:
        """``{"label": L, "frames": N}``: the next N frames; replied to when they came. With
        ``"source": NAME`` only that source's (a configured source, or a camera as results name it)."""
        learning = self._learning()
        label = _Learn.label(arguments, ("frames", "source"))
        source = _source_argument({"source": arguments["source"]}) if "source" in arguments else None
        frames = arguments.get("frames")
        limit = learning.config.max_examples
        if not isinstance(frames, int) or isinstance(frames, bool) or not 1 <= frames <= limit:
            raise CommandError(f"frames: must be an integer from 1 to {limit} (learn.max_examples)")
        accept = None
        if source is not None:
            accept = self._group().frames_of(source)
            if accept is None:
                raise self._no_source(source)
        learning.collect_frames(label, frames, request, accept=accept)

    def forget(self, arguments: dict[str, Any], request: Request | None = None) -> dict[str, Any]:
        learning = self._learning()
        label = _Learn.label(arguments, ())
        head = learning.change(lambda current: current.without(label))
        self.daemon.publish_event("class_forgotten", label=label)
        return {"label": label, "classes": dict(head.classes())}

    def classes(self, arguments: dict[str, Any], request: Request | None = None) -> dict[str, Any]:
        _no_arguments(arguments)
        learning = self._learning()
        head = learning.head
        return {"classes": dict(head.classes()), "threshold": head.threshold, "file": str(learning.path),
                "embeddings": learning.describe()}

    def model(self, arguments: dict[str, Any], request: Request | None = None) -> None:
        """``{"name": FILE}`` (a model in the store) or ``{"url": URL, "sha256": HEX}``; with
        ``"source": NAME`` for that [[sources]] camera only (daemon/modelctl.py)."""
        from edge_classifier.daemon.swap import SwapRequest

        extra = sorted(k for k in arguments if k not in ("name", "url", "sha256", "request_id", "source"))
        if extra:
            raise CommandError(f"unexpected arguments: {', '.join(extra)} (give name, or url and sha256)")
        name, url, sha256 = arguments.get("name"), arguments.get("url"), arguments.get("sha256")
        if (name is None) == (url is None):
            raise CommandError("give either name (a model in the store) or url (with sha256)")
        for key, value in (("name", name), ("url", url), ("sha256", sha256)):
            if value is not None and not isinstance(value, str):
                raise CommandError(f"{key}: must be a string, not {type(value).__name__}")
        if url is not None and not sha256:
            raise CommandError("sha256: required with url (the download is checked against it)")
        assert self.daemon.modelctl is not None
        source = _source_argument({k: v for k, v in arguments.items() if k == "source"})
        why_not = self.daemon.modelctl.request(SwapRequest("command", name=name, url=url, sha256=sha256,
                                                           request=request, source=source))
        if why_not is not None:
            raise CommandError(why_not)


class _Learn:
    """Argument checks of the learning commands."""

    @staticmethod
    def label(arguments: dict[str, Any], allowed: tuple[str, ...]) -> str:
        extra = sorted(k for k in arguments if k not in (*allowed, "label", "request_id"))
        if extra:
            raise CommandError(f"unexpected arguments: {', '.join(extra)}")
        label = arguments.get("label")
        if not isinstance(label, str) or not label.strip():
            raise CommandError("label: must be a non-empty string")
        from edge_classifier.learn.head import MAX_LABEL_LENGTH  # here: the daemon starts without learn/

        if len(label) > MAX_LABEL_LENGTH:
            raise CommandError(f"label: {shown(label, 40)} is too long: at most {MAX_LABEL_LENGTH} characters")
        return label


def _source_argument(arguments: dict[str, Any]) -> str | None:
    """The optional ``source`` argument (a source's or camera's name); nothing else allowed."""
    extra = sorted(k for k in arguments if k not in ("request_id", "source"))
    if extra:
        raise CommandError(f"unexpected arguments: {', '.join(extra)}")
    if "source" not in arguments:
        return None
    name = arguments["source"]
    if not isinstance(name, str) or not name:
        raise CommandError("source: must be a non-empty string (a source's name)")
    return name


def _no_arguments(arguments: dict[str, Any]) -> None:
    extra = sorted(k for k in arguments if k != "request_id")
    if extra:
        raise CommandError(f"unexpected arguments: {', '.join(extra)}")
