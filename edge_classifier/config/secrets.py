"""A password from a file, a systemd credential or the config itself (MQTT and the web view)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from edge_classifier.errors import ConfigError

__all__ = ["read_secret"]


def read_secret(password_file: str, password: str, *, credential: str, key: str,
                environ: Mapping[str, str]) -> str | None:
    """``password_file``, else the systemd credential ``credential``, else ``password``.

    ``key`` names ``password_file`` in errors (``mqtt.password_file``). A trailing newline is
    ignored and an empty password means none. Never logged.
    """
    path: Path | None = None
    if password_file:
        path = Path(password_file)
    elif environ.get("CREDENTIALS_DIRECTORY"):
        candidate = Path(environ["CREDENTIALS_DIRECTORY"]) / credential
        if candidate.is_file():
            path, key = candidate, "$CREDENTIALS_DIRECTORY/" + credential
    if path is None:
        return password or None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{key}: cannot read {path}: {getattr(exc, 'strerror', None) or exc}"]) from exc
    return text.rstrip("\r\n") or None
