"""The daemon's models over time: the first one (remembered across restarts), hot swaps
(``model`` command, new files in the store, reloads), and the Edge TPU's fallback and
recovery. Lives on the main thread; the slow work happens in ``Swapper`` (model-loader)
and ``AcceleratorSupervisor`` (accelerator-recovery), which report through the control queue.

A swap: the ready set is switched in between two frames; the old set stays loaded until the
first result of the new one. That result confirms the swap (state saved, ``model_swapped``
event and the reply, with timings and the gap between the last old and first new result);
a failure instead puts the old set back (``model_rejected``).

With ``[[sources]]`` naming their own models there is one set per model in use
(``daemon.modelsets``). A swap without ``source`` replaces the daemon's ``[model]`` set (the
sources without their own model follow it); a swap naming a ``source`` moves that source alone
onto the new model (onto the set already running it, if one does), and a set no source uses
any more is closed; a store file that the watcher sees replaced reloads the set running it,
for all its sources. Only a swap of ``[model]`` is remembered across restarts (a source's model
is in its ``[[sources]]`` table).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_classifier.config.schema import Config
from edge_classifier.config.sources import sources_of
from edge_classifier.control.requests import Request
from edge_classifier.daemon import sourcemodels
from edge_classifier.daemon.accelerator import AcceleratorBack, AcceleratorSupervisor
from edge_classifier.daemon.models import open_model_set, plan_model, wants_embedding
from edge_classifier.daemon.modelsets import DEFAULT, ModelSets, Route
from edge_classifier.daemon.pipeline import ModelSet, Outcome, Pipeline
from edge_classifier.daemon.storewatch import StoreWatch
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
    old: ModelSet  # what classified before: put back if the new one fails
    switched: float
    models: ModelSet  # the set switched in (a source's swap may join one that runs already)
    key: str = DEFAULT  # the set replaced in place, or for a source's swap its old routes' key
    routes: dict[str, Route] | None = None  # a source's swap: the routes before it
    unused: list[ModelSet] = dataclasses.field(default_factory=list)  # sets it left without a source
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
        self.watcher = StoreWatch(lambda: Path(self.config.model.dir))
        self.swaps = 0

    def in_use(self) -> set[Path]:
        """Files a download must never replace: the running model and its twin, the model
        being switched in, the learning extractor. (Called in model-loader: reads attributes.)"""
        files = {Path(self.config.learn.extractor)}
        for models in (*(self.pipeline.sets.all() if self.pipeline else ()),
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

    def open_sets(self, default: ModelSet) -> ModelSets:
        """``default`` and the sets of the models ``[[sources]]`` name, with their routes."""
        routes = sourcemodels.routes_of(self.config)
        named = sourcemodels.open_sets(self.config, {r.key for r in routes.values()})
        return ModelSets(default, named, routes)

    def attach(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        if self.config.model.watch:
            self.watcher.start()  # what is there at start is not new
        for models in pipeline.sets.all():
            self._recover_tpu(models)

    def _recover_tpu(self, models: ModelSet) -> None:
        if models.fallback and models.key != DEFAULT:  # [model]'s is announced by the daemon's start
            self._event("accelerator_fallback", model=models.info.name, accelerator=models.info.accelerator,
                        reason=models.fallback)
        if models.fallback and models.plan is not None and models.plan.tpu is not None:
            # The TPU did not load: keep trying it, as after a failure.
            self.supervisor.start_recovery(models.plan, models.plan.tpu, models.key)

    def reroute(self, old: Config, new: Config) -> None:
        """SIGHUP: sources whose ``model`` changed move (opening only the models not open yet);
        a set no source uses any more is closed. A model that cannot open changes nothing."""
        pipeline = self._pipeline()
        routes = sourcemodels.updated_routes(old, new, pipeline.sets.routes)
        if routes == pipeline.sets.routes:
            return
        added = sourcemodels.open_sets(new, {r.key for r in routes.values()} - set(pipeline.sets.named()))
        for models in pipeline.reroute(routes, added):
            models.retire()
        for models in added.values():
            self._recover_tpu(models)

    # --- requests ---------------------------------------------------------------------------

    def request(self, request: SwapRequest) -> str | None:
        """Start a swap; returns why not when it cannot start (one at a time)."""
        if self.swapper.busy or self._pending is not None:
            return "a model swap is already under way"
        names = [s.name for s in self.config.sources]
        if request.source is not None and request.source not in names:
            return (f"source: no source named {request.source!r} ([[sources]]: {', '.join(names)})" if names
                    else "source: a model per source needs [[sources]] (one [source] uses [model])")
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
            if outcome.classifier is not None and outcome.classifier in pending.models.classifiers:
                pending.confirmed = True
                # Crossing: worker thread -> main loop, through the control queue.
                self._deliver(SwapOutcome(outcome.classification is not None, outcome.error, now))
            else:
                pending.last_old = now
        self._last_emit = now

    # --- the main loop's side ---------------------------------------------------------------

    def _switch(self, ready: SwapReady) -> None:
        pipeline = self._pipeline()
        request, sets = ready.request, pipeline.sets
        key = request.key if request.key is not None else DEFAULT
        # Pending before the switch: the new set's first result may be emitted at once.
        pending = _Pending(ready, sets.get(key) or ready.models, time.monotonic(), ready.models, key,
                           last_old=self._last_emit, dropped_before=pipeline.capture.dropped)
        self._pending = pending
        if request.source is not None:
            new_key = ready.models.info.requested.name
            running = sets.get(new_key)
            pending.key, pending.routes = sets.key_of(request.source), sets.routes
            pending.old = sets.get(pending.key) or sets.default
            if running is not None:  # the model runs already (another source's): share it
                ready.models.close()
                pending.models = running
            source = next(s for s in sources_of(self.config) if s.name == request.source)
            routes = {**sets.routes, request.source: sourcemodels.route(source, new_key)}
            pending.unused = pipeline.reroute(routes, {} if running is not None else {new_key: ready.models})
        else:
            pipeline.swap(ready.models, key)
        idle = request.source is None and key == DEFAULT and \
            all(source.name in pipeline.sets.routes for source in sources_of(self.config))
        if pipeline.paused or idle:
            # No frame will come to confirm it (paused, or every source has a model of its own):
            # the smoke inference in model-loader stands for the first result, so the command
            # gets its reply and later swaps are free.
            log.info("model %s switched in while %s: confirmed by its smoke inference", ready.models.info.path.name,
                     "paused" if pipeline.paused else "no source uses [model]")
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
        pipeline = self._pipeline()
        dropped = pipeline.capture.dropped - pending.dropped_before
        if pending.routes is not None:  # a source's swap: the sets it left stay loaded until now
            done = pending.unused if result.ok else pipeline.reroute(pending.routes,
                                                                     {m.key: m for m in pending.unused})
            for unused in done:
                unused.retire()
        elif not result.ok:
            pipeline.swap(old, pending.key)
            new.retire()
        else:
            old.retire()
        if not result.ok:
            self._rejected(request, f"the new model failed on live frames: {result.error}", timings)
            return
        self.swaps += 1
        new = pending.models
        info = new.info
        if request.source is None and request.key is None:
            self.state.save({"model": {"path": str(info.requested),
                                       "sha256": ModelFile.inspect(info.requested).sha256,
                                       "config_path": self.config.model.path}})
        details = {"model": info.name, "path": str(info.requested), "sha256": info.sha256,
                   "accelerator": info.accelerator, "trigger": request.trigger, "timings_ms": timings,
                   "dropped_frames": dropped}
        if request.source is not None:
            details["source"] = request.source
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
        """With model.watch: swap to a .tflite file that appeared (or changed) in the store and
        held still for one poll. A file a source's set runs reloads that set (for all its
        sources); any other file swaps ``[model]``."""
        if not self.config.model.watch:
            return
        for name in self.watcher.poll(now):
            key = name if self.pipeline is not None and self.pipeline.sets.get(name) is not None else None
            if self.request(SwapRequest("watch", name=name, key=key)) is None:
                self.watcher.taken(name)

    def close(self) -> None:
        self.swapper.close()
        self.supervisor.close()
