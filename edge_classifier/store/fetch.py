"""Downloads into the model store: quarantined, streamed, capped, sha256-verified, atomic.

The bytes go to a quarantine folder OUTSIDE the store (by default ``.<store>.downloads``
beside it, so a rename into the store is atomic) as a hidden ``.<file>.<random>.partial``,
flock-ed while written (``files.sweep`` removes one whose writer died). They are hashed
and counted as they stream: over ``max_bytes`` stops at once, so is a transfer past its
overall ``deadline`` or slower than ``min_rate`` bytes/s over a 10 s window. A complete file
with the expected sha256 is renamed to its final name, still in quarantine; the caller
validates it there and :func:`admit` moves it into the store, never over a file in use
(``protected``), a symlink or a non-model. On every error the quarantined file is removed.

Only ``http://``, ``https://`` and ``file://`` URLs are fetched (redirects too: urllib's FTP
and data handlers are left out of the opener). ``file://`` is the owner's (``models pull
--mirror DIR``); the daemon passes ``allow_files`` as the one folder ``model.file_urls``
allows, or False. A mismatch on a local file never tells its sha256 or size.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, unquote, urlsplit

from edge_classifier.engine.model import logical_name
from edge_classifier.errors import DownloadError, InputMissingError, StoreError
from edge_classifier.store.catalog import CatalogEntry, check_sha256, check_url
from edge_classifier.store.files import FILE_MODE, file_sha256, fsync_dir, locked_temporary
from edge_classifier.store.store import resolve_name

__all__ = ["DEFAULT_DEADLINE", "DEFAULT_MAX_BYTES", "DEFAULT_MIN_RATE", "DEFAULT_TIMEOUT", "admit", "download",
           "fetch_url", "file_sha256", "mirror_url", "pull", "quarantine_dir"]

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 256 * 1024 * 1024  # an Edge TPU classifier is a few MB; a detector tens
DEFAULT_TIMEOUT = 60.0  # seconds without progress (connect, or between two reads)
DEFAULT_DEADLINE = 600.0  # seconds for a whole download
DEFAULT_MIN_RATE = 1024  # bytes per second, over each window of RATE_WINDOW seconds
RATE_WINDOW = 10.0
MAX_NAME = 255  # bytes in a file name (NAME_MAX on Linux filesystems)
_CHUNK = 64 * 1024
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")


@functools.cache
def _opener() -> urllib.request.OpenerDirector:
    """Made on the first download, not at import: its HTTPS handler loads the system's CA
    bundle, which took ~0.4 s of the daemon's start-up under emulation (a slow Pi too)."""
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.HTTPHandler(), urllib.request.HTTPSHandler(),
                    urllib.request.HTTPRedirectHandler(), urllib.request.HTTPErrorProcessor(),
                    urllib.request.HTTPDefaultErrorHandler(), urllib.request.FileHandler(),
                    urllib.request.UnknownHandler()):
        opener.add_handler(handler)
    return opener


def quarantine_dir(store: Path, configured: str = "") -> Path:
    """Where downloads for ``store`` wait to be validated: ``configured``, else the hidden
    ``.<store>.downloads`` beside the store (same filesystem: the final move is a rename)."""
    if configured:
        return Path(configured)
    store = Path(store)
    return store.resolve().parent / f".{store.resolve().name}.downloads"


def fetch_url(url: str, dest_dir: str | Path, *, sha256: str, max_bytes: int = DEFAULT_MAX_BYTES,
              timeout: float = DEFAULT_TIMEOUT, name: str | None = None, deadline: float = DEFAULT_DEADLINE,
              min_rate: int = DEFAULT_MIN_RATE, allow_files: bool | Path = True,
              quarantine: Path | None = None, protected: Iterable[Path] = ()) -> Path:
    """Download ``url`` into the store ``dest_dir`` as ``name`` (default: the URL's file
    name), verified: :func:`download` then :func:`admit` (no model validation in between)."""
    dest_dir = Path(dest_dir)
    if not dest_dir.is_dir():
        raise InputMissingError(f"{dest_dir}: download folder not found")
    held = download(url, quarantine or quarantine_dir(dest_dir), sha256=sha256, max_bytes=max_bytes,
                    timeout=timeout, name=name, deadline=deadline, min_rate=min_rate, allow_files=allow_files)
    return admit(held, dest_dir, protected=protected, any_name=True)


def download(url: str, quarantine: Path, *, sha256: str, max_bytes: int = DEFAULT_MAX_BYTES,
             timeout: float = DEFAULT_TIMEOUT, name: str | None = None, deadline: float = DEFAULT_DEADLINE,
             min_rate: int = DEFAULT_MIN_RATE, allow_files: bool | Path = True) -> Path:
    """Download ``url`` to ``quarantine/name``, verified; the quarantined file.

    StoreError: a bad URL, sha256 or name, a refused ``file://`` URL, more than
    ``max_bytes``, a sha256 mismatch. DownloadError: unreachable, an HTTP error, cut short,
    past ``deadline`` or slower than ``min_rate``. InputMissingError: no such local file.
    """
    problem = check_url(url)
    if problem:
        raise StoreError(f"download URL {problem}")
    expected = sha256.strip().lower() if isinstance(sha256, str) else sha256
    problem = check_sha256(expected)
    if problem:
        raise StoreError(f"{url}: expected sha256 {problem}")
    local = urlsplit(url).scheme == "file"
    if local:
        _check_file_url(url, allow_files)
    file_name = name or unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    if len(file_name.encode()) > MAX_NAME:
        raise StoreError(f"download URL: its file name is {len(file_name)} characters long, over the limit of "
                         f"{MAX_NAME}")
    if not _SAFE_NAME.match(file_name) or ".." in file_name:
        raise StoreError(f"{url}: {file_name!r} is not a safe file name to store")
    try:
        quarantine.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"{quarantine}: cannot make the download quarantine folder: {exc.strerror or exc}") from exc
    target = quarantine / file_name
    try:
        with locked_temporary(target, ".partial") as (temporary, out):
            actual, size = _download(url, out, max_bytes, timeout, deadline, min_rate)
            if actual != expected:
                got = "" if local else f", got {actual} ({size} bytes)"
                raise StoreError(f"{url}: sha256 mismatch: expected {expected}{got}; nothing was stored")
            os.replace(temporary, target)
    except FileNotFoundError as exc:
        raise InputMissingError(f"{quarantine}: download folder not found") from exc
    except PermissionError as exc:
        raise StoreError(f"{quarantine}: cannot write a download there: {exc.strerror or exc}") from exc
    log.info("downloaded %s to quarantine %s (%d bytes, sha256 %s)", url, target, size, actual)
    return target


def admit(held: Path, store: Path, *, protected: Iterable[Path] = (), any_name: bool = False) -> Path:
    """Move a quarantined, verified file into ``store`` under its name; the stored path.

    Refused (StoreError; the quarantined file is removed): a name that is not a model's
    (``.tflite``) unless ``any_name`` (labels pulled by the CLI), a target that is a
    symlink or not a regular file, and a target in ``protected`` (the running model, its
    twin, the learning extractor): a file in use is never replaced.
    """
    store = Path(store)
    try:
        target = store / held.name if any_name else resolve_name(store, held.name, must_exist=False)
        in_use = {Path(p).resolve() for p in protected}
        if target.resolve() in in_use:
            raise StoreError(f"{held.name}: the store's {target.name} is in use (the running model, its twin or "
                             "the learning extractor); a download never replaces a file in use; nothing was stored")
        if target.is_symlink() or (target.exists() and not target.is_file()):
            raise StoreError(f"{target}: is a symlink or not a regular file; a download never replaces it")
        os.chmod(held, FILE_MODE)
        os.replace(held, target)
    except BaseException:
        held.unlink(missing_ok=True)
        raise
    fsync_dir(store)
    log.info("stored %s", target)
    return target


def fetch_signature(url: str, held: Path, *, timeout: float = DEFAULT_TIMEOUT,
                    allow_files: bool | Path = True) -> Path | None:
    """Download ``url`` + ``.sig`` (a model's detached signature, at most 4 KB) beside the
    quarantined ``held`` file; None when the server has none (HTTP 404, no such file)."""
    from edge_classifier.store.signing import MAX_SIGNATURE_BYTES, SIGNATURE_SUFFIX

    sig_url = url + SIGNATURE_SUFFIX
    if urlsplit(sig_url).scheme == "file":
        _check_file_url(sig_url, allow_files)
    try:
        response = _opener().open(sig_url, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 404:
            return None
        raise DownloadError(f"{sig_url}: HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, FileNotFoundError):
            return None
        raise DownloadError(f"{sig_url}: cannot download: {exc.reason}") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise DownloadError(f"{sig_url}: cannot download: {exc}") from exc
    with response:
        try:
            data = response.read(MAX_SIGNATURE_BYTES + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise DownloadError(f"{sig_url}: transfer failed: {exc}") from exc
    if len(data) > MAX_SIGNATURE_BYTES:
        raise StoreError(f"{sig_url}: over {MAX_SIGNATURE_BYTES} bytes, not a signature")
    target = held.with_name(held.name + SIGNATURE_SUFFIX)
    target.write_bytes(data)
    return target


def _check_file_url(url: str, allow_files: bool | Path) -> None:
    if allow_files is True:
        return
    if allow_files is False:
        raise StoreError("file:// URLs are refused (set model.file_urls to a folder to allow downloads from it)")
    root = Path(allow_files).resolve()
    path = Path(unquote(urlsplit(url).path)).resolve()
    if not path.is_relative_to(root):
        raise StoreError(f"file:// URLs are allowed only from {root} (model.file_urls)")


def _download(url: str, out: BinaryIO, max_bytes: int, timeout: float, deadline: float,
              min_rate: int) -> tuple[str, int]:
    """Stream ``url`` into ``out`` (fsynced): (sha256, size)."""
    start = time.monotonic()
    try:
        response = _opener().open(url, timeout=min(timeout, deadline))
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
    window_start, window_bytes = start, 0
    # read1: whatever has arrived (a slow server cannot hold one read for a whole chunk).
    read = getattr(response, "read1", response.read)
    with response:
        length = _content_length(response.headers)
        if length is not None and length > max_bytes:
            raise StoreError(f"{url}: {length} bytes announced, over the limit of {max_bytes} bytes")
        while True:
            try:
                chunk = read(_CHUNK)
            except (OSError, http.client.HTTPException) as exc:
                raise DownloadError(f"{url}: transfer failed after {total} bytes: {exc}") from exc
            if not chunk:
                break
            total += len(chunk)
            if total > max_bytes:
                raise StoreError(f"{url}: more than the limit of {max_bytes} bytes; download stopped")
            digest.update(chunk)
            out.write(chunk)
            now = time.monotonic()
            if now - start > deadline:
                raise DownloadError(f"{url}: not done within {deadline:g} s ({total} bytes); download stopped")
            window_bytes += len(chunk)
            if now - window_start >= RATE_WINDOW:
                rate = window_bytes / (now - window_start)
                if rate < min_rate:
                    raise DownloadError(f"{url}: {rate:.0f} bytes/s, under the minimum of {min_rate} bytes/s "
                                        f"(model.download_min_rate); download stopped after {total} bytes")
                window_start, window_bytes = now, 0
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
         max_bytes: int = DEFAULT_MAX_BYTES, timeout: float = DEFAULT_TIMEOUT, force: bool = False,
         trusted: Sequence[str] = ()) -> Path:
    """Download the catalog's model ``name`` (and its labels, as the model's sidecar
    ``<name>_labels.txt``) into ``store``; the stored model's path.

    A file already there with the catalog's sha256 is kept; one with another sum is an error
    unless ``force``. With ``trusted`` keys, the model's signature (its URL + ``.sig``) is
    fetched too and must verify before the model enters the store (it is stored beside it).
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
    _fetch_unless_present(url, target, entry.sha256, max_bytes, timeout, force, trusted)
    if entry.labels:
        labels_target = store / f"{logical_name(target)}_labels.txt"
        labels_url = mirror_url(mirror, entry.labels) if mirror else entry.labels_url
        _fetch_unless_present(labels_url, labels_target, entry.labels_sha256, max_bytes, timeout, force)
    return target


def _fetch_unless_present(url: str, target: Path, sha256: str, max_bytes: int, timeout: float, force: bool,
                          trusted: Sequence[str] = ()) -> None:
    from edge_classifier.store.signing import check_signature, signature_path

    if target.is_file() and not force:
        actual = file_sha256(target)
        if actual == sha256:
            log.info("%s is already in the store with the expected sha256", target)
            check_signature(target, trusted)
            return
        raise StoreError(f"{target}: already exists with sha256 {actual}, not the catalog's {sha256}; "
                         "use --force to replace it")
    if not trusted:
        fetch_url(url, target.parent, sha256=sha256, max_bytes=max_bytes, timeout=timeout, name=target.name)
        return
    held = download(url, quarantine_dir(target.parent), sha256=sha256, max_bytes=max_bytes, timeout=timeout,
                    name=target.name)
    signature = signature_path(held)
    try:
        fetch_signature(url, held, timeout=timeout)
        check_signature(held, trusted)
        if signature.is_file():
            admit(signature, target.parent, any_name=True)
        admit(held, target.parent, any_name=True)
    finally:
        held.unlink(missing_ok=True)
        signature.unlink(missing_ok=True)
