"""The service stacks the tests run against: a fresh database and broker per configuration, the
API served in this process through its ASGI app, and Celery workers as real processes.

``services``: a fresh PostgreSQL database (``sngan_test_<random>``, migrated with Alembic and
dropped at the end) and Redis under a unique key prefix. ``embedded``: SQLite and the
filesystem broker in a temp directory. ``SNGAN_TEST_STACKS=services`` (or ``embedded``)
picks one; both run by default.

One stack at a time is *served* (`Stack.serving`, through tests/served.py): its settings in
``os.environ`` and its app's lifespan running in this process until the test ends.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import httpx

from tests.served import Served, engines_closed_after, serve

if TYPE_CHECKING:
    from sqlalchemy import Connection
    from sqlalchemy.orm import Session, sessionmaker

    from app.core.config import Settings

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[1]
SNGAN = Path(sys.executable).with_name("sngan")  # the console script scripts/setup installs
POSTGRES_URL = os.environ.get(
    "SNGAN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("SNGAN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
STACKS = [s.strip() for s in os.environ.get("SNGAN_TEST_STACKS", "services,embedded").split(",")]

# Small limits and fast clocks, so the tests can reach every limit and finish quickly.
TEST_SETTINGS = {
    "SNGAN_AUTH": "on",
    "SNGAN_MIGRATE_ON_STARTUP": "false",
    "SNGAN_MAX_STEPS": "5000",
    "SNGAN_MAX_SAMPLES_PER_REQUEST": "16",
    "SNGAN_MAX_UPLOAD_BYTES": str(2 * 1024 * 1024),
    "SNGAN_MAX_UNCOMPRESSED_BYTES": str(8 * 1024 * 1024),
    "SNGAN_MAX_DATASET_IMAGES": "500",
    "SNGAN_MAX_IMAGE_SIDE": "256",
    "SNGAN_HEARTBEAT_INTERVAL_S": "0.5",
    "SNGAN_LEASE_TIMEOUT_S": "15",
    "SNGAN_METRICS_FLUSH_EVERY_S": "0.2",
    "SNGAN_REAPER_INTERVAL_S": "1",
    "SNGAN_REQUEUE_QUEUED_AFTER_S": "30",
    "SNGAN_SSE_POLL_INTERVAL_S": "0.1",
    "SNGAN_TRAIN_DEVICE": "cpu",
    "SNGAN_GENERATION_DEVICE": "cpu",
    "SNGAN_LOG_LEVEL": "INFO",
}


@contextlib.contextmanager
def postgres_admin(postgres_url: str = POSTGRES_URL) -> Iterator[Connection]:
    """A connection to PostgreSQL's maintenance database that commits each statement at once
    (CREATE, DROP and ALTER DATABASE cannot run inside a transaction)."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    engine = create_engine(
        postgres_url,
        isolation_level="AUTOCOMMIT",
        poolclass=NullPool,
        connect_args={"connect_timeout": 3},
    )
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def base_env(data_dir: Path) -> dict[str, str]:
    """The environment of a test's app or worker: none of the caller's SNGAN_ settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNGAN_")}
    env.update(TEST_SETTINGS)
    env.update(
        SNGAN_DATA_DIR=str(data_dir),
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",  # the worker and the tests share two cores; one torch thread
    )
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def services_unreachable(reason: str) -> None:
    """A test needs PostgreSQL or Redis and it is not there: skip, or fail under CI."""
    import pytest

    message = (
        f"{reason}; start the servers with `docker compose up -d postgres redis` "
        "(or set SNGAN_TEST_POSTGRES_URL / SNGAN_TEST_REDIS_URL)"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


# --- a stack: database, broker, the API served here, workers as processes ------------------


@dataclass
class Stack:
    kind: str
    database_url: str
    data_dir: Path
    env: dict[str, str]
    workdir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    served: Served | None = None

    @contextlib.contextmanager
    def serving(self, **overrides: str) -> Iterator[Served]:
        """Serve the app with this stack's settings (and `overrides`) in this process, its
        log in `api.log`. Re-entrant: an inner call without overrides gets the app already
        served."""
        if self.served is not None and not overrides:
            yield self.served
            return
        with serve({**self.env, **overrides}, self.workdir / "api.log") as app:
            self.served = app
            try:
                yield app
            finally:
                self.served = None

    def client(self, key: str | None = None, timeout: float = 60) -> httpx.Client:
        """A client of the app being served (see `serving`)."""
        assert self.served is not None, "the stack is not being served (Stack.serving)"
        return self.served.client(key, timeout)

    def sessions(self) -> sessionmaker[Session]:
        from app.core.db import session_factory

        return session_factory(self.database_url)

    def new_key(self, owner: str | None = None) -> str:
        from app.core.security import create_api_key

        with self.sessions()() as session:
            return create_api_key(session, owner or f"owner-{secrets.token_hex(4)}")

    def settings(self) -> Settings:
        """The stack's settings, for code the tests run in this process."""
        from app.core.config import Settings

        prefix = len("SNGAN_")
        values = {k[prefix:].lower(): v for k, v in self.env.items() if k.startswith("SNGAN_")}
        return Settings.model_validate(values)

    def log_tail(self, name: str, lines: int = 60) -> str:
        path = self.workdir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def start(
        self, name: str, args: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with (self.workdir / f"{name}.log").open("ab") as log:  # the child keeps its own fd
            proc = subprocess.Popen(
                args,
                cwd=REPO,
                env={**self.env, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: pool children stop with it
            )
        self.procs[name] = proc
        return proc

    def start_api(self, name: str, env: dict[str, str] | None = None) -> str:
        """The API under uvicorn as a process of its own on a free loopback port, for tests
        of what a server process does; its URL once it answers."""
        port = free_port()
        proc = self.start(
            name,
            [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory"]
            + ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            env,
        )
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited at start:\n{self.log_tail(name)}")
            try:
                return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 60, f"the {name} to start", interval=0.2)
        return url

    def start_worker(self, name: str = "worker") -> subprocess.Popen[bytes]:
        """Start (or restart) a Celery worker through `sngan worker` (its log: `name`.log)
        and wait until it is ready."""
        mark = len(self.log_tail(name, 100_000).splitlines())
        proc = self.start(
            name,
            [str(SNGAN), "worker", "--hostname", f"test-{secrets.token_hex(3)}@%h"]
            + ["--without-gossip", "--without-mingle", "--without-heartbeat"],
        )

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited at start:\n{self.log_tail(name)}")
            new_lines = self.log_tail(name, 100_000).splitlines()[mark:]
            return any("ready." in line for line in new_lines)

        wait_for(ready, 60, f"the {name} to start", interval=0.2)
        return proc

    def stop(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is None:
                # the worker's cold shutdown: no waiting for a job a test left running
                os.killpg(proc.pid, signal.SIGQUIT if "worker" in name else signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


@contextlib.contextmanager
def new_stack(
    kind: str,
    workdir: Path,
    extra_env: dict[str, str] | None = None,
    on_unreachable: Callable[[str], None] = services_unreachable,
    postgres_url: str = POSTGRES_URL,
    redis_url: str = REDIS_URL,
) -> Iterator[Stack]:
    """A fresh, migrated database (and Redis key prefix) for `kind`, on the servers at
    `postgres_url` and `redis_url` for `services`; its processes stopped and everything
    removed after. Nothing is served or started yet."""
    from app.core.db import migrate

    data_dir = workdir / "data"
    env = base_env(data_dir)
    env.update(extra_env or {})
    db_name = None
    if kind == "services":
        try:
            with postgres_admin(postgres_url) as conn:
                db_name = f"sngan_test_{secrets.token_hex(4)}"
                conn.exec_driver_sql(f'CREATE DATABASE "{db_name}"')
        except Exception as e:
            on_unreachable(f"PostgreSQL at {postgres_url} is unreachable ({e})")
            raise
        try:
            import redis

            redis.Redis.from_url(redis_url, socket_connect_timeout=3).ping()
        except Exception as e:
            on_unreachable(f"Redis at {redis_url} is unreachable ({e})")
            raise
        from sqlalchemy.engine import make_url

        database_url = (
            make_url(postgres_url).set(database=db_name).render_as_string(hide_password=False)
        )
        env.update(
            SNGAN_DATABASE_URL=database_url,
            SNGAN_BROKER_URL=redis_url,
            SNGAN_BROKER_KEY_PREFIX=f"sngan-test-{secrets.token_hex(4)}:",
        )
    elif kind == "embedded":
        database_url = f"sqlite:///{data_dir / 'sngan.db'}"
    else:
        raise ValueError(f"unknown stack {kind!r} in SNGAN_TEST_STACKS")

    stack = Stack(kind, database_url, data_dir, env, workdir)
    try:
        with engines_closed_after(database_url, env):
            try:
                migrate(database_url)
                yield stack
            finally:
                stack.stop()
    finally:
        if db_name is not None:
            with postgres_admin(postgres_url) as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
            import redis

            client = redis.Redis.from_url(redis_url)
            keys = list(client.scan_iter(match=env["SNGAN_BROKER_KEY_PREFIX"] + "*"))
            if keys:
                client.delete(*keys)
