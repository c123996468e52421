"""One TFLite interpreter on one model, on the CPU or the Edge TPU.

``Engine.open`` chooses what to run from the model file and ``accelerator``:

- ``cpu``: the CPU model (``x.tflite`` for a given ``x_edgetpu.tflite``);
- ``edgetpu``: the compiled model with the Edge TPU delegate, or AcceleratorError (exit 69);
- ``auto``: the compiled model on the TPU when the delegate loads, else its CPU twin,
  with the reason logged and kept in ``ModelInfo.fallback``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edge_classifier.engine.edgetpu import AcceleratorUnavailable, load_edgetpu_delegate
from edge_classifier.engine.model import ModelFile
from edge_classifier.engine.penultimate import read_model, with_embedding
from edge_classifier.engine.runtime import Runtime, load_runtime
from edge_classifier.errors import AcceleratorError, ConfigError, CustomOpError, ModelError

__all__ = ["Engine", "EngineLike", "ModelInfo", "TensorInfo"]

log = logging.getLogger(__name__)

_CUSTOM_OP = re.compile(r"unresolved custom op: ([\w.-]+)")
_SUPPORTED_INPUTS = (np.uint8, np.int8, np.float32)


@dataclasses.dataclass(frozen=True, slots=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: type
    scale: float
    zero_point: int


@dataclasses.dataclass(frozen=True, slots=True)
class ModelInfo:
    """What is running: reported in every result and in status."""

    name: str  # the logical name: file stem without `_edgetpu`
    path: Path  # the file actually loaded
    sha256: str
    accelerator: str  # "cpu" | "edgetpu"
    requested: Path  # the file that was asked for
    fallback: str | None  # why the Edge TPU is not used, when it was wanted
    runtime: str  # e.g. "ai-edge-litert 2.3.0"
    input: TensorInfo
    output: TensorInfo
    threads: int

    @property
    def classes(self) -> int:
        return int(np.prod(self.output.shape))

    def as_payload(self) -> dict[str, str]:
        return {"name": self.name, "sha256": self.sha256, "accelerator": self.accelerator}


class EngineLike(Protocol):
    """What a classifier needs of an engine: the in-process ``Engine`` or the supervised
    ``WorkerEngine`` (the interpreter in a child process)."""

    @property
    def info(self) -> ModelInfo: ...
    def invoke(self, tensor: np.ndarray) -> np.ndarray: ...
    def timed_invoke(self, tensor: np.ndarray) -> tuple[np.ndarray, float]: ...
    def close(self) -> None: ...


class Engine:
    """An allocated interpreter; ``invoke`` maps one input tensor to one raw output.

    Opened with ``embedding``, a CPU model also yields its penultimate tensor from the same
    invoke (``embedding()``, described by ``embedding_info``); on the Edge TPU, or for a model
    whose last layers cannot be found, ``embedding_info`` is None."""

    def __init__(self, interpreter: Any, info: ModelInfo, delegate: Any = None, embedding: bool = False) -> None:
        self._interpreter = interpreter
        self._delegate = delegate  # kept alive as long as the interpreter uses it
        self.info = info
        self._input_index = interpreter.get_input_details()[0]["index"]
        outputs = interpreter.get_output_details()
        self._output_index = outputs[0]["index"]
        exposed = embedding and len(outputs) > 1  # output 1 is the one with_embedding appended
        self._embedding_index = outputs[1]["index"] if exposed else None
        self.embedding_info = _tensor_info(outputs[1]) if exposed else None
        self.embedding_refused: str | None = None  # why ``embedding`` was asked for and is not there

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        accelerator: str = "auto",
        device: str = "",
        threads: int = 1,
        runtime: Runtime | None = None,
        embedding: bool = False,
    ) -> Engine:
        runtime = runtime or load_runtime()
        requested = ModelFile.inspect(path)
        chosen, delegate, fallback = _choose(requested, accelerator, device, runtime)
        content, refused = _with_embedding(chosen) if embedding and delegate is None else (None, None)
        interpreter = _make_interpreter(runtime, chosen.path, threads, delegate, content)
        info = ModelInfo(
            name=chosen.name,
            path=chosen.path,
            sha256=chosen.sha256,
            accelerator="edgetpu" if delegate is not None else "cpu",
            requested=requested.path,
            fallback=fallback,
            runtime=f"{runtime.name} {runtime.version}",
            input=_tensor_info(interpreter.get_input_details()[0]),
            output=_tensor_info(interpreter.get_output_details()[0]),
            threads=threads,
        )
        _check_shapes(info)
        engine = cls(interpreter, info, delegate, embedding=content is not None)
        if embedding and engine.embedding_info is None:
            engine.embedding_refused = refused or f"{chosen.path}: runs on the Edge TPU, where its penultimate " \
                                                  "layer is inside the compiled op"
        return engine

    def invoke(self, tensor: np.ndarray) -> np.ndarray:
        """Run the model on one input tensor; returns a copy of the raw output."""
        self._interpreter.set_tensor(self._input_index, tensor)
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output_index)

    def embedding(self) -> np.ndarray | None:
        """The raw penultimate tensor of the last ``invoke`` (a copy), None when not exposed."""
        if self._embedding_index is None:
            return None
        result: np.ndarray = self._interpreter.get_tensor(self._embedding_index)
        return result

    def timed_invoke(self, tensor: np.ndarray) -> tuple[np.ndarray, float]:
        """``invoke`` plus its duration in milliseconds."""
        start = time.perf_counter()
        output = self.invoke(tensor)
        return output, (time.perf_counter() - start) * 1000.0

    def close(self) -> None:
        # The interpreter must go before the delegate it was built with.
        self._interpreter = None
        self._delegate = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _choose(requested: ModelFile, accelerator: str, device: str, runtime: Runtime) -> tuple[ModelFile, Any, str | None]:
    """Which file to run and with which delegate: (model, delegate or None, fallback reason)."""
    if accelerator not in ("auto", "cpu", "edgetpu"):
        raise ConfigError([f"model.accelerator: must be 'auto', 'cpu' or 'edgetpu', not {accelerator!r}"])
    tpu_file = requested if requested.edgetpu else _twin(requested.edgetpu_twin)
    cpu_path = requested.cpu_twin
    if accelerator == "cpu" or tpu_file is None:
        if accelerator == "edgetpu":
            raise ConfigError([
                f"model.accelerator: 'edgetpu' needs a model compiled for the Edge TPU, but "
                f"{requested.path} is not and {requested.edgetpu_twin.name} is not beside it"
            ])
        return _cpu_model(requested, cpu_path, "model.accelerator = 'cpu'"), None, None
    try:
        delegate = load_edgetpu_delegate(runtime, device)
    except AcceleratorUnavailable as exc:
        reason = str(exc)
        if accelerator == "edgetpu":
            raise AcceleratorError(
                f"{tpu_file.path}: model.accelerator = 'edgetpu' but {reason}; "
                "set model.accelerator = 'auto' to fall back to the CPU"
            ) from None
        cpu = _cpu_model(requested, cpu_path, f"the Edge TPU is unavailable: {reason}")
        # Falling back from a requested TPU model is worth a warning; not finding a TPU
        # for a CPU model that merely has a compiled twin is routine.
        level = logging.WARNING if requested.edgetpu else logging.INFO
        log.log(level, "Edge TPU unavailable, running %s on the CPU: %s", cpu.path.name, reason)
        return cpu, None, reason
    return tpu_file, delegate, None


def _twin(path: Path) -> ModelFile | None:
    return ModelFile.inspect(path) if path.is_file() else None


def _cpu_model(requested: ModelFile, cpu_path: Path | None, why: str) -> ModelFile:
    if cpu_path == requested.path:
        return requested
    if cpu_path is None or not cpu_path.is_file():
        twin = f" and its CPU twin {cpu_path.name} is not beside it" if cpu_path else " and has no CPU twin"
        raise AcceleratorError(f"{requested.path}: compiled for the Edge TPU{twin}; {why}")
    return ModelFile.inspect(cpu_path)


@functools.lru_cache(maxsize=2)
def _rewritten(path: str, sha256: str) -> bytes:
    # One copy of the rewritten model per file, shared by every interpreter built from it
    # (the runtime reads the buffer in place). Keyed by sha256: a replaced file is read again.
    return with_embedding(read_model(Path(path)), path)[0]


def _with_embedding(chosen: ModelFile) -> tuple[bytes | None, str | None]:
    """(the CPU model's bytes with its penultimate tensor as output 1, None), or (None, why
    not) when the model is not a plain classifier whose last layer can be found."""
    try:
        return _rewritten(str(chosen.path), chosen.sha256), None
    except ModelError as exc:
        # Not an error by itself: the model classifies as it is; the caller decides (the
        # learning embedder raises it with what to do, the daemon's engines make do without).
        log.info("%s", exc)
        return None, str(exc)
    except OSError as exc:
        raise ModelError(f"{chosen.path}: cannot read the model: {exc.strerror or exc}") from exc


def _make_interpreter(runtime: Runtime, path: Path, threads: int, delegate: Any, content: bytes | None = None) -> Any:
    delegates = [delegate] if delegate is not None else None
    source = {"model_content": content} if content is not None else {"model_path": str(path)}
    try:
        interpreter = runtime.Interpreter(**source, num_threads=threads, experimental_delegates=delegates)
        interpreter.allocate_tensors()
    except ValueError as exc:
        raise ModelError(f"{path}: not a valid TFLite model ({_first_line(exc)})") from exc
    except RuntimeError as exc:
        match = _CUSTOM_OP.search(str(exc))
        if match:
            op = match.group(1).rstrip(".")
            hint = " (it is compiled for the Edge TPU)" if op == "edgetpu-custom-op" else ""
            message = f"{path}: uses the custom op '{op}', which the runtime cannot resolve{hint}"
            raise CustomOpError(message, op) from exc
        raise ModelError(f"{path}: the runtime cannot load this model ({_first_line(exc)})") from exc
    return interpreter


def _tensor_info(details: dict[str, Any]) -> TensorInfo:
    scale, zero_point = details.get("quantization", (0.0, 0))
    return TensorInfo(tuple(int(d) for d in details["shape"]), details["dtype"], float(scale), int(zero_point))


def _check_shapes(info: ModelInfo) -> None:
    shape = info.input.shape
    if len(shape) != 4 or shape[0] != 1 or shape[3] != 3:
        raise ModelError(f"{info.path}: input shape {list(shape)} is not an image (expected [1, height, width, 3])")
    if info.input.dtype not in _SUPPORTED_INPUTS:
        raise ModelError(f"{info.path}: input type {np.dtype(info.input.dtype).name} is not supported "
                         "(expected uint8, int8 or float32)")
    out = info.output.shape
    if not out or out[0] != 1 or int(np.prod(out)) < 1:
        raise ModelError(f"{info.path}: output shape {list(out)} is not one score vector")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
