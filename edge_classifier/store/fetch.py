"""Downloads into the model store: streamed, size-capped, sha256-verified, atomic.

The bytes go to a hidden temporary file beside the target (``.<file>.<random>.partial``),
are hashed while they stream, and are checked against the size cap as they arrive; only a
complete file with the expected sha256 is fsynced and renamed into place, and the folder is
fsynced. On every error the temporary file is removed: a store never holds a partial model.

Only ``http://``, ``https://`` and ``file://`` URLs are fetched (redirects too: urllib's FTP
and data handlers are left out of the opener).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from edge_classifier.engine.model import logical_name
from edge_classifier.errors import DownloadError, InputMissingError, StoreError
from edge_classifier.store.catalog import CatalogEntry, check_sha256, check_url
from edge_classifier.store.files import fsync_dir, temporary_beside
from edge_classifier.store.store import resolve_name

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_TIMEOUT", "fetch_url", "file_sha256", "mirror_url", "pull"]

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 256 * 1024 * 1024  # an Edge TPU classifier is a few MB; a detector tens
DEFAULT_TIMEOUT = 60.0  # seconds without progress (connect, or between two reads)
_CHUNK = 64 * 1024
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")

_OPENER = urllib.request.OpenerDirector()
for _handler in (urllib.request.ProxyHandler(), urllib.request.HTTPHandler(), urllib.request.HTTPSHandler(),
                 urllib.request.HTTPRedirectHandler(), urllib.request.HTTPErrorProcessor(),
                 urllib.request.HTTPDefaultErrorHandler(), urllib.request.FileHandler(),
                 urllib.request.UnknownHandler()):
    _OPENER.add_handler(_handler)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_url(url: str, dest_dir: str | Path, *, sha256: str, max_bytes: int = DEFAULT_MAX_BYTES,
              timeout: float = DEFAULT_TIMEOUT, name: str | None = None) -> Path:
    """Download ``url`` to ``dest_dir/name`` (default: the URL's file name), verified.

    StoreError: a bad URL, sha256 or name, more than ``max_bytes``, a sha256 mismatch (naming
    both sums). DownloadError: the server is unreachable, answers an HTTP error or the transfer
    is cut short. InputMissingError: a ``file://`` URL or ``dest_dir`` that does not exist.
    """
    dest_dir = Path(dest_dir)
    problem = check_url(url)
    if problem:
        raise StoreError(f"download URL {problem}")
    expected = sha256.strip().lower() if isinstance(sha256, str) else sha256
    problem = check_sha256(expected)
    if problem:
        raise StoreError(f"{url}: expected sha256 {problem}")
    file_name = name or unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    if not _SAFE_NAME.match(file_name) or ".." in file_name:
        raise StoreError(f"{url}: {file_name!r} is not a safe file name to store")
    target = dest_dir / file_name
    try:
        temporary = temporary_beside(target, ".partial")
    except FileNotFoundError as exc:
        raise InputMissingError(f"{dest_dir}: download folder not found") from exc
    except OSError as exc:
        raise StoreError(f"{dest_dir}: cannot write a download there: {exc.strerror or exc}") from exc
    try:
        actual, size = _download(url, temporary, max_bytes, timeout)
        if actual != expected:
            raise StoreError(f"{url}: sha256 mismatch: expected {expected}, got {actual} ({size} bytes); "
                             "nothing was stored")
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_dir(dest_dir)
    log.info("downloaded %s to %s (%d bytes, sha256 %s)", url, target, size, actual)
    return target


def _download(url: str, temporary: Path, max_bytes: int, timeout: float) -> tuple[str, int]:
    """Stream ``url`` into ``temporary`` (fsynced): (sha256, size)."""
    try:
        response = _OPENER.open(url, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, FileNotFoundError):
            raise InputMissingError(f"{url}: file not found") from exc
        raise DownloadError(f"{url}: cannot download: {exc.reason}") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise DownloadError(f"{url}: cannot download: {exc}") from exc
    digest = hashlib.sha256()
    total = 0
    with response, temporary.open("wb") as out:
        length = _content_length(response.headers)
        if length is not None and length > max_bytes:
            raise StoreError(f"{url}: {length} bytes announced, over the limit of {max_bytes} bytes")
        while True:
            try:
                chunk = response.read(_CHUNK)
            except (OSError, http.client.HTTPException) as exc:
                raise DownloadError(f"{url}: transfer failed after {total} bytes: {exc}") from exc
            if not chunk:
                break
            total += len(chunk)
            if total > max_bytes:
                raise StoreError(f"{url}: more than the limit of {max_bytes} bytes; download stopped")
            digest.update(chunk)
            out.write(chunk)
        if length is not None and total != length:
            raise DownloadError(f"{url}: transfer cut short: {total} of {length} bytes")
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest(), total


def _content_length(headers: Mapping[str, str]) -> int | None:
    value = headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def mirror_url(mirror: str, file_name: str) -> str:
    """Where ``file_name`` is in a mirror: a local folder (``mirror/file``) or a base URL."""
    if "://" in mirror:
        return f"{mirror.rstrip('/')}/{quote(file_name)}"
    folder = Path(mirror)
    if not folder.is_dir():
        raise InputMissingError(f"mirror {mirror}: directory not found")
    return (folder.resolve() / file_name).as_uri()


def pull(name: str, store: str | Path, *, catalog: Mapping[str, CatalogEntry], mirror: str | None = None,
         max_bytes: int = DEFAULT_MAX_BYTES, timeout: float = DEFAULT_TIMEOUT, force: bool = False) -> Path:
    """Download the catalog's model ``name`` (and its labels, as the model's sidecar
    ``<name>_labels.txt``) into ``store``; the stored model's path.

    A file already there with the catalog's sha256 is kept; one with another sum is an error
    unless ``force``.
    """
    store = Path(store)
    entry = catalog.get(name) or catalog.get(name.removesuffix(".tflite"))
    if entry is None:
        entry = next((e for e in catalog.values() if e.file == name), None)
    if entry is None:
        known = ", ".join(sorted(catalog)) or "none"
        raise StoreError(f"model {name!r} is not in the catalog (known: {known})")
    target = resolve_name(store, entry.file, must_exist=False)
    url = mirror_url(mirror, entry.file) if mirror else entry.url
    _fetch_unless_present(url, target, entry.sha256, max_bytes, timeout, force)
    if entry.labels:
        labels_target = store / f"{logical_name(target)}_labels.txt"
        labels_url = mirror_url(mirror, entry.labels) if mirror else entry.labels_url
        _fetch_unless_present(labels_url, labels_target, entry.labels_sha256, max_bytes, timeout, force)
    return target


def _fetch_unless_present(url: str, target: Path, sha256: str, max_bytes: int, timeout: float, force: bool) -> None:
    if target.is_file() and not force:
        actual = file_sha256(target)
        if actual == sha256:
            log.info("%s is already in the store with the expected sha256", target)
            return
        raise StoreError(f"{target}: already exists with sha256 {actual}, not the catalog's {sha256}; "
                         "use --force to replace it")
    fetch_url(url, target.parent, sha256=sha256, max_bytes=max_bytes, timeout=timeout, name=target.name)
