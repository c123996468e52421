"""Load one model and run it once: the check that could crash, run in a child process.

``python -m edge_classifier.store.probe [--no-smoke] PATH...`` probes each CPU model file in
turn and prints one line ``PROBE {json}`` per file, flushed at once, so when a hostile file
kills the process the parent knows which file did it (the first one without a line).

The probe loads through :meth:`Engine.open`, the same call a model swap makes, so its verdict
is the swap's verdict: truncated or corrupt flatbuffers, unresolved custom ops, inputs that
are not one NHWC 3-channel image of a supported type, outputs that are not one score vector.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_classifier.errors import CustomOpError, EdgeClassifierError

__all__ = ["MARKER", "ProbeResult", "main", "probe"]

MARKER = "PROBE "


@dataclasses.dataclass(frozen=True, slots=True)
class ProbeResult:
    """What loading (and optionally running) one model file showed."""

    path: str
    error: str | None = None  # why the runtime refused it (or why the probe failed)
    custom_op: str | None = None  # the unresolved custom op, when that is the reason
    input_shape: tuple[int, ...] | None = None
    input_dtype: str | None = None
    classes: int | None = None
    load_ms: float | None = None
    smoke_ms: float | None = None  # one inference on an all-zero input

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ProbeResult:
        """The result a child printed; ValueError when it is not one."""
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("path"), str):
            raise ValueError("not a probe result")
        names = {field.name for field in dataclasses.fields(cls)}
        values: dict[str, Any] = {key: value for key, value in data.items() if key in names}
        if values.get("input_shape") is not None:
            values["input_shape"] = tuple(int(d) for d in values["input_shape"])
        return cls(**values)


def probe(path: str | Path, *, smoke: bool = True) -> ProbeResult:
    """Open ``path`` on the CPU with one thread and, if ``smoke``, invoke it once on zeros.

    Errors the package raises on purpose become the result's ``error``; anything else (a bug,
    or the runtime failing in a new way) propagates.
    """
    from edge_classifier.engine.interpreter import Engine  # numpy + runtime: only when probing

    start = time.perf_counter()
    try:
        engine = Engine.open(path, accelerator="cpu", threads=1)
    except CustomOpError as exc:
        return ProbeResult(str(path), error=str(exc), custom_op=exc.op)
    except EdgeClassifierError as exc:
        return ProbeResult(str(path), error=str(exc))
    load_ms = (time.perf_counter() - start) * 1000.0
    with engine:
        info = engine.info
        smoke_ms = None
        error = None
        if smoke:
            zeros: np.ndarray = np.zeros(info.input.shape, dtype=info.input.dtype)
            try:
                raw, smoke_ms = engine.timed_invoke(zeros)
            except (RuntimeError, ValueError) as exc:
                error = f"{path}: the runtime loads it but cannot run it ({_first_line(exc)})"
            else:
                if raw.size != info.classes:
                    error = f"{path}: one inference gave {raw.size} values, not {info.classes}"
        return ProbeResult(
            str(path), error=error, input_shape=info.input.shape, input_dtype=np.dtype(info.input.dtype).name,
            classes=info.classes, load_ms=round(load_ms, 3), smoke_ms=None if smoke_ms is None else round(smoke_ms, 3),
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """The child's entry point: probe every path, one result line each."""
    args = list(sys.argv[1:] if argv is None else argv)
    smoke = "--no-smoke" not in args
    for path in (arg for arg in args if arg != "--no-smoke"):
        try:
            result = probe(path, smoke=smoke)
        except Exception as exc:  # the child is the isolation boundary: report, do not die
            result = ProbeResult(path, error=f"{path}: probing failed: {type(exc).__name__}: {exc}")
        print(MARKER + result.to_json(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
