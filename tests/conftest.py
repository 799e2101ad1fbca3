"""Shared fixtures: a real nats-server per test on a free port, JetStream in a temp dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hean.natsserver import NatsServer

DATA_DIR = os.environ.get("HEAN_DATA_DIR") or ""


@pytest.fixture
def nats_server(tmp_path: Path):
    server = NatsServer(store_dir=tmp_path / "nats").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nats_url(nats_server: NatsServer) -> str:
    return nats_server.url


@pytest.fixture
def data_dir() -> Path:
    """The real history (../shared/data); tests that need it skip when it is absent."""
    if not DATA_DIR or not (Path(DATA_DIR) / "normalized").exists():
        pytest.skip("real history not present: set HEAN_DATA_DIR to the shared data folder")
    return Path(DATA_DIR)
