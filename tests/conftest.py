"""Shared pytest fixtures."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.broker import MosquittoBroker, TlsFiles, make_tls_files


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A plain, anonymous Mosquitto on a free 127.0.0.1 port, stopped after the test."""
    with MosquittoBroker(tmp_path / "broker") as running:
        yield running


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A test PKI (CA, server and client certificates, an unrelated CA), made once per session."""
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def make_broker(tmp_path: Path) -> Iterator[Callable[..., MosquittoBroker]]:
    """A factory: ``make_broker(**MosquittoBroker options)`` returns a started broker; every broker
    it made is closed after the test."""
    started: list[MosquittoBroker] = []

    def factory(**options: Any) -> MosquittoBroker:
        work_dir = tmp_path / f"broker-{len(started)}"
        new = MosquittoBroker(work_dir, **options)
        started.append(new)
        return new.start()

    yield factory
    for each in reversed(started):
        each.close()


@pytest.fixture
def pictures(tmp_path: Path) -> Path:
    """A folder holding one real photo (the parrot), as an `images` source; a test module may
    define its own `pictures` with other photos."""
    from support.testdata import image

    folder = tmp_path / "pics"
    folder.mkdir()
    shutil.copy(image("parrot.jpg"), folder / "parrot.jpg")
    return folder
