"""A PostgreSQL cluster and a Redis server of a test's own, on free ports, for the fault tests
that stop and restart them: the machine's servers, which every other stack uses, are left
alone, so those tests can run beside the others."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

from tests.stacks import free_port, wait_for


def postgres_bin() -> Path | None:
    """The folder of the newest local PostgreSQL's initdb and pg_ctl, if one is installed."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: p.parts)
    return versions[-1].parent if versions else None


def _missing(what: str) -> NoReturn:
    """Skip, or fail under CI, where the servers are part of the machine."""
    import pytest

    if os.environ.get("CI") == "true":
        pytest.fail(f"the test needs {what}")
    pytest.skip(f"the test needs {what}")


class PrivatePostgres:
    """A throwaway cluster (trust auth, listening on 127.0.0.1:`port` only). Run as root, the
    server runs as the `postgres` user, which PostgreSQL requires."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        # not under pytest's tmp_path: its parents are private to root, and the server
        # runs as `postgres`
        self.dir = Path(tempfile.mkdtemp(prefix="sngan-pg-"))
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self._as_owner: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            self._as_owner = ["runuser", "-u", "postgres", "--"]

    def _run(self, *argv: str, timeout: float = 60) -> None:
        subprocess.run(
            [*self._as_owner, str(self.bindir / argv[0]), *argv[1:]],
            check=True,
            capture_output=True,
            timeout=timeout,
        )

    def init(self) -> None:
        self._run("initdb", "-D", str(self.dir / "data"), "-U", "postgres", "-A", "trust")

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off"
        self._run(
            "pg_ctl", "-D", str(self.dir / "data"), "-l", str(self.dir / "log"),
            "-o", options, "-w", "start",
        )  # fmt: skip

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    bindir = postgres_bin()
    if bindir is None:
        _missing("a local PostgreSQL installation (initdb, pg_ctl)")
    server = PrivatePostgres(bindir)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.remove()


class PrivateRedis:
    """redis-server on 127.0.0.1:`port`, keeping nothing on disk (as the machine's does)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import redis

        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
             "--save", "", "--appendonly", "no", "--dir", tempfile.gettempdir()],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_for(up, 30, "the test's Redis to accept connections")

    def stop(self) -> None:
        """A shutdown that saves nothing: whatever the queue held is gone."""
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            self.proc = None


@contextlib.contextmanager
def private_redis() -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        _missing("redis-server")
    server = PrivateRedis()
    try:
        server.start()
        yield server
    finally:
        server.stop()
