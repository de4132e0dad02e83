"""Fixtures for the CLI tests: real ``sngan serve`` processes, stopped whatever happens."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cli.cli_helpers import Server, sngan_env
from tests.stacks import free_port


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def make(*args: str, **extra_env: str) -> Server:
        data_dir = tmp_path / "data"
        server = Server(tmp_path, sngan_env(data_dir, **extra_env), free_port(), args)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.kill()
