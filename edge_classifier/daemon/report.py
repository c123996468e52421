"""What the daemon reports about itself: ``{prefix}/stats`` and the ``status`` command's state."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from edge_classifier import __version__
from edge_classifier.config.schema import Config
from edge_classifier.daemon import telemetry
from edge_classifier.source.tally import Tally

if TYPE_CHECKING:
    from edge_classifier.control.device import Device
    from edge_classifier.daemon.pipeline import Outcome
    from edge_classifier.source.group import CaptureGroup

__all__ = ["count_outcome", "dropped", "runtime_settings", "source_counters", "state", "stats", "stats_since"]


def stats(daemon: Device) -> dict[str, Any]:
    """The periodic telemetry; rates are since the previous call."""
    assert daemon.publisher is not None
    now = time.monotonic()
    body = stats_since(daemon, daemon.stats_last, daemon.publisher.take_latencies(), now)
    daemon.stats_last = (now, body["frames"], body["results"])
    return body


def stats_since(daemon: Device, last: tuple[float, int, int], latencies: list[float],
                now: float) -> dict[str, Any]:
    """The telemetry with rates since ``last`` (time, frames, results) and percentiles of
    ``latencies``; changes nothing (the web view keeps its own ``last``)."""
    assert daemon.publisher is not None and daemon.models is not None
    capture = group(daemon)
    then, frames_then, results_then = last
    elapsed = max(1e-6, now - then)
    frames, results = capture.frames, daemon.publisher.results
    info = daemon.models.info
    supervisor = daemon.modelctl.supervisor if daemon.modelctl else None
    return {
        "schema": 1,
        "device": daemon.config.device.id,
        "fps_in": round((frames - frames_then) / elapsed, 2),
        "fps_out": round((results - results_then) / elapsed, 2),
        "fps_classified": round(daemon.publisher.take_classified() / elapsed, 2),
        "frames": frames,
        "results": results,
        "dropped": dropped(daemon),
        "rejected": rejected(daemon),
        "source": source_counters(daemon),
        "sources": capture.tally.report(now),
        "inference_ms_p50": telemetry.percentile(latencies, 50),
        "inference_ms_p95": telemetry.percentile(latencies, 95),
        "accelerator": info.accelerator,
        "accelerator_state": supervisor.state if supervisor else "ok",
        "fallbacks": supervisor.fallbacks if supervisor else 0,
        "model": info.name,
        # The cameras on a model of their own (``[[sources]] model``): which, on what (empty
        # when every camera uses ``[model]``).
        "source_models": {name: {"model": m["name"], "accelerator": m["accelerator"], "fallback": m["fallback"]}
                          for name, m in source_models(daemon).items()},
        "paused": daemon.paused,
        "uptime_s": round(now - daemon.started, 1),
        "spool_depth": len(daemon.publisher.outbox),
        "spool_dropped": daemon.publisher.outbox.dropped,
        "spool_refused": daemon.publisher.outbox.refused_total,
        "rss_mb": telemetry.rss_mb(),
        "cpu_temp_c": telemetry.cpu_temperature(),
    }


def state(daemon: Device) -> dict[str, Any]:
    """The full state, for the status command."""
    assert daemon.models is not None
    models = daemon.models
    info = models.info
    capture = group(daemon)
    supervisor = daemon.modelctl.supervisor if daemon.modelctl else None
    spec = models.spec
    return {
        "device": daemon.config.device.id,
        "version": __version__,
        "paused": daemon.paused,
        "uptime_s": round(time.monotonic() - daemon.started, 1),
        "model": {
            "name": info.name, "path": str(info.path), "sha256": info.sha256, "requested": str(info.requested),
            "accelerator": info.accelerator, "accelerator_state": supervisor.state if supervisor else "ok",
            "fallback": models.fallback, "fallbacks": supervisor.fallbacks if supervisor else 0,
            "swaps": daemon.modelctl.swaps if daemon.modelctl else 0,
            "isolated": bool(getattr(spec, "isolated", False)), "runtime": info.runtime,
            "classes": info.classes, "labels": models.classifiers[0].label_source,
            "input": list(info.input.shape), "interpreters": len(models.classifiers),
        },
        "source_models": source_models(daemon),
        "source": {"name": ", ".join(group(daemon).names()), "kind": daemon.config.source.kind,
                   "frames": capture.frames, "dropped": dropped(daemon), "failures": capture.failures,
                   "rejected": rejected(daemon), **source_counters(daemon)},
        "inputs": inputs(daemon),
        "sources": capture.tally.report(),
        "mqtt": {"connected": bool(daemon.connection and daemon.connection.connected.is_set())},
        "settings": runtime_settings(daemon.config),
        "stats": {"results": daemon.publisher.results if daemon.publisher else 0,
                  "spool_depth": len(daemon.publisher.outbox) if daemon.publisher else 0},
    }


def source_models(daemon: Device) -> dict[str, dict[str, Any]]:
    """The sources classified by a model of their own (not ``[model]``): which, and where."""
    pipeline = daemon.modelctl.pipeline if daemon.modelctl else None
    if pipeline is None:
        return {}
    sets = pipeline.sets
    found = {name: sets.get(route.key) for name, route in sets.routes.items()}
    return {name: {"name": m.info.name, "path": str(m.info.path), "accelerator": m.info.accelerator,
                   "fallback": m.fallback, "interpreters": len(m.classifiers)}
            for name, m in found.items() if m is not None}


def count_outcome(tally: Tally, outcome: Outcome) -> None:
    """Count a finished frame for its source (a pipeline worker, via the daemon's emit)."""
    name, result = outcome.frame.source, outcome.classification
    if result is None:
        tally.count(name, "failed")
    else:
        tally.classified(name, result.total_ms)


def group(daemon: Device) -> CaptureGroup:
    assert daemon.capture is not None
    return daemon.capture


def _figures(source: Any) -> dict[str, int]:
    counters = getattr(source, "counters", None)
    figures: dict[str, int] = dict(counters()) if callable(counters) else {}
    figures.pop("dropped", None)
    figures.pop("rejected", None)
    figures["source_dropped"] = int(getattr(source, "dropped", 0))
    return figures


def source_counters(daemon: Device) -> dict[str, int]:
    """Every figure the sources themselves count, added up (mqtt: received, topics, evicted,
    source_dropped), with the newest-frame slots' replacements as ``slot_dropped``."""
    captures = group(daemon)
    figures: dict[str, int] = {}
    for source in captures.sources:
        for key, value in _figures(source).items():
            figures[key] = figures.get(key, 0) + value
    figures.setdefault("source_dropped", 0)
    figures["slot_dropped"] = captures.dropped
    figures["names_evicted"] = captures.tally.evicted
    return figures


def inputs(daemon: Device) -> dict[str, dict[str, Any]]:
    """Per configured source: its kind, state and its own figures."""
    captures = group(daemon)
    out: dict[str, dict[str, Any]] = {}
    for name, capture in captures.captures.items():
        config = captures.configs.get(name)
        out[name] = {"kind": config.kind if config else "", "frames": capture.frames,
                     "slot_dropped": capture.dropped, "failures": capture.failures,
                     "rejected": int(getattr(capture.source, "rejected", 0)),
                     "ended": capture.ended.is_set(), "paused": capture.paused, **_figures(capture.source)}
    return out


def dropped(daemon: Device) -> int:
    """Frames replaced by newer ones before they were classified: in the sources and the slots."""
    captures = group(daemon)
    return captures.dropped + sum(int(getattr(s, "dropped", 0)) for s in captures.sources)


def rejected(daemon: Device) -> int:
    """Images refused by the limits (preprocess.decode): the sources' and learn commands'."""
    learned = daemon.learning.images_rejected if daemon.learning is not None else 0
    if daemon.capture is None:
        return learned
    return sum(int(getattr(s, "rejected", 0)) for s in daemon.capture.sources) + learned


def runtime_settings(config: Config) -> dict[str, Any]:
    """The settings the ``config`` command can change, as they are now."""
    c = config
    return {"classify": {"top_k": c.classify.top_k, "threshold": c.classify.threshold,
                         "allow": list(c.classify.allow), "deny": list(c.classify.deny)},
            "source": {"fps": c.source.fps},
            "publish": {"mode": c.publish.mode, "heartbeat": c.publish.heartbeat,
                        "hysteresis": c.publish.hysteresis, "min_interval": c.publish.min_interval,
                        "smoothing": c.publish.smoothing}}
