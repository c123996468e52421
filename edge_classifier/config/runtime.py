"""Settings that may change at runtime (the ``config`` command), validated like the file.

A change names keys as in the file (``{"classify": {"top_k": 5}}``) or by the short names
``top_k``, ``threshold``, ``fps``, ``mode``. The changed sections are rebuilt through the
same checks as the file, so a bad value gets the same message with the same key path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from edge_classifier.config.loader import _build, _cross_checks
from edge_classifier.config.schema import Config
from edge_classifier.errors import ConfigError

__all__ = ["RUNTIME_KEYS", "SHORT_NAMES", "apply_changes"]

RUNTIME_KEYS: dict[str, tuple[str, ...]] = {
    "classify": ("top_k", "threshold", "allow", "deny"),
    "source": ("fps",),
    "publish": ("mode", "heartbeat", "hysteresis", "min_interval", "smoothing"),
}
SHORT_NAMES = {"top_k": "classify", "threshold": "classify", "fps": "source", "mode": "publish"}


def apply_changes(config: Config, changes: Mapping[str, Any]) -> Config:
    """``config`` with ``changes`` applied; ConfigError listing every problem by key path."""
    problems: list[str] = []
    sections: dict[str, dict[str, Any]] = {}
    for key, value in changes.items():
        if key in SHORT_NAMES:
            sections.setdefault(SHORT_NAMES[key], {})[key] = value
        elif key in RUNTIME_KEYS:
            if not isinstance(value, dict):
                problems.append(f"{key}: must be an object of settings, not {type(value).__name__}")
                continue
            for name, item in value.items():
                if name in RUNTIME_KEYS[key]:
                    sections.setdefault(key, {})[name] = item
                else:
                    problems.append(f"{key}.{name}: cannot be changed at runtime ({_changeable()})")
        else:
            problems.append(f"{key}: cannot be changed at runtime ({_changeable()})")
    if not sections and not problems:
        problems.append(f"no settings given ({_changeable()})")
    updated = config
    for section, values in sections.items():
        current = getattr(config, section)
        merged = {**_as_table(current), **values}
        rebuilt = _build(type(current), merged, f"{section}.", problems)
        updated = dataclasses.replace(updated, **{section: rebuilt})
    if not problems:
        problems.extend(_cross_checks(updated))
    if problems:
        raise ConfigError(problems)
    return updated


def _as_table(section: Any) -> dict[str, Any]:
    table = {}
    for field in dataclasses.fields(section):
        value = getattr(section, field.name)
        table[field.name] = list(value) if isinstance(value, tuple) else value
    return table


def _changeable() -> str:
    return "changeable: " + ", ".join(f"{s}.{k}" for s, keys in RUNTIME_KEYS.items() for k in keys)
