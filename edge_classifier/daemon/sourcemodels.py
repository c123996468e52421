"""The models ``[[sources]]`` name: which set each source uses, opened at start and on SIGHUP.

A source's ``model`` is a file in the store; its set's key is the file's name, so two sources
naming the same file share one set (its interpreters). Sources without a ``model`` use the
daemon's ``[model]`` set and need no route. The sets open with the daemon's ``[model]``
settings (accelerator, threads, interpreters, isolation, signatures): a source names only
the file.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from edge_classifier.config.schema import Config, SourceConfig
from edge_classifier.config.sources import sources_of
from edge_classifier.daemon.models import open_model_set, plan_model
from edge_classifier.daemon.modelsets import ModelSet, Route
from edge_classifier.store.signing import check_signature
from edge_classifier.store.store import resolve_name

__all__ = ["model_key", "open_sets", "route", "routes_of", "updated_routes"]

log = logging.getLogger(__name__)


def model_key(config: Config, name: str) -> str:
    """The key of the store model ``name`` (``x`` and ``x.tflite`` are one model)."""
    return resolve_name(config.model.dir, name).name


def route(source: SourceConfig, key: str) -> Route:
    """Where the frames of ``source`` go: an mqtt wildcard's frames report their topic, so its
    route matches them by the source's topic filter."""
    return Route(key, source.uri if source.wildcard else "")


def routes_of(config: Config) -> dict[str, Route]:
    """The routes of the sources that name their own model, by source name."""
    return {source.name: route(source, model_key(config, source.model))
            for source in config.sources if source.model}


def updated_routes(old: Config, new: Config, current: Mapping[str, Route]) -> dict[str, Route]:
    """The routes after a reload: a source whose ``model`` the file changed (or a new source)
    takes what the file says; the others keep what they run now (a swap by command stays)."""
    before, after = routes_of(old), routes_of(new)
    names = {source.name for source in sources_of(new)}
    routes = {}
    for name in names:
        if after.get(name) != before.get(name) or name not in current:
            if name in after:
                routes[name] = after[name]
        else:
            routes[name] = current[name]
    return routes


def open_sets(config: Config, keys: Iterable[str]) -> dict[str, ModelSet]:
    """Open a set for each store model in ``keys``, as ``[model]`` says; all or none."""
    opened: dict[str, ModelSet] = {}
    try:
        for key in sorted(set(keys)):
            plan = plan_model(config.model, resolve_name(config.model.dir, key))
            check_signature(plan.requested, config.model.trusted_keys)
            opened[key] = models = open_model_set(config.model, config.classify, plan=plan, key=key)
            info = models.info
            log.info("model %s for %s on %s with %d interpreter(s)", info.name,
                     ", ".join(sorted(s.name for s in config.sources if s.model and model_key(config, s.model) == key))
                     or "a source", info.accelerator, len(models.classifiers))
    except BaseException:
        for models in opened.values():
            models.close()
        raise
    return opened
