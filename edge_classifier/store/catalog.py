"""The catalog: models ``models pull`` knows by name, each with its URL and sha256.

``catalog.toml``, one table per model (keys are model names; quote names with dots)::

    [models."mobilenet_v2_1.0_224_quant"]
    file = "mobilenet_v2_1.0_224_quant.tflite"            # the name it gets in the store
    url = "https://github.com/google-coral/test_data/raw/master/mobilenet_v2_1.0_224_quant.tflite"
    sha256 = "7aad0c74..."                                 # required: downloads are verified
    labels = "imagenet_labels.txt"                        # optional labels file ...
    labels_url = "https://.../imagenet_labels.txt"        # ... where it comes from
    labels_sha256 = "b8aaeb56..."                         # ... and its sum
    description = "ImageNet, 1001 classes"                # optional

Every problem is reported by key path (``models.x.sha256: ...``) in one ConfigError.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edge_classifier.errors import ConfigError, InputMissingError

__all__ = ["CATALOG_FILE", "URL_SCHEMES", "CatalogEntry", "check_sha256", "check_url", "load_catalog"]

CATALOG_FILE = "catalog.toml"
URL_SCHEMES = ("http", "https", "file")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")
_KEYS = {"file", "url", "sha256", "labels", "labels_url", "labels_sha256", "description"}


@dataclasses.dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One downloadable model (and optionally its labels file)."""

    name: str
    file: str
    url: str
    sha256: str
    labels: str = ""
    labels_url: str = ""
    labels_sha256: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        problems = _entry_problems(dataclasses.asdict(self))
        if problems:
            raise ValueError(f"catalog entry {self.name!r}: " + "; ".join(problems))


def check_sha256(value: object) -> str | None:
    """Why ``value`` is not a sha256 hex digest (64 lower-case hex digits), or None."""
    if isinstance(value, str) and _SHA256.match(value):
        return None
    return f"must be 64 lower-case hex digits, not {value!r}"


def check_url(value: object) -> str | None:
    """Why ``value`` is not a URL the store downloads from (http, https, file), or None."""
    if not isinstance(value, str) or not value:
        return f"must be a URL, not {value!r}"
    parts = urlsplit(value)
    if parts.scheme not in URL_SCHEMES:
        return f"must be an {', '.join(s + '://' for s in URL_SCHEMES)} URL, not {value!r}"
    if parts.scheme != "file" and not parts.netloc:
        return f"has no host: {value!r}"
    if not parts.path or parts.path.endswith("/"):
        return f"must name a file: {value!r}"
    return None


def _check_file(value: object, suffix: str) -> str | None:
    if not isinstance(value, str) or not _FILE_NAME.match(value) or ".." in value:
        return f"must be a plain file name (letters, digits, '_', '.', '-'), not {value!r}"
    if not value.endswith(suffix):
        return f"must end with {suffix}, not {value!r}"
    return None


def _entry_problems(entry: dict[str, str]) -> list[str]:
    """Every problem with an entry's fields, each as ``key: what is wrong``."""
    checks = [("file", _check_file(entry["file"], ".tflite")), ("url", check_url(entry["url"])),
              ("sha256", check_sha256(entry["sha256"]))]
    if entry["labels"] or entry["labels_url"] or entry["labels_sha256"]:
        checks += [("labels", _check_file(entry["labels"], ".txt")), ("labels_url", check_url(entry["labels_url"])),
                   ("labels_sha256", check_sha256(entry["labels_sha256"]))]
    return [f"{key}: {problem}" for key, problem in checks if problem]


def load_catalog(path: str | Path) -> dict[str, CatalogEntry]:
    """The entries of a catalog file by name; ConfigError listing every bad key by its path."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError as exc:
        raise InputMissingError(f"{path}: catalog file not found") from exc
    except OSError as exc:
        raise ConfigError([f"cannot read: {exc.strerror or exc}"], source=str(path)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"], source=str(path)) from exc
    return parse_catalog(data, source=str(path))


def parse_catalog(data: dict[str, Any], source: str = "") -> dict[str, CatalogEntry]:
    """The entries of a parsed catalog table (see :func:`load_catalog`)."""
    problems = [f"{key}: unknown key (expected [models.NAME] tables)" for key in data if key != "models"]
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise ConfigError([*problems, "models: must be a table of [models.NAME] tables"], source=source)
    entries: dict[str, CatalogEntry] = {}
    files: dict[str, str] = {}
    for name, table in models.items():
        where = f"models.{name}"
        if not isinstance(table, dict):
            problems.append(f"{where}: must be a table, not {type(table).__name__}")
            continue
        problems += [f"{where}.{key}: unknown key" for key in table if key not in _KEYS]
        for key in ("file", "url", "sha256"):
            if key not in table:
                problems.append(f"{where}.{key}: missing")
        values = {key: table[key] for key in _KEYS if key in table}
        wrong = [key for key, value in values.items() if not isinstance(value, str)]
        problems += [f"{where}.{key}: must be a string, not {type(values[key]).__name__}" for key in wrong]
        if wrong or any(key not in table for key in ("file", "url", "sha256")):
            continue
        fields = {f.name: values.get(f.name, "") for f in dataclasses.fields(CatalogEntry) if f.name != "name"}
        own = _entry_problems(fields)
        if own:
            problems += [f"{where}.{problem}" for problem in own]
            continue
        entry = CatalogEntry(name=name, **fields)
        if entry.file in files:
            problems.append(f"{where}.file: {entry.file} is also the file of models.{files[entry.file]}")
            continue
        files[entry.file] = name
        entries[name] = entry
    if problems:
        raise ConfigError(problems, source=source)
    return entries

