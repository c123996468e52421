"""A model file on disk: its name, checksum, Edge TPU compilation and CPU/TPU twins.

Coral's convention: ``x_edgetpu.tflite`` is ``x.tflite`` compiled for the Edge TPU; the
two are twins, and the CPU one stands in when no TPU is there.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from edge_classifier.errors import InputMissingError, ModelError

__all__ = ["EDGETPU_OP", "ModelFile", "logical_name"]

EDGETPU_OP = b"edgetpu-custom-op"
_SUFFIX = "_edgetpu"
_FLATBUFFER_ID = b"TFL3"  # the file identifier at bytes 4..8 of every TFLite flatbuffer


def logical_name(path: Path) -> str:
    """The model's name without its extension and without the ``_edgetpu`` suffix."""
    stem = path.stem
    return stem[: -len(_SUFFIX)] if stem.endswith(_SUFFIX) else stem


@dataclasses.dataclass(frozen=True, slots=True)
class ModelFile:
    """What can be learnt about a model file without running it."""

    path: Path
    sha256: str
    size: int
    edgetpu: bool  # compiled for the Edge TPU (contains edgetpu-custom-op)

    @classmethod
    def inspect(cls, path: str | Path) -> ModelFile:
        path = Path(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise InputMissingError(f"{path}: model file not found") from exc
        except IsADirectoryError as exc:
            raise ModelError(f"{path}: is a directory, not a model file") from exc
        except OSError as exc:
            raise ModelError(f"{path}: cannot read model file: {exc.strerror or exc}") from exc
        if len(data) < 8 or data[4:8] != _FLATBUFFER_ID:
            raise ModelError(f"{path}: not a TFLite model (no TFL3 flatbuffer header)")
        return cls(path, hashlib.sha256(data).hexdigest(), len(data), EDGETPU_OP in data)

    @property
    def name(self) -> str:
        return logical_name(self.path)

    @property
    def cpu_twin(self) -> Path | None:
        """Where the CPU version of this model would be: itself when not compiled,
        ``x.tflite`` for ``x_edgetpu.tflite``, None for a compiled file not named so."""
        if not self.edgetpu:
            return self.path
        stem = self.path.stem
        if not stem.endswith(_SUFFIX):
            return None
        return self.path.with_name(stem[: -len(_SUFFIX)] + self.path.suffix)

    @property
    def edgetpu_twin(self) -> Path:
        """Where the Edge TPU version of this model would be (itself when compiled)."""
        if self.edgetpu:
            return self.path
        return self.path.with_name(f"{self.path.stem}{_SUFFIX}{self.path.suffix}")
