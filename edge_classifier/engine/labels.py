"""Class labels: from a labels file in either common format, or embedded in the model.

Formats of a labels file:

- numbered: every non-blank line is ``<id><spaces or ':'><label>`` (``0  background``,
  ``0:cat``); ids may skip, and a missing id is labelled by its number;
- plain: one label a line, the line number (from 0) is the class id.

Embedded labels: TFLite models with metadata carry their labels file as a ZIP archive
appended to the flatbuffer, so ``zipfile`` finds it at the end of the .tflite file.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from edge_classifier.errors import InputMissingError, LabelsError

__all__ = ["embedded_labels", "parse_labels", "read_labels"]

_NUMBERED = re.compile(r"^\s*(\d+)(?:\s*:\s*|\s+)(.*?)\s*$")


def parse_labels(text: str) -> list[str]:
    """Labels indexed by class id, from the text of a labels file (either format)."""
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    content = [line for line in lines if line.strip()]
    matches = [_NUMBERED.match(line) for line in content]
    if content and all(matches):
        by_id: dict[int, str] = {}
        for match in matches:
            assert match is not None
            class_id = int(match.group(1))
            if class_id in by_id:
                raise ValueError(f"class id {class_id} appears twice")
            by_id[class_id] = match.group(2)
        return [by_id.get(i, str(i)) for i in range(max(by_id) + 1)]
    return [line.strip() for line in lines]


def read_labels(path: str | Path) -> list[str]:
    """Labels from a labels file; LabelsError (naming the file) when it is unusable."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise InputMissingError(f"{path}: labels file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelsError(f"{path}: cannot read labels file: {exc}") from exc
    try:
        labels = parse_labels(text)
    except ValueError as exc:
        raise LabelsError(f"{path}: {exc}") from exc
    if not labels:
        raise LabelsError(f"{path}: labels file is empty")
    return labels


def embedded_labels(model_path: str | Path) -> list[str] | None:
    """The labels a model carries in its metadata archive, or None when it has none."""
    try:
        with zipfile.ZipFile(model_path) as archive:
            names = [n for n in archive.namelist() if n.lower().endswith(".txt")]
            if not names:
                return None
            # Prefer a file that says it holds labels (metadata may attach other files).
            names.sort(key=lambda n: ("label" not in n.lower(), n))
            text = archive.read(names[0]).decode("utf-8-sig")
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError, KeyError):
        return None
    try:
        labels = parse_labels(text)
    except ValueError:
        return None
    return labels or None
