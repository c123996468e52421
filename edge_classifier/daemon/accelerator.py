"""The Edge TPU that fails in the field: fall back to the CPU twin at once, retry the TPU
with capped backoff, move back when it is healthy.

``on_failure`` runs in the pipeline worker whose invoke failed (AcceleratorFailed: the TPU
worker process died, raised or hung). Under a lock, the first worker to see the failure
opens the CPU twin in process (tens of milliseconds) and swaps it in; the frame that failed
is classified again on it, so none is lost. Thread ``accelerator-recovery`` then tries the
TPU again, doubling its wait from ``model.recover_initial`` to ``model.recover_max``; a
TPU worker that loads and answers a smoke inference is handed to the main loop
(``AcceleratorBack`` on the control queue), which swaps it back in.

Every set in use falls back and recovers on its own (the daemon's ``[model]`` and each model a
source names, by the set's ``key``): one recovery thread per set that lost its TPU.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from edge_classifier.config.schema import Config
from edge_classifier.daemon.models import EngineSpec, ModelPlan, fallback_spec, open_engines, open_model_set
from edge_classifier.daemon.pipeline import ModelSet, Pipeline
from edge_classifier.engine.edgetpu import library_problem
from edge_classifier.errors import EdgeClassifierError

__all__ = ["AcceleratorBack", "AcceleratorSupervisor"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class AcceleratorBack:
    models: ModelSet
    attempts: int
    downtime_s: float


class AcceleratorSupervisor:
    def __init__(self, config: Callable[[], Config], pipeline: Callable[[], Pipeline],
                 event: Callable[..., None], deliver: Callable[[Any], None]) -> None:
        self._config = config
        self._pipeline = pipeline
        self._event = event
        self._deliver = deliver  # crossing: puts AcceleratorBack on the daemon's control queue
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._recovery: dict[str, threading.Thread] = {}  # by set key
        self.fallbacks = 0
        self.state = "ok"  # "ok" | "fallback" (CPU twin running) | "down" (no twin: waiting for the TPU)
        self.last_fallback_ms: float | None = None

    def on_failure(self, models: ModelSet, error: Exception) -> ModelSet | None:
        """A worker's engine failed: the set to classify with from now on (None: there is none)."""
        started = time.perf_counter()
        with self._lock:
            pipeline = self._pipeline()
            current = pipeline.sets.get(models.key)
            if current is not models:
                return current  # another worker already replaced the failed set (or it is gone)
            plan, spec = models.plan, models.spec
            reason = str(error)
            backup = fallback_spec(plan, spec) if plan is not None and spec is not None else None
            if backup is None:
                # Nothing to fall back to (no CPU twin, or the CPU set itself failed).
                if self.state != "down":
                    self.state = "down"
                    log.error("the Edge TPU failed and %s has no CPU twin: pausing until it is back (%s)",
                              plan.requested.name if plan else "the model", reason)
                    self._event("accelerator_lost", reason=reason, fallback=None)
                    pipeline.pause()
                    if plan is not None and spec is not None:
                        self.start_recovery(plan, spec, models.key)
                return None
            config = self._config()
            try:
                cpu = open_model_set(config.model, config.classify, plan=plan, spec=backup, key=models.key)
            except EdgeClassifierError as exc:
                log.error("the Edge TPU failed and its CPU twin cannot be opened: %s", exc)
                return None
            pipeline.swap(cpu, models.key).retire()
            self.fallbacks += 1
            self.state = "fallback"
            self.last_fallback_ms = round((time.perf_counter() - started) * 1000.0, 1)
            log.warning("Edge TPU failed (%s): %s now runs on the CPU (switched in %.0f ms)",
                        reason, cpu.info.path.name, self.last_fallback_ms)
            self._event("accelerator_fallback", model=cpu.info.name, accelerator="cpu", reason=reason,
                        fallback_ms=self.last_fallback_ms, fallbacks=self.fallbacks)
            self.start_recovery(plan, spec, models.key)
            return cpu

    def recovered(self, back: AcceleratorBack) -> None:
        """Main thread: swap the healthy TPU set back in."""
        pipeline = self._pipeline()
        if pipeline.sets.get(back.models.key) is None:
            back.models.close()  # its sources were reconfigured away meanwhile (SIGHUP)
            return
        pipeline.swap(back.models, back.models.key).retire()
        if self.state == "down":
            pipeline.resume()
        self.state = "ok"
        log.warning("Edge TPU back after %.1f s: %s runs on it again", back.downtime_s, back.models.info.path.name)
        self._event("accelerator_back", model=back.models.info.name, accelerator=back.models.info.accelerator,
                    attempts=back.attempts, downtime_s=round(back.downtime_s, 1))

    def close(self) -> None:
        self._stop.set()
        for thread in self._recovery.values():
            thread.join(10)

    def start_recovery(self, plan: ModelPlan, spec: EngineSpec, key: str = "") -> None:
        """Keep trying ``spec`` (the failed engines of set ``key``) in thread ``accelerator-recovery``."""
        running = self._recovery.get(key)
        if running is not None and running.is_alive():
            return
        name = f"accelerator-recovery-{key}" if key else "accelerator-recovery"
        thread = threading.Thread(target=self._recover, args=(plan, spec, key), name=name, daemon=True)
        self._recovery = {**self._recovery, key: thread}
        thread.start()

    def _recover(self, plan: ModelPlan, spec: EngineSpec, key: str) -> None:
        config = self._config()
        wait = config.model.recover_initial
        started = time.monotonic()
        attempts = 0
        while not self._stop.wait(wait):
            attempts += 1
            try:
                problem = library_problem() if spec.accelerator == "edgetpu" else None
                if problem:
                    raise _NotYet(problem)
                engines = open_engines(spec)
                try:
                    for engine in engines:
                        engine.invoke(np.zeros(engine.info.input.shape, engine.info.input.dtype))
                    models = open_model_set(config.model, config.classify, plan=plan, spec=spec, engines=engines,
                                            key=key)
                except BaseException:
                    for engine in engines:
                        engine.close()
                    raise
            except EdgeClassifierError as exc:
                log.info("Edge TPU still unavailable (attempt %d, next in %.0f s): %s", attempts,
                         min(wait * 2, config.model.recover_max), exc)
                wait = min(wait * 2, config.model.recover_max)
                continue
            self._deliver(AcceleratorBack(models, attempts, time.monotonic() - started))
            return


class _NotYet(EdgeClassifierError):
    pass
