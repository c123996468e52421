"""The one exception tree of edge-classifier.

Every error the package raises on purpose is an :class:`EdgeClassifierError`. Each
class carries the sysexits code that the command line turns it into; only
``edge_classifier.cli`` makes that turn (library code never calls ``sys.exit``)::

    EdgeClassifierError                 exit 1
    ├── UsageError                      exit 2   bad command-line use
    ├── InputDataError                  exit 65  bad input data
    │   ├── ImageError                           an image that cannot be decoded
    │   ├── ModelError                           a model file that cannot be used
    │   │   ├── CustomOpError                    ... it needs an op the runtime lacks
    │   │   └── LabelsError                      ... its labels do not fit it
    │   ├── StoreError                           a model store name or download refused
    │   │                                        (unsafe name, checksum or size mismatch)
    │   └── LearnError                           a learned-head file that cannot be used
    │                                            (corrupt, wrong version, size or extractor),
    │                                            or a label to forget that is not there
    ├── InputMissingError               exit 66  a named input file does not exist
    ├── ServiceUnavailableError         exit 69  a required service is not there
    │   ├── RuntimeMissingError                  neither LiteRT nor tflite-runtime
    │   ├── AcceleratorError                     the Edge TPU cannot be used
    │   ├── AcceleratorFailed                    the accelerator's worker died, raised or hung
    │   └── DownloadError                        a model download failed in transit
    ├── SourceError                     exit 69  a frame source failed (transient: retried)
    └── ConfigError                     exit 78  the configuration is wrong

Third-party errors are wrapped where they enter (``raise ModelError(...) from exc``),
so the message always names the file or the key and says what is wrong with it.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "AcceleratorError",
    "AcceleratorFailed",
    "ConfigError",
    "CustomOpError",
    "DownloadError",
    "EdgeClassifierError",
    "ImageError",
    "InputDataError",
    "InputMissingError",
    "LabelsError",
    "LearnError",
    "ModelError",
    "RuntimeMissingError",
    "ServiceUnavailableError",
    "SourceError",
    "StoreError",
    "UsageError",
    "shown",
]


class EdgeClassifierError(Exception):
    """Base of every error edge-classifier raises on purpose."""

    exit_code = 1


class UsageError(EdgeClassifierError):
    exit_code = 2


class InputDataError(EdgeClassifierError):
    exit_code = 65


class ImageError(InputDataError):
    """An image file exists but cannot be decoded."""


class ModelError(InputDataError):
    """A model file is not a usable TFLite classification model."""


class CustomOpError(ModelError):
    """The model uses an op the runtime cannot resolve (e.g. ``edgetpu-custom-op``)."""

    def __init__(self, message: str, op: str) -> None:
        super().__init__(message)
        self.op = op


class LabelsError(ModelError):
    """A labels file cannot be read, or its count does not match the model."""


class StoreError(InputDataError):
    """A model store refuses a name or a file: a path outside the store, a hidden or
    non-``.tflite`` name, a download over its size limit or with the wrong sha256."""


class LearnError(InputDataError):
    """A learned-head file (few-shot classes) cannot be used: not JSON, another format
    version or embedding size, made with another extractor model; or a learned label that
    is not there. The message names the file or the label."""


class InputMissingError(EdgeClassifierError):
    exit_code = 66


class ServiceUnavailableError(EdgeClassifierError):
    exit_code = 69


class RuntimeMissingError(ServiceUnavailableError):
    """Neither ``ai_edge_litert`` nor ``tflite_runtime`` can be imported."""


class AcceleratorError(ServiceUnavailableError):
    """The Edge TPU was required but its delegate cannot be loaded."""


class AcceleratorFailed(ServiceUnavailableError):
    """The process running the model failed mid-flight: it died (abort, signal), its invoke
    raised, or it stopped answering. The worker stays dead until it is restarted."""


class DownloadError(ServiceUnavailableError):
    """A model download could not complete: unreachable server, HTTP error, a transfer
    cut short. Retrying later may succeed."""


class SourceError(EdgeClassifierError):
    """A frame source cannot be opened or read right now; the capture loop retries it."""

    exit_code = 69


class ConfigError(EdgeClassifierError):
    """One or more configuration problems, each as ``key.path: what is wrong``."""

    exit_code = 78

    def __init__(self, problems: Iterable[str], source: str = "") -> None:
        self.problems = tuple(problems)
        self.source = source
        where = f"{source}: " if source else ""
        if len(self.problems) == 1:
            text = f"{where}{self.problems[0]}"
        else:
            text = f"{where}{len(self.problems)} problems: " + "; ".join(self.problems)
        super().__init__(text)


def shown(value: object, limit: int = 200) -> str:
    """``repr(value)`` for an error message, cut to about ``limit`` characters: a refused
    10,000-character argument is named, not echoed whole."""
    text = repr(value)
    if len(text) <= limit:
        return text
    length = f" ({len(value)} characters)" if isinstance(value, str | bytes | list | dict) else ""
    return f"{text[:limit]}…{length}"
