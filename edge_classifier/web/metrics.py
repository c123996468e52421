"""``/metrics``: the daemon's counters in the Prometheus text format (prometheus_client).

Counters the daemon keeps anyway (frames, drops, results, spool, fallbacks, connection) are
read when Prometheus scrapes (a custom collector): nothing is counted twice and no scrape
means no cost. Only what the daemon does not keep is recorded per frame, in ``observe``
(the pipeline worker that emits each outcome): classified and rejected frames per source
and the two latency histograms, each a few dictionary and lock operations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edge_classifier.daemon.pipeline import Outcome

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self, counters: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, CPU seconds, ...
        self._daemon = _DaemonCollector(counters, self)
        self.registry.register(self._daemon)
        self.inference = Histogram("edge_classifier_inference_seconds", "The interpreter's invoke per frame.",
                                   buckets=_BUCKETS, registry=self.registry)
        self.latency = Histogram("edge_classifier_latency_seconds", "From frame capture to its classification "
                                 "result (end to end, before publishing).", buckets=_BUCKETS, registry=self.registry)
        self.classified: dict[str, int] = {}
        self.rejected: dict[str, int] = {}

    def observe(self, outcome: Outcome, now: float) -> None:
        """One outcome (pipeline worker thread, one at a time in frame order)."""
        source = outcome.frame.source
        result = outcome.classification
        if result is None:
            self.rejected[source] = self.rejected.get(source, 0) + 1
            return
        self.classified[source] = self.classified.get(source, 0) + 1
        self.inference.observe(result.inference_ms / 1000.0)
        self.latency.observe(max(0.0, now - outcome.frame.captured))

    def text(self) -> bytes:
        return generate_latest(self.registry)


class _DaemonCollector(Collector):
    def __init__(self, counters: Callable[[], dict[str, Any]], metrics: Metrics) -> None:
        self._counters = counters
        self._metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # collected only at scrape time (the daemon may not be running yet)

    def collect(self) -> Iterator[Metric]:
        # Crossing: a request thread reads counters the capture, pipeline and publish threads
        # write; each is one int read (a scrape may see a frame counted in one and not yet
        # in another, as an MQTT stats message may).
        c = self._counters()
        source = c["source"]

        def per_source(name: str, doc: str, values: dict[str, int]) -> Metric:
            family = CounterMetricFamily(name, doc, labels=["source"])
            for label, value in sorted(values.items()):
                family.add_metric([label], value)
            return family

        yield per_source("edge_classifier_frames_in", "Frames the source delivered.", {source: c["frames_in"]})
        yield per_source("edge_classifier_frames_classified", "Frames classified.", dict(self._metrics.classified))
        yield per_source("edge_classifier_frames_dropped", "Live frames overwritten before classification "
                         "(the pipeline was busy).", {source: c["dropped"]})
        rejected = dict(self._metrics.rejected)
        if c["undecodable"]:
            rejected[source] = rejected.get(source, 0) + c["undecodable"]
        yield per_source("edge_classifier_frames_rejected", "Frames that could not be classified (or decoded).",
                         rejected)
        yield CounterMetricFamily("edge_classifier_results_published", "Results published "
                                  "(stats: results).", value=c["results"])
        yield CounterMetricFamily("edge_classifier_events_published", "Events published.", value=c["events"])
        info = GaugeMetricFamily("edge_classifier_accelerator", "The accelerator and model in use (value 1).",
                                 labels=["accelerator", "model", "state"])
        info.add_metric([c["accelerator"], c["model"], c["accelerator_state"]], 1)
        yield info
        yield CounterMetricFamily("edge_classifier_accelerator_fallbacks", "Times the Edge TPU failed and the "
                                  "CPU took over.", value=c["fallbacks"])
        yield CounterMetricFamily("edge_classifier_model_swaps", "Models swapped in without a restart.",
                                  value=c["swaps"])
        yield GaugeMetricFamily("edge_classifier_spool_depth", "Messages waiting for the broker.",
                                value=c["spool_depth"])
        yield CounterMetricFamily("edge_classifier_spool_dropped", "Undelivered messages dropped (spool full).",
                                  value=c["spool_dropped"])
        yield GaugeMetricFamily("edge_classifier_mqtt_connected", "1 while connected to the broker.",
                                value=int(c["connected"]))
        yield GaugeMetricFamily("edge_classifier_paused", "1 while paused.", value=int(c["paused"]))
