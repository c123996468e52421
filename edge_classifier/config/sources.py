"""Several cameras in one daemon: the ``[[sources]]`` array of tables.

Each table takes the keys ``[source]`` has, plus a required, unique ``name`` (it names
the source in commands and, for every kind but an mqtt wildcard, in results). The
one-camera form ``[source]`` stays valid; a file may use one form or the other, not
both (which of the two would win is not obvious, so it is an error that says so).
After loading, ``Config.sources`` holds the ``[[sources]]`` tables, or is empty for the
one-camera form; ``sources_of`` gives the sources to run either way.

A ``[[sources]]`` table may name its own ``model``: a file in the model store (``model.dir``),
checked when the file is loaded (``model_problems``), so ``check-config``, the start and a
SIGHUP all refuse a name the store does not hold, naming the source and the model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from edge_classifier.config.schema import SourceConfig
from edge_classifier.errors import EdgeClassifierError

__all__ = ["MAX_SOURCES", "model_problems", "name_problem", "sources_of", "split_sources", "with_sources"]

MAX_SOURCES = 64

Build = Callable[[Any, Mapping[str, Any], str, list[str]], Any]


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a source (it becomes an MQTT topic level), or None."""
    if not name:
        return "is required in [[sources]] and must not be empty"
    if len(name) > 64 or any(c in name for c in "/+#\x00") or name != name.strip():
        return f"must be 1-64 characters without '/', '+', '#' or surrounding spaces, not {name!r}"
    return None


def split_sources(data: Mapping[str, Any], build: Build,
                  problems: list[str]) -> tuple[dict[str, Any], tuple[SourceConfig, ...]]:
    """``data`` without ``sources``, and the validated ``[[sources]]`` tables (problems appended)."""
    rest = {key: value for key, value in data.items() if key != "sources"}
    if "sources" not in data:
        return rest, ()
    tables = data["sources"]
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        problems.append("sources: must be an array of tables ([[sources]])")
        return rest, ()
    if "source" in data:
        problems.append("sources: give one camera as [source] or several as [[sources]], not both")
    if not tables or len(tables) > MAX_SOURCES:
        problems.append(f"sources: must hold 1 to {MAX_SOURCES} [[sources]] tables, not {len(tables)}")
    sources: list[SourceConfig] = []
    seen: set[str] = set()
    for index, table in enumerate(tables):
        prefix = f"sources[{index}]."
        config: SourceConfig = build(SourceConfig, table, prefix, problems)
        problem = name_problem(config.name)
        if problem is not None:
            problems.append(f"{prefix}name: {problem}")
        elif config.name in seen:
            problems.append(f"{prefix}name: {config.name!r} names two sources; names must be unique")
        seen.add(config.name)
        sources.append(config)
    return rest, tuple(sources)


def with_sources(config: Any, sources: tuple[SourceConfig, ...]) -> Any:
    """``config`` with the ``[[sources]]`` tables."""
    return dataclasses.replace(config, sources=sources)


def sources_of(config: Any) -> tuple[SourceConfig, ...]:
    """The sources to run (a ``Config`` built in code may leave ``sources`` empty)."""
    return tuple(config.sources) or (config.source,)


def model_problems(config: Any) -> list[str]:
    """Each ``[[sources]]`` model that is not a model file in the store, by key path; and a
    ``model`` in the one-camera ``[source]``, where ``model.path`` says it already."""
    from edge_classifier.store.store import resolve_name

    problems = []
    if config.source.model:
        problems.append(f"source.model: only [[sources]] tables name their own model; with one [source], "
                        f"set model.path = {config.source.model!r}")
    for index, source in enumerate(config.sources):
        if not source.model:
            continue
        try:
            resolve_name(config.model.dir, source.model)
        except EdgeClassifierError as exc:
            problems.append(f"sources[{index}].model: source {source.name!r}: {exc}")
    return problems
