"""Building the daemon's model set from the configuration."""

from __future__ import annotations

import os

from edge_classifier.classifier import Classifier, resolve_labels
from edge_classifier.config.schema import ClassifyConfig, ModelConfig
from edge_classifier.daemon.pipeline import ModelSet
from edge_classifier.engine.interpreter import Engine

__all__ = ["open_model_set", "worker_count"]


def worker_count(model: ModelConfig, accelerator: str) -> int:
    """How many interpreters: as configured, else one per thread on the CPU, one on the TPU."""
    if model.interpreters:
        return model.interpreters
    if accelerator == "edgetpu":
        return 1
    return max(1, min(model.threads, os.cpu_count() or 1))


def open_model_set(model: ModelConfig, classify: ClassifyConfig) -> ModelSet:
    """Open the configured model once per worker; the first engine decides the accelerator
    (and whether the CPU twin stands in), the others open the same file.

    On the CPU each of the workers gets ``max(1, threads // workers)`` threads.
    """
    cpu_workers = worker_count(model, "cpu")
    threads = max(1, model.threads // cpu_workers)
    first = Engine.open(model.path, accelerator=model.accelerator, device=model.device, threads=threads)
    engines = [first]
    try:
        count = worker_count(model, first.info.accelerator)
        while len(engines) < count:
            engines.append(Engine.open(first.info.path, accelerator=first.info.accelerator, device=model.device,
                                       threads=threads))
        labels, origin = resolve_labels(first.info, model.labels or None)
        classifiers = [
            Classifier(engine, labels, label_source=origin, resize=model.resize, mean=model.input_mean,
                       std=model.input_std, top_k=classify.top_k, threshold=classify.threshold,
                       allow=classify.allow, deny=classify.deny)
            for engine in engines
        ]
    except BaseException:
        for engine in engines:
            engine.close()
        raise
    return ModelSet(classifiers)
