"""Classifiers on the real test models, opened once per test module and closed after it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from edge_classifier.classifier import Classifier, resolve_labels
from edge_classifier.engine import Engine
from support.testdata import model


@contextmanager
def opened_once(**options: Any) -> Iterator[Callable[[str], Classifier]]:
    """``with opened_once(**options) as get`` (in a module-scoped fixture): ``get(name)`` is the
    model ``name``'s classifier on the CPU (2 threads, the labels the model carries, ``options``
    as Classifier keywords), opened on first use; all are closed when the block ends."""
    opened: dict[str, Classifier] = {}

    def get(name: str) -> Classifier:
        if name not in opened:
            engine = Engine.open(model(name), accelerator="cpu", threads=2)
            labels, origin = resolve_labels(engine.info, None)
            opened[name] = Classifier(engine, labels, label_source=origin, **options)
        return opened[name]

    try:
        yield get
    finally:
        for classifier in opened.values():
            classifier.close()
