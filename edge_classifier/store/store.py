"""The model store: a folder of ``.tflite`` files, named safely, listed with what each is.

Layout::

    models/
        mobilenet_v2_1.0_224_quant.tflite
        mobilenet_v2_1.0_224_quant_labels.txt    # optional sidecar labels (or _v2..._quant.txt)
        mobilenet_v1_0.25_128_quant_edgetpu.tflite
        mobilenet_v1_0.25_128_quant.tflite       # its CPU twin
        catalog.toml                             # optional: models `models pull` knows
        state.json                               # the daemon's active model (state.py)

Sidecar labels beside a model win over the labels embedded in it; ``x_edgetpu.tflite``
also takes the sidecar of its twin ``x``. Hidden files (``.x.partial`` downloads) are
never models.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from pathlib import Path

from edge_classifier.engine.labels import embedded_labels, read_labels
from edge_classifier.engine.model import ModelFile, logical_name
from edge_classifier.errors import EdgeClassifierError, InputMissingError, StoreError, shown
from edge_classifier.store.probe import ProbeResult
from edge_classifier.store.sandbox import DEFAULT_TIMEOUT, probe_files

__all__ = ["MODEL_SUFFIX", "ModelEntry", "label_source", "list_models", "resolve_name", "sidecar_labels"]

log = logging.getLogger(__name__)

MODEL_SUFFIX = ".tflite"
_OTHER_EXTENSION = re.compile(r"\.[A-Za-z]+$")  # ".txt", ".onnx"; not ".25_128_quant" in a model name


def resolve_name(store: str | Path, name: str, *, must_exist: bool = True) -> Path:
    """The file ``store/name[.tflite]``, when ``name`` safely names a model in the store.

    Refused (StoreError, naming the name and the reason): empty names, absolute paths, path
    separators or ``..``, hidden names, names of non-``.tflite`` files, and names whose file
    resolves (through symlinks) outside the store. A safe name with no file behind it is
    InputMissingError unless ``must_exist`` is false.
    """
    store = Path(store)

    def refuse(reason: str) -> StoreError:
        return StoreError(f"model name {shown(name)}: {reason} (model store {store})")

    if not name or not name.strip():
        raise refuse("empty name")
    if "\x00" in name:
        raise refuse("contains a NUL character")
    if len(name.encode("utf-8", "surrogatepass")) > 248:  # NAME_MAX is 255 bytes, ".tflite" may be added
        raise refuse(f"{len(name)} characters, too long for a file name (at most 248 bytes)")
    if os.path.isabs(name) or name.startswith(("/", "\\")):
        raise refuse("absolute paths are not allowed, give a file name inside the store")
    separators = {"/", "\\", os.sep, os.altsep or "/"}
    if ".." in re.split(r"[/\\]", name):
        raise refuse("'..' (path traversal) is not allowed")
    if any(sep in name for sep in separators):
        raise refuse("path separators are not allowed, give a file name inside the store")
    if name.startswith("."):
        raise refuse("hidden files are not models")
    if name.endswith(MODEL_SUFFIX):
        file_name = name
    elif _OTHER_EXTENSION.search(name) or (store / name).is_file():
        raise refuse(f"not a {MODEL_SUFFIX} model file")
    else:
        file_name = name + MODEL_SUFFIX
    candidate = store / file_name
    try:
        real_store = store.resolve(strict=True)
    except OSError as exc:
        raise InputMissingError(f"model store {store}: {exc.strerror or exc}") from exc
    real = candidate.resolve()
    if not real.is_relative_to(real_store):
        raise refuse(f"it resolves to {real}, outside the store")
    if must_exist and not candidate.is_file():
        if candidate.is_symlink():
            raise InputMissingError(f"model name {name!r}: {candidate} is a broken symlink")
        if candidate.exists():
            raise refuse(f"{candidate} is not a regular file")
        raise InputMissingError(f"model name {name!r}: no {file_name} in the model store {store}")
    return candidate


def sidecar_labels(model_path: str | Path) -> Path | None:
    """The labels file beside a model: ``name.txt`` or ``name_labels.txt``; for
    ``x_edgetpu.tflite`` also its twin's ``x.txt`` / ``x_labels.txt``."""
    path = Path(model_path)
    stems = [path.stem]
    logical = logical_name(path)
    if logical != path.stem:
        stems.append(logical)
    for stem in stems:
        for candidate in (path.with_name(f"{stem}.txt"), path.with_name(f"{stem}_labels.txt")):
            if candidate.is_file():
                return candidate
    return None


def label_source(model_path: Path, twin: Path | None = None) -> tuple[str, list[str] | None, Path | None]:
    """Where a model's labels would come from: ("sidecar" | "embedded" | "none", labels, file).

    The labels are None when the sidecar is unreadable (LabelsError/InputMissingError raised).
    """
    sidecar = sidecar_labels(model_path)
    if sidecar is not None:
        return "sidecar", read_labels(sidecar), sidecar
    found = embedded_labels(model_path)
    if found is None and twin is not None and twin != model_path and twin.is_file():
        found = embedded_labels(twin)
    if found is not None:
        return "embedded", found, model_path
    return "none", None, None


@dataclasses.dataclass(frozen=True, slots=True)
class ModelEntry:
    """One model file in the store, as ``models list`` shows it."""

    name: str  # the file name, e.g. "mobilenet_v2_1.0_224_quant.tflite"
    path: Path
    size: int
    sha256: str
    accelerator: str  # "cpu", or "edgetpu" for a file compiled for the Edge TPU
    twin: bool  # its CPU / Edge TPU twin is in the store too
    input_shape: tuple[int, ...] | None = None
    input_dtype: str | None = None
    classes: int | None = None
    labels: str = "none"  # "sidecar" | "embedded" | "none"
    active: bool = False
    error: str | None = None  # why it cannot be used (listed, not fatal)

    def as_dict(self) -> dict[str, object]:
        data = dataclasses.asdict(self)
        data["path"] = str(self.path)
        data["input_shape"] = list(self.input_shape) if self.input_shape else None
        return data


def list_models(store: str | Path, active: Path | None = None, *, in_process: bool = False,
                timeout: float = DEFAULT_TIMEOUT) -> list[ModelEntry]:
    """Every ``.tflite`` in the store, sorted by name, each loaded once (in a child process
    unless ``in_process``) to learn its input and classes. Files that do not load are listed
    with an ``error``. ``active`` marks the model in use (compared after resolving symlinks)."""
    store = Path(store)
    if not store.is_dir():
        raise InputMissingError(f"model store {store}: directory not found")
    files = sorted(p for p in store.iterdir()
                   if p.name.endswith(MODEL_SUFFIX) and not p.name.startswith(".") and p.is_file())
    inspected: dict[Path, ModelFile | EdgeClassifierError] = {}
    for path in files:
        try:
            inspected[path] = ModelFile.inspect(path)
        except EdgeClassifierError as exc:
            inspected[path] = exc
    runnable = {cpu for m in inspected.values() if isinstance(m, ModelFile) and (cpu := _cpu_file(m)) is not None}
    probes = probe_files(sorted(runnable), smoke=False, timeout=timeout, in_process=in_process)
    active_real = active.resolve() if active is not None else None
    return [_entry(path, inspected[path], probes, active_real) for path in files]


def _cpu_file(model: ModelFile) -> Path | None:
    """The file that runs on the CPU for ``model`` (itself, or its twin when present)."""
    twin = model.cpu_twin
    return twin if twin is not None and twin.is_file() else None


def _entry(path: Path, model: ModelFile | EdgeClassifierError, probes: dict[Path, ProbeResult],
           active: Path | None) -> ModelEntry:
    is_active = active is not None and path.resolve() == active
    if not isinstance(model, ModelFile):
        size = path.stat().st_size
        return ModelEntry(path.name, path, size, "", "cpu", False, active=is_active, error=str(model))
    twin_path = model.cpu_twin if model.edgetpu else model.edgetpu_twin
    twin = twin_path is not None and twin_path != path and twin_path.is_file()
    base = ModelEntry(path.name, path, model.size, model.sha256, "edgetpu" if model.edgetpu else "cpu", twin,
                      active=is_active)
    cpu = _cpu_file(model)
    if cpu is None:
        reason = f"its CPU twin {twin_path.name} is not in the store" if twin_path else "it has no CPU twin"
        return dataclasses.replace(base, error=f"{path}: compiled for the Edge TPU and {reason}: "
                                               "it runs only with an Edge TPU attached")
    result = probes[cpu]
    error = result.error
    try:
        source, labels, where = label_source(path, cpu)
    except EdgeClassifierError as exc:
        source, labels, where, error = "sidecar", None, None, error or str(exc)
    if error is None and labels is not None and result.classes is not None and len(labels) != result.classes:
        error = f"{where}: {source} labels count {len(labels)} but the model has {result.classes} outputs"
    return dataclasses.replace(base, input_shape=result.input_shape, input_dtype=result.input_dtype,
                               classes=result.classes, labels=source, error=error)
