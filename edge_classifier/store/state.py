"""What the daemon remembers across restarts: the active model, in a small JSON file.

The file lives in the model store, ``<model.dir>/state.json`` (:func:`state_path`): the
store is already the one folder the daemon must be able to write (``models pull``), and the
state describes the store's contents. Layout::

    {"model": {"path": "/var/lib/edge-classifier/models/x.tflite", "sha256": "..."}}

A missing file is an empty state; a corrupt one is an empty state and a warning (the daemon
then starts on the configured model). Saving is atomic: a crash leaves the old state or the
new one.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from edge_classifier.errors import StoreError
from edge_classifier.store.files import atomic_write_bytes

__all__ = ["MODEL_KEY", "STATE_FILE", "StateFile", "state_path"]

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
MODEL_KEY = "model"


def state_path(store: str | Path) -> Path:
    """Where the state of the daemon using the model store ``store`` is kept."""
    return Path(store) / STATE_FILE


class StateFile:
    """A JSON object on disk, loaded forgivingly and saved atomically."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> dict[str, Any]:
        """The saved state; ``{}`` when there is none or it is unreadable (with a warning)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("state file %s cannot be read, starting without it: %s", self.path, exc)
            return {}
        try:
            data = json.loads(text)
        except ValueError as exc:
            log.warning("state file %s is corrupt, starting without it: %s", self.path, exc)
            return {}
        if not isinstance(data, dict):
            log.warning("state file %s holds %s, not an object; starting without it",
                        self.path, type(data).__name__)
            return {}
        return data

    def save(self, state: dict[str, Any]) -> None:
        """Replace the saved state (tmp file, fsync, rename, folder fsync)."""
        try:
            data = json.dumps(state, indent=2, sort_keys=True).encode("utf-8") + b"\n"
        except (TypeError, ValueError) as exc:
            raise StoreError(f"{self.path}: state cannot be saved as JSON: {exc}") from exc
        try:
            # The store's folder is made on demand, as a download makes it (model.dir may be new).
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.path, data)
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot save state: {exc.strerror or exc}") from exc

    def active_model(self) -> tuple[Path, str] | None:
        """The remembered active model as (path, sha256), or None."""
        entry = self.load().get(MODEL_KEY)
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or not entry["path"]:
            return None
        sha256 = entry.get("sha256")
        return Path(entry["path"]), sha256 if isinstance(sha256, str) else ""

    def remember_model(self, path: str | Path, sha256: str) -> None:
        """Record ``path`` as the active model, keeping the rest of the state."""
        state = self.load()
        state[MODEL_KEY] = {"path": str(path), "sha256": sha256}
        self.save(state)
