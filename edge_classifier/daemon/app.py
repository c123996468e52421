"""The daemon's lifecycle: startup -> main loop -> shutdown.

The main thread owns the lifecycle and does no frame work: it waits on the control queue
for signals (queued by their handlers) and command requests (queued by paho's thread),
reloads on SIGHUP, publishes stats, feeds the systemd watchdog, and notices when the
pipeline has finished (a finite source ended, or ``--max-frames`` reached). Shutdown
tears down in reverse order with a time limit: stop taking frames, finish the frames in
flight, deliver what is queued, say ``offline``, close the models.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import paho.mqtt.client as paho

from edge_classifier import __version__
from edge_classifier.config import Config, load_config
from edge_classifier.config.schema import SourceConfig
from edge_classifier.config.sources import sources_of
from edge_classifier.control.channel import CommandChannel
from edge_classifier.control.commands import CommandHandler
from edge_classifier.control.requests import FLEET_PREFIX, Request
from edge_classifier.daemon import report, sources
from edge_classifier.daemon.modelctl import ModelControl
from edge_classifier.daemon.models import worker_count
from edge_classifier.daemon.pipeline import ModelSet, Outcome, Pipeline
from edge_classifier.daemon.signals import ControlQueue
from edge_classifier.daemon.swap import SwapRequest
from edge_classifier.errors import EdgeClassifierError
from edge_classifier.preprocess.decode import ImageLimits
from edge_classifier.publish.announce import ANNOUNCED_FILE, Announcer
from edge_classifier.publish.bounds import spool_bounds
from edge_classifier.publish.connection import MqttConnection
from edge_classifier.publish.outbox import Message, Outbox
from edge_classifier.publish.payload import encode
from edge_classifier.publish.policy import PublishPolicy
from edge_classifier.publish.publisher import OutboxLike, Publisher, Topics
from edge_classifier.service.systemd import Notifier, WatchdogGate
from edge_classifier.source.base import Source
from edge_classifier.source.capture import EventCallback
from edge_classifier.source.group import CaptureGroup
from edge_classifier.source.registry import open_source

if TYPE_CHECKING:  # imported when [learn] is on: learn/ is not needed to start (READY)
    from edge_classifier.daemon.learning import FramesCollected, Learning

__all__ = ["Daemon"]

log = logging.getLogger(__name__)

STOP_TIMEOUT = 5.0  # SIGTERM to exit, at most
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
        self.capture: CaptureGroup | None = None
        self.pipeline: Pipeline | None = None
        self.publisher: Publisher | None = None
        self.connection: MqttConnection | None = None
        self.web: Any = None  # edge_classifier.web.WebServer while [web] is enabled
        self._announcer: Announcer | None = None  # made by the publish thread when first needed
        self.control = ControlQueue()
        self.commands = CommandHandler(self)
        self.channel = CommandChannel(self.topics.prefix, self.commands, queue=self.control.put,
                                      connection=lambda: self.connection,
                                      max_payload=lambda: self.config.commands.max_payload)
        self.started = time.monotonic()
        self._classified = 0  # frames classified (written by the pipeline's emit, read by the main loop)
        self._status_last = (time.monotonic(), 0)
        self._capture_ready = threading.Event()  # set by _open_capture (main), awaited by the publish thread
        self.stats_last = (time.monotonic(), 0, 0)  # time, frames captured, results published

    @property
    def models(self) -> ModelSet | None:
        """The set classifying now (it changes with swaps and Edge TPU fallbacks)."""
        return self.pipeline.models if self.pipeline is not None else self._models

    # --- lifecycle ----------------------------------------------------------------------

    def run(self) -> int:
        with self.control as control, ExitStack() as stack:
            stack.callback(self.notifier.close)
            self._startup(stack)
            code = self._main_loop(control)
            self.notifier.stopping()
            self._shutdown(control)
            return code

    def _startup(self, stack: ExitStack) -> None:
        config = self.config
        if config.web.enabled:
            from edge_classifier.web import WebServer

            self.web = WebServer(config.web, self)  # password checked, port bound: before the model loads
            stack.callback(self.web.close)
        self.modelctl = ModelControl(config, deliver=self.control.put, event=self._event, reply=self.channel.reply_to)
        stack.callback(self.modelctl.close)
        self._models = self.modelctl.open_initial()
        stack.callback(lambda: self.models.close() if self.models else None)
        info = self._models.info
        log.info("model %s (%s, sha256 %s…) on %s with %d interpreter(s), %s", info.name, info.path,
                 info.sha256[:12], info.accelerator, len(self._models.classifiers), info.runtime)
        self.publisher = self._open_publisher(config)
        stack.callback(self._close_outbox)
        if self._models.fallback:
            self.publisher.event("accelerator_fallback", model=info.name, accelerator=info.accelerator,
                                 reason=self._models.fallback)
        workers = max(worker_count(config.model, "cpu"), worker_count(config.model, "edgetpu"))
        if config.learn.enabled:
            from edge_classifier.daemon.learning import Learning

            self.learning = Learning(config.learn, workers, self.control.put,
                                     limits=ImageLimits(config.source.max_pixels, config.source.max_bytes))
            stack.callback(self.learning.close)
        self.capture = self._open_capture(config)
        self.pipeline = Pipeline(self.capture, self._models, self._emit, max_frames=self.max_frames,
                                 smoothing=config.publish.smoothing, workers=workers,
                                 on_failure=self.modelctl.supervisor.on_failure,
                                 post=self.learning.annotate if self.learning else None)
        self.modelctl.attach(self.pipeline)
        self.pipeline.start()
        if self.web is not None:
            self.web.start()
        self.notifier.status(f"model {info.name} loaded on {info.accelerator}; waiting for the first frame")

    def _open_publisher(self, config: Config) -> Publisher:
        connection = None
        outbox: OutboxLike = Outbox(*spool_bounds(config))
        if config.mqtt.enabled:
            subscriptions: list[str] = []
            if config.commands.enabled:
                subscriptions.append(self.topics.commands)
                if config.commands.fleet:
                    subscriptions.append(f"{FLEET_PREFIX}/cmd/+")
            if config.homeassistant.enabled:
                from edge_classifier.publish import homeassistant

                subscriptions.append(homeassistant.birth_topic(config.homeassistant.discovery_prefix))
            connection = MqttConnection(config.mqtt, status_topic=self.topics.status,
                                        on_message=self.channel.on_message, subscriptions=tuple(subscriptions))
            if config.publish.spool_dir:
                outbox = self._disk_outbox(config)
        publisher = Publisher(
            config.device.id, self.topics, connection=connection, qos=config.mqtt.qos,
            retain=config.publish.retain, stdout=self._stdout, outbox=outbox,
            policy=_policy(config), retained_state=self._retained_state,
        )
        publisher.start()
        if connection is not None:
            connection.start()
        self.connection = connection
        return publisher

    def _disk_outbox(self, config: Config) -> OutboxLike:
        from edge_classifier.publish.spool import DiskOutbox

        try:
            outbox = DiskOutbox(Path(config.publish.spool_dir), *spool_bounds(config),
                                spill_after=config.publish.spool_spill_after)
        except OSError as exc:
            from edge_classifier.errors import ConfigError

            raise ConfigError([f"publish.spool_dir: cannot use {config.publish.spool_dir}: {exc}"]) from exc
        if outbox.recovered:
            log.info("spool: %d undelivered messages recovered from %s", outbox.recovered, config.publish.spool_dir)
        return outbox

    def _close_outbox(self) -> None:
        outbox = self.publisher.outbox if self.publisher else None
        close = getattr(outbox, "close", None)
        if callable(close):
            close()

    def _open_capture(self, config: Config) -> CaptureGroup:
        group = CaptureGroup()
        if self.publisher is not None:
            self.publisher.per_source = sources.several_cameras(config)
        sources.reconcile(group, config, self._open_source)
        self.capture = group
        self._capture_ready.set()
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
            if item == signal.SIGHUP:
                self.reload()
            elif isinstance(item, Request):
                self.channel.answer(item)
            elif isinstance(item, paho.MQTTMessage):
                self._on_birth(item)
            elif self.learning is not None and self.learning.delivered(item):
                self._frames_collected(item)
            elif item is not None and self.modelctl is not None:
                self.modelctl.handle(item)
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
            if self.learning is not None:
                self._learning_tick(now)
            if now >= status_due and self.notifier.enabled:
                self.notifier.status(self._status_line())
                status_due = now + 5.0
            interval = self.config.publish.stats_interval
            if interval and now >= stats_due:
                if stats_due:
                    self._publish_stats()
                stats_due = now + interval

    def _shutdown(self, control: ControlQueue) -> None:
        """Stop within STOP_TIMEOUT: finish in-flight frames, deliver, say offline.

        A second SIGTERM/SIGINT meanwhile forces the exit at once.
        """
        deadline = time.monotonic() + STOP_TIMEOUT - 0.5
        pipeline, publisher = self.pipeline, self.publisher
        if pipeline is not None:
            pipeline.stop()
            pipeline.capture.stop()
            while not pipeline.join(0.05):
                if control.get(0) in (signal.SIGTERM, signal.SIGINT):
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
        if self.pipeline is not None:
            report.count_outcome(self.pipeline.capture.tally, outcome)
        if self.web is not None:
            self.web.observe(outcome)
        if self.modelctl is not None:
            self.modelctl.observe(outcome)
        if outcome.classification is not None:
            # Every classified frame counts for the watchdog, published or not (change mode).
            self._classified += 1
            self.watchdog.frame_done()

    def _status_line(self) -> str:
        models = self.models
        if models is None:
            return "starting"
        info = models.info
        now, classified = time.monotonic(), self._classified
        then, before = self._status_last
        self._status_last = (now, classified)
        fps = (classified - before) / max(1e-6, now - then)
        paused = ", paused" if self.pipeline and self.pipeline.paused else ""
        waiting = self.capture.waiting if self.capture else None
        if waiting is not None:
            name = self.capture.waiting_name if self.capture else "?"
            return f"waiting for camera {name} ({waiting}), model {info.name} on {info.accelerator}{paused}"
        return f"{fps:.1f} fps, model {info.name} on {info.accelerator}, {classified} frames{paused}"

    # --- MQTT: commands, Home Assistant, stats -------------------------------------------

    # --- learned classes (main thread) ----------------------------------------------------

    def _frames_collected(self, item: FramesCollected) -> None:
        assert self.learning is not None
        request = item.request
        if item.error:
            if request is not None:
                self.channel.reply_to("learn", request, {"ok": False, "error": item.error})
            return
        try:
            head = self.learning.change(lambda current: current.with_examples(item.label, item.embeddings))
        except EdgeClassifierError as exc:
            if request is not None:
                self.channel.reply_to("learn", request, {"ok": False, "error": str(exc)})
            return
        self.learned(item.label, len(item.embeddings), head)
        if request is not None:
            self.channel.reply_to("learn", request, {"ok": True, "label": item.label,
                                                     "added": len(item.embeddings), "classes": dict(head.classes())})

    def _learning_tick(self, now: float) -> None:
        from edge_classifier.daemon.learning import COLLECT_TIMEOUT

        assert self.learning is not None
        expired = self.learning.expired(now)
        if expired is not None:
            request = expired.request
            error = (f"only {len(expired.embeddings)} of {expired.wanted} frames came in "
                     f"{COLLECT_TIMEOUT:.0f} s (is the source paused or lost?); nothing was learned")
            if request is not None:
                self.channel.reply_to("learn", request, {"ok": False, "error": error})
        if self.learning.poll(now):
            self._event("classes_reloaded", classes=dict(self.learning.head.classes()))

    def learned(self, label: str, added: int, head: Any) -> None:
        log.info("learned %d examples of %r (%d classes now)", added, label, len(head))
        self._event("class_learned", label=label, added=added, classes=dict(head.classes()))

    def publish_event(self, name: str, **details: Any) -> None:
        self._event(name, **details)

    def _event(self, name: str, **details: Any) -> None:
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

    def _retained_state(self) -> list[Message]:
        """Called by the publish thread after each connect, before `online`, and after a model swap."""
        self._await_source()
        if self._announcer is None:
            self._announcer = Announcer(self.config.homeassistant, device_id=self.config.device.id,
                                        prefix=self.topics.prefix, path=Path(self.config.model.dir) / ANNOUNCED_FILE)
        model = self.models.info.name if self.models else "edge-classifier"
        return self._announcer.messages(model, __version__)

    def _await_source(self) -> None:
        """Publish thread, before `online`: an mqtt source subscribed first (at most 5 s), so
        an image sent once the device says online is never lost (issue 12)."""
        if not any(s.kind == "mqtt" for s in sources_of(self.config)) or \
                not self._capture_ready.wait(STOP_TIMEOUT) or self.capture is None:
            return
        if not self.capture.wait_ready(STOP_TIMEOUT):
            log.warning("saying online before the mqtt source has subscribed (not within %.0f s)", STOP_TIMEOUT)

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
        c = new.classify
        for classifier in self.models.classifiers:
            classifier.reconfigure(c.top_k, c.threshold, c.allow, c.deny)
        if not new.sources:  # one [source]: the config command's source.fps sets it
            self.pipeline.capture.set_fps(new.source.fps)
        if new.publish != self.config.publish:
            self.publisher.set_policy(_policy(new))
            self.pipeline.set_smoothing(new.publish.smoothing)
        self.config = new

    # --- reload -------------------------------------------------------------------------

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
            if self.publisher:
                self.publisher.event("config_rejected", reason=str(exc))
            return str(exc)
        finally:
            self.watchdog.set_idle_ok(bool(self.pipeline and self.pipeline.paused))
            self.notifier.ready(self._status_line())
        log.info("reload: configuration applied")
        return None

    def _apply(self, new: Config) -> None:
        old = self.config
        assert self.pipeline is not None and self.publisher is not None and self.modelctl is not None
        needs_restart = [name for name in ("mqtt", "device", "commands", "homeassistant", "web")
                         if getattr(new, name) != getattr(old, name)]
        for key in ("spool_dir", "spool_max_messages", "spool_max_bytes", "spool_spill_after", "spool_max_seconds",
                    "retain", "stats_interval"):
            if getattr(new.publish, key) != getattr(old.publish, key):
                needs_restart.append(f"publish.{key}")
        if worker_count(new.model, "cpu") > self.pipeline.workers:
            needs_restart.append("model.threads / model.interpreters (more interpreters)")
        if needs_restart:
            raise ConfigChangeNeedsRestart(", ".join(needs_restart))
        model_changed = new.model != old.model
        if model_changed and self.modelctl.swapper.busy:
            raise ConfigChangeNeedsRestart("model (a model swap is under way: reload again when it is done)")
        if sources_of(new) != sources_of(old) and self.capture is not None:
            # Only the sources added, changed or removed restart; the others keep running.
            sources.reconcile(self.capture, new, self._open_source)
            self.publisher.per_source = sources.several_cameras(new)
        self.apply_runtime(new)
        self.modelctl.config = new
        if model_changed:
            # Loaded, checked and switched in the background; model_swapped or model_rejected says how it went.
            self.modelctl.request(SwapRequest("reload", path=Path(new.model.path), config=new))


def _policy(config: Config) -> PublishPolicy:
    p = config.publish
    return PublishPolicy(mode=p.mode, hysteresis=p.hysteresis, min_interval=p.min_interval, heartbeat=p.heartbeat)


class ConfigChangeNeedsRestart(EdgeClassifierError):
    """A reload changed settings that only a restart applies."""

    exit_code = 78

    def __init__(self, what: str) -> None:
        super().__init__(f"changes to {what} need a restart (systemctl restart edge-classifier)")
