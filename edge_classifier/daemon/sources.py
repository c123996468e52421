"""Which sources run: start, restart and stop the captures of a
:class:`~edge_classifier.source.group.CaptureGroup` to match the configuration.

At start every source is added; on SIGHUP only the sources whose table was added,
changed or removed are touched, so the other cameras keep running (and keep their
frame numbers). A source is named by its ``name`` (``[[sources]]``), or for the
one-camera ``[source]`` by the name its results report (``source_name``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from edge_classifier.config.schema import Config, SourceConfig
from edge_classifier.config.sources import sources_of
from edge_classifier.source.base import Source
from edge_classifier.source.capture import EventCallback
from edge_classifier.source.group import CaptureGroup
from edge_classifier.source.registry import source_name

__all__ = ["Opener", "ha_cameras", "reconcile", "several_cameras", "wanted"]

log = logging.getLogger(__name__)

Opener = Callable[[Config, SourceConfig], tuple[Source, EventCallback]]
"""Builds one source (unopened) and the callback its capture reports events to."""


def wanted(config: Config) -> dict[str, SourceConfig]:
    """The sources ``config`` asks for, by name."""
    return {source.name or source_name(source): source for source in sources_of(config)}


def several_cameras(config: Config) -> bool:
    """Whether the daemon can have more than one camera: ``[[sources]]``, or an mqtt wildcard.
    Only then does each result go to ``{prefix}/source/{name}/result`` too (one camera's
    results are all of ``{prefix}/result`` already; no traffic is doubled for nothing)."""
    wildcard = any(s.wildcard for s in sources_of(config))
    return bool(config.sources) or wildcard


def ha_cameras(config: Config) -> tuple[str, ...]:
    """The ``[[sources]]`` that get their own Home Assistant label and score entities: all but
    mqtt wildcards (whose cameras are the topics that turn up, unknown in advance)."""
    return tuple(s.name for s in config.sources if not s.wildcard)


def _reported(config: Config, source: SourceConfig) -> SourceConfig:
    """In ``[[sources]]`` an mqtt wildcard's frames report their topic (each topic is a camera);
    its ``name`` names the source in commands and stats."""
    if config.sources and source.wildcard:
        return dataclasses.replace(source, name="")
    return source


def _built(config: Config, name: str, source: SourceConfig, opener: Opener) -> tuple[Source, EventCallback]:
    built = opener(config, _reported(config, source))
    if config.sources and isinstance(getattr(built[0], "client_id", None), str):
        # Two clients with one id throw each other off the broker: each mqtt source its own.
        built[0].client_id = f"{built[0].client_id}-{name}"  # type: ignore[attr-defined]
    return built


def _camera(source: SourceConfig) -> SourceConfig:
    return dataclasses.replace(source, model="")


def reconcile(group: CaptureGroup, config: Config, opener: Opener) -> list[str]:
    """Make ``group`` run what ``config`` asks for; returns what changed, e.g. ``['+yard', '-door']``.

    Every new source is built before any running one is stopped, so a source that
    cannot be built (``ConfigError``) leaves the group as it was.
    """
    target = wanted(config)
    running = group.configs
    # A changed `model` alone moves the source to another model set (ModelControl.reroute);
    # its camera keeps running.
    changed = [name for name in target if name in running and _camera(running[name]) != _camera(target[name])]
    added = [name for name in target if name not in running]
    removed = [name for name in running if name not in target]
    built = {name: _built(config, name, target[name], opener) for name in (*changed, *added)}
    for name in (*removed, *changed):
        group.remove(name)
    for name, (source, on_event) in built.items():
        group.add(name, source, target[name], on_event=on_event)
    summary = [f"-{n}" for n in removed] + [f"~{n}" for n in changed] + [f"+{n}" for n in added]
    if summary and running:
        log.info("sources: %s", " ".join(summary))
    return summary
