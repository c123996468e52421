"""The daemon's lifecycle: startup -> main loop -> shutdown.

The main thread owns the lifecycle and does no frame work: it waits on the control queue
for signals (queued by their handlers) and command requests (queued by paho's thread),
reloads on SIGHUP, publishes stats, feeds the systemd watchdog, and notices when the
pipeline has finished (a finite source ended, or ``--max-frames`` reached). Shutdown
tears down in reverse order with a time limit: stop taking frames, finish the frames in
flight, deliver what is queued, say ``offline``, close the models.

The parts live beside it, one job each: ``wiring`` (the publisher and MQTT connection),
``emit`` (where a finished frame goes, the status line), ``online`` (what is said before
``online``), ``teaching`` (answering ``learn``), ``reconfigure`` (what a reload changes),
``sources`` (which sources run), ``shutdown`` (the teardown). Commands and reports see the daemon only through
``control.device.Device``.
"""

from __future__ import annotations

import logging
import signal
import time
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import paho.mqtt.client as paho

from edge_classifier.config import Config, load_config
from edge_classifier.config.schema import SourceConfig
from edge_classifier.config.sources import sources_of
from edge_classifier.control.channel import CommandChannel
from edge_classifier.control.commands import CommandHandler
from edge_classifier.control.requests import Request
from edge_classifier.daemon import reconfigure, report, sources, wiring
from edge_classifier.daemon.emit import Emitter, StatusLine
from edge_classifier.daemon.modelctl import ModelControl
from edge_classifier.daemon.models import worker_count
from edge_classifier.daemon.online import BeforeOnline
from edge_classifier.daemon.pipeline import ModelSet, Pipeline
from edge_classifier.daemon.shutdown import shut_down
from edge_classifier.daemon.signals import ControlQueue
from edge_classifier.daemon.swap import SwapRequest
from edge_classifier.errors import EdgeClassifierError
from edge_classifier.preprocess.decode import ImageLimits
from edge_classifier.publish.connection import MqttConnection
from edge_classifier.publish.payload import encode
from edge_classifier.publish.publisher import Publisher, Topics
from edge_classifier.service.systemd import Notifier
from edge_classifier.service.watchdog import WatchdogGate
from edge_classifier.source.base import Source
from edge_classifier.source.capture import EventCallback
from edge_classifier.source.group import CaptureGroup
from edge_classifier.source.registry import open_source

if TYPE_CHECKING:  # imported when [learn] is on: learn/ is not needed to start (READY)
    from edge_classifier.daemon.learning import Learning
    from edge_classifier.daemon.teaching import Teaching

__all__ = ["Daemon"]

log = logging.getLogger(__name__)

_TICK = 0.25  # main loop period: watchdog, stats, pipeline end
READY_MQTT_WAIT = 10.0  # READY waits this long for the broker at most


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
        # The watchdog sees the pipeline's intake: waiting for a camera is healthy, a hang is not.
        self.watchdog = WatchdogGate(self.notifier,
                                     intake=lambda: self.capture.intake if self.capture else None)
        self.topics = Topics(config.mqtt.topic_prefix)
        self._models: ModelSet | None = None  # until the pipeline runs; then pipeline.models
        self.modelctl: ModelControl | None = None
        self.learning: Learning | None = None
        self.teaching: Teaching | None = None
        self.capture: CaptureGroup | None = None
        self.pipeline: Pipeline | None = None
        self.publisher: Publisher | None = None
        self.connection: MqttConnection | None = None
        self.emitter: Emitter | None = None
        self.web: Any = None  # edge_classifier.web.WebServer while [web] is enabled
        self.control = ControlQueue()
        self.commands = CommandHandler(self)
        self.channel = CommandChannel(self.topics.prefix, self.commands, queue=self.control.put,
                                      connection=lambda: self.connection,
                                      max_payload=lambda: self.config.commands.max_payload)
        self.started = time.monotonic()
        self._status = StatusLine()
        self._before_online = BeforeOnline(lambda: self.config, self.topics, lambda: self.models)
        self.stats_last = (time.monotonic(), 0, 0)  # time, frames captured, results published

    @property
    def models(self) -> ModelSet | None:
        """The set classifying now (it changes with swaps and Edge TPU fallbacks)."""
        return self.pipeline.models if self.pipeline is not None else self._models

    @property
    def running(self) -> bool:
        return self.pipeline is not None

    @property
    def paused(self) -> bool:
        return bool(self.pipeline and self.pipeline.paused)

    def submit(self, request: Request) -> None:
        # Crossing: from any thread (the web view's) to the main loop, through the control queue.
        self.control.put(request)

    # --- lifecycle ----------------------------------------------------------------------

    def run(self) -> int:
        with self.control as control, ExitStack() as stack:
            stack.callback(self.notifier.close)
            self._startup(stack)
            code = self._main_loop(control)
            self.notifier.stopping()
            shut_down(control, self.pipeline, self.publisher, self.connection)
            return code

    def _startup(self, stack: ExitStack) -> None:
        config = self.config
        if config.web.enabled:
            from edge_classifier.web import WebServer

            self.web = WebServer(config.web, self)  # password checked, port bound: before the model loads
            stack.callback(self.web.close)
        self.modelctl = ModelControl(config, deliver=self.control.put, event=self.publish_event,
                                     reply=self.channel.reply_to)
        stack.callback(self.modelctl.close)
        self._models = self.modelctl.open_initial()
        stack.callback(lambda: self.models.close() if self.models else None)
        info = self._models.info
        log.info("model %s (%s, sha256 %s…) on %s with %d interpreter(s), %s", info.name, info.path,
                 info.sha256[:12], info.accelerator, len(self._models.classifiers), info.runtime)
        self.publisher, self.connection = wiring.open_publisher(config, self.topics, self.channel, stdout=self._stdout,
                                                                retained_state=self._before_online)
        stack.callback(lambda: wiring.close_outbox(self.publisher))
        if self._models.fallback:
            self.publisher.event("accelerator_fallback", model=info.name, accelerator=info.accelerator,
                                 reason=self._models.fallback)
        workers = max(worker_count(config.model, "cpu"), worker_count(config.model, "edgetpu"))
        if config.learn.enabled:
            from edge_classifier.daemon.learning import Learning
            from edge_classifier.daemon.teaching import Teaching

            self.learning = Learning(config.learn, workers, self.control.put,
                                     limits=ImageLimits(config.source.max_pixels, config.source.max_bytes),
                                     model=config.model)
            stack.callback(self.learning.close)
            self.teaching = Teaching(self.learning, self.channel.reply_to, self.publish_event)
        sets = self.modelctl.open_sets(self._models)  # [model] and the models [[sources]] name
        stack.callback(lambda: (self.pipeline.sets if self.pipeline else sets).close())
        self.capture = self._open_capture(config)
        self.emitter = Emitter(self.publisher, self.capture.tally, self.watchdog, web=self.web,
                               modelctl=self.modelctl)
        self.pipeline = Pipeline(self.capture, sets, self.emitter, max_frames=self.max_frames,
                                 smoothing=config.publish.smoothing, workers=workers,
                                 on_failure=self.modelctl.supervisor.on_failure,
                                 post=self.learning.annotate if self.learning else None)
        self.modelctl.attach(self.pipeline)
        self.pipeline.start()
        if self.web is not None:
            self.web.start()
        self.notifier.status(f"model {info.name} loaded on {info.accelerator}; waiting for the first frame")

    def _open_capture(self, config: Config) -> CaptureGroup:
        group = CaptureGroup()
        if self.publisher is not None:
            self.publisher.per_source = sources.several_cameras(config)
        sources.reconcile(group, config, self._open_source)
        self.capture = group
        self._before_online.sources_opened(group)
        return group

    def _open_source(self, config: Config, source_config: SourceConfig) -> tuple[Source, EventCallback]:
        assert self.models is not None
        shape = self.models.info.input.shape
        # The Pi camera's model-sized lores stream is a whole-frame stretch: only for `stretch`.
        input_size = (shape[2], shape[1]) if config.model.resize == "stretch" else None
        source = open_source(source_config, config.mqtt, input_size=input_size)
        publisher = self.publisher
        assert publisher is not None

        def on_event(name: str, details: dict[str, Any]) -> None:
            # Crossing: called from the capture thread; the publisher only enqueues.
            publisher.event(name, **details)

        return source, on_event

    def _main_loop(self, control: ControlQueue) -> int:
        assert self.pipeline is not None
        status_due = stats_due = 0.0
        ready = False
        while True:
            connection = self.connection
            if not ready and (connection is None or connection.connected.is_set()
                              or time.monotonic() - self.started > READY_MQTT_WAIT):
                # READY=1 once the model is loaded and MQTT is connected (or has had its
                # chance), camera or not: a missing camera or broker is a state to report
                # (STATUS, events), not a failed start for systemd to retry.
                ready = True
                self.notifier.ready(self._status_line())
            item = control.get(_TICK)
            if item in (signal.SIGTERM, signal.SIGINT):
                log.info("received %s: stopping", signal.Signals(item).name)
                return 0
            self._dispatch(item)
            if self.pipeline.finished.is_set():
                capture = self.pipeline.capture
                if capture.error is not None:
                    log.error("source failed for good: %s", capture.error)
                    return capture.error.exit_code
                log.info("all frames done (%d)", self.pipeline.taken)
                return 0
            self.watchdog.tick()
            now = time.monotonic()
            if self.modelctl is not None:
                self.modelctl.poll_store(now)
            if self.teaching is not None:
                self.teaching.tick(now)
            if now >= status_due and self.notifier.enabled:
                self.notifier.status(self._status_line())
                status_due = now + 5.0
            interval = self.config.publish.stats_interval
            if interval and now >= stats_due:
                if stats_due:
                    self._publish_stats()
                stats_due = now + interval

    def _dispatch(self, item: object) -> None:
        """One item off the control queue (not a stop signal)."""
        if item == signal.SIGHUP:
            self.reload()
        elif isinstance(item, Request):
            self.channel.answer(item)
        elif isinstance(item, paho.MQTTMessage):
            self._on_birth(item)
        elif self.learning is not None and self.learning.delivered(item):
            assert self.teaching is not None
            self.teaching.collected(item)
        elif item is not None and self.modelctl is not None:
            self.modelctl.handle(item)

    def _status_line(self) -> str:
        classified = self.emitter.classified if self.emitter else 0
        return self._status(self.models, classified, paused=self.paused, capture=self.capture)

    # --- MQTT: Home Assistant, stats, events ----------------------------------------------

    def publish_event(self, name: str, **details: Any) -> None:
        if self.publisher is not None:
            self.publisher.event(name, **details)

    def _on_birth(self, message: paho.MQTTMessage) -> None:
        from edge_classifier.publish import homeassistant

        ha = self.config.homeassistant
        if ha.enabled and message.topic == homeassistant.birth_topic(ha.discovery_prefix) \
                and homeassistant.is_birth(bytes(message.payload)) and self.publisher:
            log.info("Home Assistant is online: publishing discovery, the last result and stats again")
            self.publisher.republish_state()
            self._publish_stats()

    def _publish_stats(self) -> None:
        stats = report.stats(self)
        if self.connection is not None and self.connection.connected.is_set():
            self.connection.publish(self.topics.stats, encode(stats), qos=0)

    # --- what commands call (main thread) ------------------------------------------------

    def set_paused(self, paused: bool) -> None:
        assert self.pipeline is not None
        if paused:
            self.pipeline.pause()
        else:
            self.pipeline.resume()
        # A paused daemon is healthy without frames: keep the systemd watchdog fed.
        self.watchdog.set_idle_ok(paused)
        log.info("%s", "paused" if paused else "resumed")

    def apply_runtime(self, new: Config) -> None:
        """Apply changed runtime settings (already validated) in place."""
        assert self.pipeline is not None and self.publisher is not None and self.models is not None
        reconfigure.apply_runtime(self.config, new, self.pipeline, self.publisher)
        self.config = new

    def reload(self) -> str | None:
        """SIGHUP or the reload command: load the config again and apply what changed.

        Returns None when applied, else why not; a bad config changes nothing.
        """
        self.notifier.reloading()
        self.watchdog.set_idle_ok(True)
        try:
            config, _ = load_config(str(self.config_path) if self.config_path else None)
            self._apply(config)
        except EdgeClassifierError as exc:
            log.error("reload: keeping the running configuration: %s", exc)
            self.publish_event("config_rejected", reason=str(exc))
            return str(exc)
        finally:
            self.watchdog.set_idle_ok(self.paused)
            self.notifier.ready(self._status_line())
        log.info("reload: configuration applied")
        return None

    def _apply(self, new: Config) -> None:
        old = self.config
        assert self.pipeline is not None and self.publisher is not None and self.modelctl is not None
        reconfigure.check_restart(old, new, workers=self.pipeline.workers, swapping=self.modelctl.swapper.busy)
        self.modelctl.reroute(old, new)  # sources whose model changed (daemon/sourcemodels.py)
        if sources_of(new) != sources_of(old) and self.capture is not None:
            # Only the sources added, changed or removed restart; the others keep running.
            sources.reconcile(self.capture, new, self._open_source)
            self.publisher.per_source = sources.several_cameras(new)
        self.apply_runtime(new)
        if new.homeassistant.enabled and sources_of(new) != sources_of(old):
            self.publisher.republish_state()  # Home Assistant's entities per camera follow the sources
        self.modelctl.config = new
        if new.model != old.model:
            # Loaded, checked and switched in the background; model_swapped or model_rejected says how it went.
            self.modelctl.request(SwapRequest("reload", path=Path(new.model.path), config=new))
