"""The daemon's lifecycle: startup -> main loop -> shutdown.

The main thread owns the lifecycle and does no frame work: it waits for signals (queued
by their handlers), reloads on SIGHUP, feeds the systemd watchdog, and notices when the
pipeline has finished (a finite source ended, or ``--max-frames`` reached). Shutdown
tears down in reverse order with a time limit: stop taking frames, finish the frames in
flight, deliver what is queued, say ``offline``, close the models.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TextIO

from edge_classifier.config import Config, load_config
from edge_classifier.daemon.models import open_model_set
from edge_classifier.daemon.pipeline import ModelSet, Outcome, Pipeline
from edge_classifier.daemon.signals import SignalQueue
from edge_classifier.errors import EdgeClassifierError
from edge_classifier.publish.connection import MqttConnection
from edge_classifier.publish.publisher import Publisher, Topics
from edge_classifier.service.systemd import Notifier, WatchdogGate
from edge_classifier.source.capture import Capture
from edge_classifier.source.registry import open_source

__all__ = ["Daemon"]

log = logging.getLogger(__name__)

STOP_TIMEOUT = 5.0  # SIGTERM to exit, at most
_TICK = 0.25  # main loop period: watchdog, status, pipeline end


class Daemon:
    """``edge-classifier run``. Build it, then ``run()`` returns the exit code."""

    def __init__(
        self,
        config: Config,
        config_path: Path | None,
        *,
        stdout: TextIO | None = None,
        max_frames: int | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.max_frames = max_frames
        self._stdout = stdout
        self.notifier = notifier or Notifier.from_env()
        self.watchdog = WatchdogGate(self.notifier)
        self.models: ModelSet | None = None
        self.capture: Capture | None = None
        self.pipeline: Pipeline | None = None
        self.publisher: Publisher | None = None
        self.connection: MqttConnection | None = None
        self.started = time.monotonic()

    # --- lifecycle ----------------------------------------------------------------------

    def run(self) -> int:
        with SignalQueue() as signals, ExitStack() as stack:
            stack.callback(self.notifier.close)
            self._startup(stack)
            code = self._main_loop(signals)
            self.notifier.stopping()
            self._shutdown(signals)
            return code

    def _startup(self, stack: ExitStack) -> None:
        config = self.config
        self.models = open_model_set(config.model, config.classify)
        stack.callback(lambda: self.models.close() if self.models else None)
        info = self.models.info
        log.info("model %s (%s, sha256 %s…) on %s with %d interpreter(s), %s", info.name, info.path,
                 info.sha256[:12], info.accelerator, len(self.models.classifiers), info.runtime)
        self.publisher = self._open_publisher(config)
        if info.fallback:
            self.publisher.event("accelerator_fallback", model=info.name, accelerator=info.accelerator,
                                 reason=info.fallback)
        self.capture = self._open_capture(config)
        self.pipeline = Pipeline(self.capture, self.models, self._emit, max_frames=self.max_frames).start()
        self.notifier.ready(self._status_line())

    def _open_publisher(self, config: Config) -> Publisher:
        topics = Topics(config.mqtt.topic_prefix)
        connection = None
        if config.mqtt.enabled:
            connection = MqttConnection(config.mqtt, status_topic=topics.status)
        publisher = Publisher(config.device.id, topics, connection=connection, qos=config.mqtt.qos,
                              stdout=self._stdout, on_published=self._published)
        publisher.start()
        if connection is not None:
            connection.start()
        self.connection = connection
        return publisher

    def _open_capture(self, config: Config) -> Capture:
        assert self.models is not None
        shape = self.models.info.input.shape
        source = open_source(config.source, config.mqtt, input_size=(shape[2], shape[1]))
        publisher = self.publisher
        assert publisher is not None

        def on_event(name: str, details: dict[str, Any]) -> None:
            # Crossing: called from the capture thread; the publisher only enqueues.
            publisher.event(name, **details)

        capture = Capture.from_config(source, config.source, on_event=on_event)
        return capture.start()

    def _main_loop(self, signals: SignalQueue) -> int:
        assert self.pipeline is not None
        status_due = 0.0
        while True:
            signum = signals.get(_TICK)
            if signum in (signal.SIGTERM, signal.SIGINT):
                log.info("received %s: stopping", signal.Signals(signum).name)
                return 0
            if signum == signal.SIGHUP:
                self.reload()
            if self.pipeline.finished.is_set():
                capture = self.pipeline.capture
                if capture.error is not None:
                    log.error("source failed for good: %s", capture.error)
                    return capture.error.exit_code
                log.info("all frames done (%d)", self.pipeline.taken)
                return 0
            self.watchdog.tick()
            now = time.monotonic()
            if now >= status_due and self.notifier.enabled:
                self.notifier.status(self._status_line())
                status_due = now + 5.0

    def _shutdown(self, signals: SignalQueue) -> None:
        """Stop within STOP_TIMEOUT: finish in-flight frames, deliver, say offline.

        A second SIGTERM/SIGINT meanwhile forces the exit at once.
        """
        deadline = time.monotonic() + STOP_TIMEOUT - 0.5
        pipeline, publisher = self.pipeline, self.publisher
        if pipeline is not None:
            pipeline.stop()
            pipeline.capture.stop()
            while not pipeline.join(0.05):
                if signals.get(0) in (signal.SIGTERM, signal.SIGINT):
                    self._force_exit()
                if time.monotonic() > deadline - 2.0:
                    log.warning("shutdown: frames still in flight after the time limit")
                    break
            pipeline.capture.close()
        if publisher is not None:
            publisher.close(timeout=max(0.1, deadline - time.monotonic() - 1.0))
        if self.connection is not None:
            self.connection.close(timeout=max(0.1, deadline - time.monotonic()))

    def _force_exit(self) -> None:
        log.warning("second signal: exiting now")
        logging.shutdown()
        os._exit(1)

    # --- frames -------------------------------------------------------------------------

    def _emit(self, outcome: Outcome) -> None:
        # Crossing: called from a pipeline worker, in frame order; the publisher enqueues.
        assert self.publisher is not None
        self.publisher.submit(outcome)

    def _published(self, outcome: Outcome) -> None:
        self.watchdog.frame_done()

    def _status_line(self) -> str:
        models = self.models
        if models is None:
            return "starting"
        info = models.info
        results = self.publisher.results if self.publisher else 0
        elapsed = max(1e-9, time.monotonic() - self.started)
        return f"{info.name} on {info.accelerator}, {results} results, {results / elapsed:.1f}/s"

    # --- reload -------------------------------------------------------------------------

    def reload(self) -> bool:
        """SIGHUP: load the config again and apply what changed; a bad config changes nothing."""
        self.notifier.reloading()
        try:
            try:
                config, _ = load_config(str(self.config_path) if self.config_path else None)
            except EdgeClassifierError as exc:
                log.error("reload: keeping the running configuration: %s", exc)
                if self.publisher:
                    self.publisher.event("config_rejected", reason=str(exc))
                return False
            try:
                self._apply(config)
            except EdgeClassifierError as exc:
                log.error("reload: keeping the running configuration: %s", exc)
                if self.publisher:
                    self.publisher.event("config_rejected", reason=str(exc))
                return False
            log.info("reload: configuration applied")
            return True
        finally:
            self.notifier.ready(self._status_line())

    def _apply(self, new: Config) -> None:
        old = self.config
        assert self.pipeline is not None and self.publisher is not None
        if new.model != old.model or new.classify != old.classify:
            models = open_model_set(new.model, new.classify)  # fails before anything changes
            if len(models.classifiers) != len(self.pipeline.models.classifiers):
                models.close()
                raise ConfigChangeNeedsRestart("model.threads / model.interpreters")
            self.pipeline.swap(models).retire()
            self.models = models
            info = models.info
            self.publisher.event("model_swapped", model=info.name, sha256=info.sha256, accelerator=info.accelerator)
        if new.mqtt != old.mqtt or new.device != old.device or new.publish != old.publish:
            raise ConfigChangeNeedsRestart("[mqtt], [device] and [publish]")
        if new.source != old.source:
            old_capture = self.pipeline.replace_capture(self._open_capture(new))
            old_capture.close()
        self.config = new


class ConfigChangeNeedsRestart(EdgeClassifierError):
    """A reload changed settings that only a restart applies."""

    exit_code = 78

    def __init__(self, what: str) -> None:
        super().__init__(f"changes to {what} need a restart (systemctl restart edge-classifier)")


