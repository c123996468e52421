"""The models classifying now: one :class:`ModelSet` per model in use, and which camera uses which.

The daemon's ``[model]`` is the default set (key ``""``); a ``[[sources]]`` table that names
its own ``model`` (a file in the store) is classified by the set of that file (key: the file's
name), shared by every source naming the same file. ``route`` tells which set classifies a
frame: by the configured source's name, or for an mqtt wildcard source by its topic filter
(its frames report their topic).

Threads: the pipeline's workers read ``for_frame`` under the pipeline's take lock; the main
loop and the Edge TPU fallback change the sets and routes through the pipeline, under the
same lock. Both dictionaries are replaced whole (copy on write), so a reader needs no lock.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from paho.mqtt.client import topic_matches_sub

from edge_classifier.classifier import Classifier
from edge_classifier.engine.interpreter import ModelInfo
from edge_classifier.source.base import Frame

__all__ = ["DEFAULT", "ModelSet", "ModelSets", "Route"]

DEFAULT = ""
"""The key of the daemon's own ``[model]`` set."""


class ModelSet:
    """One classifier per worker, all on the same model; replaced as a whole.

    A set that was swapped out is ``retire``d: it closes itself once the last frame a
    worker took with it is done, so no interpreter is freed under a running invoke.
    ``key`` says which set of :class:`ModelSets` it is (``""``: the daemon's ``[model]``).
    """

    def __init__(self, classifiers: Sequence[Classifier], *, plan: Any = None, spec: Any = None,
                 fallback: str | None = None, key: str = DEFAULT) -> None:
        if not classifiers:
            raise ValueError("a model set needs at least one classifier")
        self.classifiers = tuple(classifiers)
        self.plan = plan  # daemon.models.ModelPlan: how to open the model again (TPU / CPU)
        self.spec = spec  # daemon.models.EngineSpec this set was opened with
        self.fallback = fallback  # why the Edge TPU is not used although the model has a TPU version
        self.key = key
        self._lock = threading.Lock()
        self._in_use = 0
        self._retired = False
        self._closed = False

    @property
    def info(self) -> ModelInfo:
        return self.classifiers[0].info

    def acquire(self) -> None:
        with self._lock:
            self._in_use += 1

    def release(self) -> None:
        with self._lock:
            self._in_use -= 1
            close = self._retired and self._in_use == 0
        if close:
            self.close()

    def retire(self) -> None:
        """Close as soon as no frame is using this set any more."""
        with self._lock:
            self._retired = True
            close = self._in_use == 0
        if close:
            self.close()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for classifier in self.classifiers:
            classifier.close()


class Route:
    """Which set classifies the frames of one configured source."""

    __slots__ = ("filter", "key")

    def __init__(self, key: str, filter: str = "") -> None:
        self.key = key
        self.filter = filter  # an mqtt wildcard source's topic filter; "" for the others

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Route) and (self.key, self.filter) == (other.key, other.filter)

    def __repr__(self) -> str:
        return f"Route({self.key!r}, {self.filter!r})"


class ModelSets:
    """The default set, the sources' own sets by key, and the routes (source name -> Route)."""

    def __init__(self, default: ModelSet, named: Mapping[str, ModelSet] | None = None,
                 routes: Mapping[str, Route] | None = None) -> None:
        self._sets: dict[str, ModelSet] = {DEFAULT: default, **(named or {})}
        for key, models in self._sets.items():
            models.key = key
        self._routes: dict[str, Route] = dict(routes or {})
        self._counted()

    def _counted(self) -> None:
        """After each change of the sets: what every frame's take reads, worked out once."""
        self.fewest_classifiers = min(len(models.classifiers) for models in self._sets.values())
        """Workers beyond this count wait: not every set has an interpreter for them."""

    @property
    def default(self) -> ModelSet:
        return self._sets[DEFAULT]

    def get(self, key: str) -> ModelSet | None:
        return self._sets.get(key)

    def all(self) -> tuple[ModelSet, ...]:
        return tuple(self._sets.values())

    def named(self) -> dict[str, ModelSet]:
        """The sources' own sets by key (not the default)."""
        return {key: models for key, models in self._sets.items() if key != DEFAULT}

    @property
    def routes(self) -> dict[str, Route]:
        return dict(self._routes)

    def key_of(self, source: str) -> str:
        """The key of the set the configured source ``source`` is classified with."""
        route = self._routes.get(source)
        return route.key if route is not None else DEFAULT


    def for_frame(self, frame: Frame) -> ModelSet:
        """The set to classify ``frame`` with (a worker, under the pipeline's take lock)."""
        routes, sets = self._routes, self._sets
        route = routes.get(frame.source)
        if route is None or route.filter:
            route = next((r for r in routes.values() if r.filter and topic_matches_sub(r.filter, frame.source)),
                         None)
        if route is None:
            return sets[DEFAULT]
        return sets.get(route.key) or sets[DEFAULT]

    def close(self) -> None:
        """Close every set (at shutdown; each close is idempotent)."""
        for models in self.all():
            models.close()

    # --- changes (under the pipeline's take lock: Pipeline.swap / Pipeline.reroute) -----------

    def replace(self, key: str, models: ModelSet) -> ModelSet | None:
        """Put ``models`` in as the set ``key``; returns the set it replaced, if any."""
        models.key = key
        old = self._sets.get(key)
        self._sets = {**self._sets, key: models}
        self._counted()
        return old

    def reroute(self, routes: Mapping[str, Route], added: Mapping[str, ModelSet]) -> list[ModelSet]:
        """New routes and the sets they need that were not there; returns the sets no route
        (and not the default) uses any more, taken out: the caller retires them."""
        sets = {**self._sets, **added}
        for key, models in added.items():
            models.key = key
        used = {DEFAULT} | {route.key for route in routes.values()}
        unused = [models for key, models in sets.items() if key not in used]
        self._sets = {key: models for key, models in sets.items() if key in used}
        self._routes = dict(routes)
        self._counted()
        return unused
