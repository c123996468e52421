"""How a configuration setting is declared: a dataclass field with its rules attached.

``setting(default, doc, ...)`` returns a ``dataclasses.field`` whose metadata the
loader reads to validate a TOML value: its documentation, allowed choices, numeric
bounds and whether it is a secret (never printed). The checks live here, beside the
declaration, so the schema reads as a table of keys.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

__all__ = ["Rule", "setting"]

Check = Callable[[Any], str | None]


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    """The validation rules of one setting."""

    doc: str
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    secret: bool = False
    check: Check | None = None

    def problem(self, value: Any) -> str | None:
        """What is wrong with an already type-checked ``value``, or None."""
        if self.choices and value not in self.choices:
            allowed = ", ".join(repr(c) for c in self.choices)
            return f"must be one of {allowed}, not {value!r}"
        if self.minimum is not None and value < self.minimum:
            return f"must be >= {self.minimum:g}, not {value!r}"
        if self.maximum is not None and value > self.maximum:
            return f"must be <= {self.maximum:g}, not {value!r}"
        if self.check is not None:
            return self.check(value)
        return None


def setting(
    default: Any,
    doc: str,
    *,
    choices: tuple[Any, ...] = (),
    minimum: float | None = None,
    maximum: float | None = None,
    secret: bool = False,
    check: Check | None = None,
) -> Any:
    """Declare one configuration key: its default, its documentation and its rules."""
    rule = Rule(doc, choices, minimum, maximum, secret, check)
    return dataclasses.field(default=default, metadata={"rule": rule}, repr=not secret)
