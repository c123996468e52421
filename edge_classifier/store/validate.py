"""Would a model swap to this file succeed? Every reason it would not, collected.

Checks, in order (all of them run; the runtime load is skipped only when it cannot tell more):
is a file; within the size limit; the TFL3 flatbuffer identifier; the expected sha256; for a
file compiled for the Edge TPU, its CPU twin beside it; then, in a child process (see
``sandbox``), a load by the runtime (truncated, corrupt, unresolved custom ops, input not a
1xHxWx3 image of uint8/int8/float32) and one timed inference on an all-zero input; and
last the label count (labels file given, else sidecar, else embedded) against the outputs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path

from edge_classifier.engine.labels import read_labels
from edge_classifier.engine.model import EDGETPU_OP, logical_name
from edge_classifier.errors import EdgeClassifierError
from edge_classifier.store.probe import ProbeResult
from edge_classifier.store.sandbox import DEFAULT_TIMEOUT, probe_files
from edge_classifier.store.store import label_source

__all__ = ["ValidationReport", "validate_model"]

_CHUNK = 1 << 20
_FLATBUFFER_ID = b"TFL3"


@dataclasses.dataclass(frozen=True, slots=True)
class ValidationReport:
    """The verdict on one model file; ``ok`` when ``problems`` is empty."""

    path: Path
    problems: tuple[str, ...] = ()  # each names the file and says what is wrong
    notes: tuple[str, ...] = ()  # facts worth knowing that are not problems
    missing: bool = False  # the file does not exist (exit 66 rather than 65)
    size: int | None = None
    sha256: str | None = None
    edgetpu: bool = False
    loaded: Path | None = None  # the file the runtime loaded (the CPU twin of an _edgetpu file)
    input_shape: tuple[int, ...] | None = None
    input_dtype: str | None = None
    classes: int | None = None
    labels: str = "none"  # "file" | "sidecar" | "embedded" | "none"
    load_ms: float | None = None  # the runtime's load, inside the probe
    smoke_ms: float | None = None  # one inference on zeros
    probe_ms: float | None = None  # wall time of the whole probe (child start-up included)
    isolated: bool = True  # the probe ran in a child process

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, object]:
        data = dataclasses.asdict(self)
        data.update(ok=self.ok, path=str(self.path), loaded=str(self.loaded) if self.loaded else None,
                    problems=list(self.problems), notes=list(self.notes),
                    input_shape=list(self.input_shape) if self.input_shape else None)
        return data


def validate_model(path: str | Path, *, labels: str | Path | None = None, max_bytes: int | None = None,
                   expected_sha256: str | None = None, smoke: bool = True, in_process: bool = False,
                   timeout: float = DEFAULT_TIMEOUT, twin_dir: Path | None = None) -> ValidationReport:
    """Check ``path`` as a model to swap to; never raises for a bad file, never crashes the
    caller (the runtime runs in a child unless ``in_process``, for files already trusted).
    ``twin_dir``: where the CPU twin of an ``_edgetpu`` file is (default: beside it; a
    quarantined download's twin is in the store)."""
    path = Path(path)
    problems: list[str] = []
    notes: list[str] = []
    if not path.exists():
        return ValidationReport(path, (f"{path}: model file not found",), missing=True)
    if not path.is_file():
        return ValidationReport(path, (f"{path}: not a regular file",))
    size = path.stat().st_size
    too_big = max_bytes is not None and size > max_bytes
    if too_big:
        problems.append(f"{path}: {size} bytes, over the limit of {max_bytes} bytes")
    try:
        header, sha256, edgetpu = _scan(path)
    except OSError as exc:
        return ValidationReport(path, (f"{path}: cannot read: {exc.strerror or exc}",), size=size)
    flatbuffer = len(header) >= 8 and header[4:8] == _FLATBUFFER_ID
    if not flatbuffer:
        problems.append(f"{path}: not a TFLite model (no TFL3 flatbuffer identifier at bytes 4..8)")
    if expected_sha256 and sha256 != expected_sha256.strip().lower():
        problems.append(f"{path}: sha256 {sha256} does not match the expected {expected_sha256.strip().lower()}")
    report = ValidationReport(path, size=size, sha256=sha256, edgetpu=edgetpu)
    run_file = _runnable(path, edgetpu, problems, notes, twin_dir) if flatbuffer else None
    if run_file is not None and not too_big:
        start = time.perf_counter()
        result = probe_files([run_file], smoke=smoke, timeout=timeout, in_process=in_process)[run_file]
        probe_ms = round((time.perf_counter() - start) * 1000.0, 3)
        report = _with_probe(report, result, run_file, probe_ms, not in_process)
        if result.error:
            problems.append(result.error)
        elif result.classes is not None:
            report = dataclasses.replace(report, labels=_check_labels(path, run_file, labels, result.classes,
                                                                      problems))
    elif too_big:
        notes.append(f"{path}: not loaded: over the size limit")
    return dataclasses.replace(report, problems=tuple(problems), notes=tuple(notes))


def _scan(path: Path) -> tuple[bytes, str, bool]:
    """(first 8 bytes, sha256, contains the Edge TPU custom op), reading the file once in chunks."""
    digest = hashlib.sha256()
    header = b""
    edgetpu = False
    tail = b""
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            if len(header) < 8:
                header = (header + chunk)[:8]
            digest.update(chunk)
            edgetpu = edgetpu or EDGETPU_OP in tail + chunk
            tail = chunk[-len(EDGETPU_OP):]
    return header, digest.hexdigest(), edgetpu


def _runnable(path: Path, edgetpu: bool, problems: list[str], notes: list[str],
              twin_dir: Path | None = None) -> Path | None:
    """The file to load on the CPU: ``path``, or for a compiled file its CPU twin when present."""
    if not edgetpu:
        return path
    stem = path.stem
    folder = twin_dir or path.parent
    twin = folder / (logical_name(path) + path.suffix) if stem.endswith("_edgetpu") else None
    if twin is None or not twin.is_file():
        where = f"its CPU twin {twin.name} is not beside it" if twin else "it is not named x_edgetpu.tflite"
        problems.append(f"{path}: compiled for the Edge TPU (custom op 'edgetpu-custom-op') and {where}: "
                        "it can run only with an Edge TPU attached")
        return None
    notes.append(f"{path}: compiled for the Edge TPU; without one its CPU twin {twin.name} runs, "
                 "which is what was loaded and checked")
    return twin


def _with_probe(report: ValidationReport, result: ProbeResult, run_file: Path, probe_ms: float,
                isolated: bool) -> ValidationReport:
    return dataclasses.replace(report, loaded=run_file, input_shape=result.input_shape,
                               input_dtype=result.input_dtype, classes=result.classes, load_ms=result.load_ms,
                               smoke_ms=result.smoke_ms, probe_ms=probe_ms, isolated=isolated)


def _check_labels(path: Path, run_file: Path, labels: str | Path | None, classes: int,
                  problems: list[str]) -> str:
    """The label source; a problem when its count differs from the model's outputs."""
    found: list[str] | None
    where: Path | None
    try:
        if labels:
            source, found, where = "file", read_labels(labels), Path(labels)
        else:
            source, found, where = label_source(path, run_file)
    except EdgeClassifierError as exc:
        problems.append(str(exc))
        return "file" if labels else "sidecar"
    if found is not None and len(found) != classes:
        what = {"file": "labels file", "sidecar": "sidecar labels file", "embedded": "embedded labels"}[source]
        problems.append(f"{where}: {what} has {len(found)} labels but the model {path.name} has {classes} outputs")
    return source
