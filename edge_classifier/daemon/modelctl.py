"""The daemon's models over time: the first one (remembered across restarts), hot swaps
(``model`` command, new files in the store, reloads), and the Edge TPU's fallback and
recovery. Lives on the main thread; the slow work happens in ``Swapper`` (model-loader)
and ``AcceleratorSupervisor`` (accelerator-recovery), which report through the control queue.

A swap: the ready set is switched in between two frames; the old set stays loaded until the
first result of the new one. That result confirms the swap (state saved, ``model_swapped``
event and the reply, with timings and the gap between the last old and first new result);
a failure instead puts the old set back (``model_rejected``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_classifier.config.schema import Config
from edge_classifier.control.requests import Request
from edge_classifier.daemon.accelerator import AcceleratorBack, AcceleratorSupervisor
from edge_classifier.daemon.models import open_model_set, plan_model, wants_embedding
from edge_classifier.daemon.pipeline import ModelSet, Outcome, Pipeline
from edge_classifier.daemon.swap import Swapper, SwapReady, SwapRejected, SwapRequest
from edge_classifier.engine.model import ModelFile
from edge_classifier.errors import EdgeClassifierError
from edge_classifier.store.fetch import quarantine_dir
from edge_classifier.store.files import sweep
from edge_classifier.store.signing import check_signature
from edge_classifier.store.state import StateFile, state_path

__all__ = ["ModelControl", "SwapOutcome"]

log = logging.getLogger(__name__)

Reply = Callable[[str, Request, dict[str, Any]], None]


@dataclasses.dataclass(frozen=True, slots=True)
class SwapOutcome:
    """The first result of a new set (posted by the pipeline's emit)."""

    ok: bool
    error: str | None
    at: float  # monotonic, when it was emitted


@dataclasses.dataclass(slots=True)
class _Pending:
    ready: SwapReady
    old: ModelSet
    switched: float
    last_old: float | None = None  # when the last result of the old set was emitted
    dropped_before: int = 0
    confirmed: bool = False  # the first result of the new set was posted


class ModelControl:
    def __init__(self, config: Config, *, deliver: Callable[[Any], None], event: Callable[..., None],
                 reply: Reply) -> None:
        self.config = config
        self._deliver = deliver
        self._event = event
        self._reply = reply
        self.pipeline: Pipeline | None = None
        self.swapper = Swapper(lambda: self.config, deliver, self.in_use)
        self.supervisor = AcceleratorSupervisor(lambda: self.config, lambda: self._pipeline(), event, deliver)
        self.state = StateFile(state_path(config.model.dir))
        self._sweep()
        self._pending: _Pending | None = None
        self._last_emit: float | None = None
        self._store_seen: dict[str, tuple[int, int]] | None = None
        self._store_candidates: dict[str, tuple[int, int]] = {}
        self._store_checked = 0.0
        self.swaps = 0

    def in_use(self) -> set[Path]:
        """Files a download must never replace: the running model and its twin, the model
        being switched in, the learning extractor. (Called in model-loader: reads attributes.)"""
        files = {Path(self.config.learn.extractor)}
        for models in (self.pipeline.models if self.pipeline else None,
                       self._pending.ready.models if self._pending else None):
            if models is not None:
                files |= {models.info.path, models.info.requested}
                if models.plan is not None:
                    files |= {spec.path for spec in (models.plan.cpu, models.plan.tpu) if spec is not None}
        return files

    def _sweep(self) -> None:
        """At start: remove the temporary files writers that died left (downloads, the
        learned head's and the state file's replacements)."""
        model = self.config.model
        quarantine = quarantine_dir(Path(model.dir), model.quarantine_dir)
        for folder in sorted({Path(model.dir), Path(self.config.learn.head).parent} - {quarantine}):
            sweep(folder)
        sweep(quarantine, stale_after=3600.0)  # a download is moved out within seconds of its end

    def _pipeline(self) -> Pipeline:
        assert self.pipeline is not None
        return self.pipeline

    # --- start ----------------------------------------------------------------------------

    def open_initial(self) -> ModelSet:
        """The configured model, or the one last swapped in (if the configuration still names
        the same model.path as when it was, and the file is unchanged)."""
        model = self.config.model
        path: str | Path = model.path
        saved = self.state.load().get("model")
        if isinstance(saved, dict) and saved.get("config_path") == model.path and saved.get("path") != model.path:
            candidate = Path(str(saved.get("path")))
            try:
                if candidate.is_file() and ModelFile.inspect(candidate).sha256 == saved.get("sha256"):
                    path = candidate
                    log.info("model %s was swapped in last time: using it (the state file %s says so)",
                             candidate.name, self.state.path)
                else:
                    log.warning("the model swapped in last time (%s) is gone or changed: using model.path", candidate)
            except EdgeClassifierError as exc:
                log.warning("the model swapped in last time cannot be used (%s): using model.path", exc)
        # Learned classes from the model: its engines give the embedding with the scores.
        plan = plan_model(model, path, embedding=wants_embedding(self.config))
        check_signature(plan.requested, model.trusted_keys)  # with keys pinned, not even the start is unsigned
        return open_model_set(model, self.config.classify, plan=plan)

    def attach(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        if self.config.model.watch:
            self._store_seen = self._scan_store()  # what is there at start is not new
        models = pipeline.models
        if models.fallback and models.plan is not None and models.plan.tpu is not None:
            # The TPU did not load at start: keep trying it, as after a failure.
            self.supervisor.start_recovery(models.plan, models.plan.tpu)

    # --- requests ---------------------------------------------------------------------------

    def request(self, request: SwapRequest) -> str | None:
        """Start a swap; returns why not when it cannot start (one at a time)."""
        if self.swapper.busy or self._pending is not None:
            return "a model swap is already under way"
        self.swapper.submit(request)
        log.info("model swap requested (%s): %s", request.trigger,
                 request.name or request.url or request.path)
        return None

    def handle(self, item: object) -> bool:
        """Main loop: act on an item from the control queue; False when it is not ours."""
        if isinstance(item, SwapReady):
            self._switch(item)
        elif isinstance(item, SwapRejected):
            self._rejected(item.request, item.reason, item.timings)
            self.swapper.done()
        elif isinstance(item, SwapOutcome):
            self._confirm(item)
        elif isinstance(item, AcceleratorBack):
            self.supervisor.recovered(item)
        else:
            return False
        return True

    def observe(self, outcome: Outcome) -> None:
        """Every outcome, in frame order (a pipeline worker's thread): the first outcome of a
        switched-in set is posted to the main loop, which confirms or rolls back the swap."""
        now = time.monotonic()
        pending = self._pending
        if pending is not None and not pending.confirmed:
            if outcome.classifier is not None and outcome.classifier in pending.ready.models.classifiers:
                pending.confirmed = True
                # Crossing: worker thread -> main loop, through the control queue.
                self._deliver(SwapOutcome(outcome.classification is not None, outcome.error, now))
            else:
                pending.last_old = now
        self._last_emit = now

    # --- the main loop's side ---------------------------------------------------------------

    def _switch(self, ready: SwapReady) -> None:
        pipeline = self._pipeline()
        # Pending before the switch: the new set's first result may be emitted at once.
        self._pending = _Pending(ready, pipeline.models, time.monotonic(), last_old=self._last_emit,
                                 dropped_before=pipeline.capture.dropped)
        pipeline.swap(ready.models)
        if pipeline.paused:
            # No frame will come to confirm it: the smoke inference in model-loader stands
            # for the first result, so the command gets its reply and later swaps are free.
            log.info("model %s switched in while paused: confirmed by its smoke inference", ready.models.info.path.name)
            self._pending.confirmed = True
            self._deliver(SwapOutcome(True, None, time.monotonic()))
            return
        log.info("model %s switched in; waiting for its first result", ready.models.info.path.name)

    def _confirm(self, result: SwapOutcome) -> None:
        pending, self._pending = self._pending, None
        self.swapper.done()
        if pending is None:
            return
        new, old, request = pending.ready.models, pending.old, pending.ready.request
        timings = dict(pending.ready.timings)
        timings["switch_to_first_result_ms"] = round((result.at - pending.switched) * 1000.0, 1)
        if pending.last_old is not None:
            timings["gap_ms"] = round(max(0.0, result.at - pending.last_old) * 1000.0, 1)
        dropped = self._pipeline().capture.dropped - pending.dropped_before
        if not result.ok:
            self._pipeline().swap(old)
            new.retire()
            self._rejected(request, f"the new model failed on live frames: {result.error}", timings)
            return
        old.retire()
        self.swaps += 1
        info = new.info
        self.state.save({"model": {"path": str(info.requested), "sha256": ModelFile.inspect(info.requested).sha256,
                                   "config_path": self.config.model.path}})
        details = {"model": info.name, "path": str(info.requested), "sha256": info.sha256,
                   "accelerator": info.accelerator, "trigger": request.trigger, "timings_ms": timings,
                   "dropped_frames": dropped}
        log.info("model swapped to %s (%s): %s", info.name, request.trigger, timings)
        self._event("model_swapped", **details)
        if request.request is not None:
            self._reply(request.command, request.request, {"ok": True, **details})

    def _rejected(self, request: SwapRequest, reason: str, timings: dict[str, float]) -> None:
        what = request.name or request.url or str(request.path)
        log.error("model swap to %s rejected (%s): %s", what, request.trigger, reason)
        self._event("model_rejected", model=what, trigger=request.trigger, reason=reason, timings_ms=timings)
        if request.request is not None:
            self._reply(request.command, request.request, {"ok": False, "error": reason, "timings_ms": timings})

    # --- the store watcher (main loop, about once a second) ------------------------------------

    def poll_store(self, now: float) -> None:
        """With model.watch: swap to a .tflite file that appeared (or changed) in the store,
        once its size and time have held still for one poll (a copy in progress is not taken)."""
        if not self.config.model.watch or now - self._store_checked < 1.0:
            return
        self._store_checked = now
        current = self._scan_store()
        if current is None:
            return
        if self._store_seen is None:
            self._store_seen = current
            return
        for name, stamp in current.items():
            if self._store_seen.get(name) == stamp:
                continue
            if self._store_candidates.get(name) != stamp:
                self._store_candidates[name] = stamp  # seen once: wait for it to hold still
                continue
            if self.request(SwapRequest("watch", name=name)) is None:
                self._store_seen[name] = stamp
                self._store_candidates.pop(name, None)
        for name in list(self._store_seen):
            if name not in current:
                del self._store_seen[name]

    def _scan_store(self) -> dict[str, tuple[int, int]] | None:
        store = Path(self.config.model.dir)
        try:
            return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in store.glob("*.tflite")
                    if not p.name.startswith(".")}
        except OSError as exc:
            log.warning("model.watch: cannot list %s: %s", store, exc)
            return None

    def close(self) -> None:
        self.swapper.close()
        self.supervisor.close()
