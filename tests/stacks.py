"""The service stacks the tests run against: a fresh database and broker per configuration, the
API served in this process through its ASGI app, and Celery workers as real processes.

``services``: a fresh PostgreSQL database (``sngan_test_<random>``, migrated with Alembic and
dropped at the end) and Redis under a unique key prefix. ``embedded``: SQLite and the
filesystem broker in a temp directory. ``SNGAN_TEST_STACKS=services`` (or ``embedded``)
picks one; both run by default.

The API and the worker read their settings from the environment (a cached ``get_settings()``)
and their engines from cached factories, so one stack at a time is *served*: `Stack.serving`
puts its settings in ``os.environ``, clears those caches, runs the app's lifespan (the reaper
included) on an event loop of its own, and undoes all of it on the way out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import anyio
import httpx
from anyio.from_thread import BlockingPortal, start_blocking_portal

if TYPE_CHECKING:
    from fastapi import FastAPI
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
BASE_URL = "http://testserver"  # in-process requests never leave this process

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


# --- the API in this process ----------------------------------------------------------------


class PortalTransport(httpx.BaseTransport):
    """Synchronous requests into an ASGI app running on `portal`'s event loop (httpx's own
    ASGITransport is async only). The client's read timeout bounds the whole response, as a
    stalled server would be noticed over a socket."""

    def __init__(self, app: FastAPI, portal: BlockingPortal) -> None:
        self._asgi = httpx.ASGITransport(app=app)
        self._portal = portal

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()  # the body is now a byte stream, readable from the event loop too
        timeout = request.extensions.get("timeout", {}).get("read")

        async def call() -> httpx.Response:
            with anyio.fail_after(timeout):
                response = await self._asgi.handle_async_request(request)
                body = await response.aread()
            return httpx.Response(response.status_code, headers=response.headers, content=body)

        try:
            return self._portal.call(call)
        except TimeoutError:
            raise httpx.ReadTimeout(
                f"no full response within {timeout}s", request=request
            ) from None


@dataclass
class Served:
    """The app of a stack, running in this process until `Stack.serving` ends."""

    app: FastAPI
    portal: BlockingPortal

    def client(self, key: str | None = None, timeout: float = 60) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(
            transport=PortalTransport(self.app, self.portal),
            base_url=BASE_URL,
            headers=headers,
            timeout=timeout,
        )


_default_engine_of: list[str] = []  # the database of the engine cached for "no URL given"
_stack_urls: set[str] = set()  # the databases of the stacks alive, whose engines are cached


def _use_default_engine(database_url: str) -> None:
    """Make the engine the app builds without a URL (``get_engine()``, cached) be
    `database_url`'s. The engine cache can only be cleared whole: every engine in it is
    closed first (the app's and the stacks'; they are built again on use), so no pooled
    connection is left to the garbage collector. Kept while the same database is served
    again, so tests reuse its pooled connections."""
    from app.core.db import get_engine, session_factory

    if _default_engine_of == [database_url]:
        return
    if _default_engine_of:
        for engine in {get_engine(None), *map(get_engine, _stack_urls)}:
            engine.dispose()
        get_engine.cache_clear()
        session_factory.cache_clear()
        _default_engine_of.clear()
    _default_engine_of.append(database_url)


@contextlib.contextmanager
def settings_environment(env: Mapping[str, str]) -> Iterator[None]:
    """`env`'s SNGAN_ settings in ``os.environ`` instead of the caller's, with the cached
    settings cleared on the way in and out."""
    from app.core.config import get_settings

    saved = {k: v for k, v in os.environ.items() if k.startswith("SNGAN_")}
    for name in saved:
        del os.environ[name]
    os.environ.update({k: v for k, v in env.items() if k.startswith("SNGAN_")})
    get_settings.cache_clear()
    try:
        yield
    finally:
        for name in [k for k in os.environ if k.startswith("SNGAN_")]:
            del os.environ[name]
        os.environ.update(saved)
        get_settings.cache_clear()


_served: list[Served] = []  # the app whose settings are in force: one at a time


@contextlib.contextmanager
def serve(env: Mapping[str, str], log: Path) -> Iterator[Served]:
    """`create_app()` with `env`'s settings, its lifespan (the reaper included) running on an
    event loop of its own, its log records appended to `log`; afterwards the caller's
    settings are back."""
    if _served:
        raise RuntimeError("another app is being served in this process")
    handler = logging.FileHandler(log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    with settings_environment(env), start_blocking_portal() as portal:
        from app.core.config import get_settings
        from app.main import create_app

        _use_default_engine(str(get_settings().database_url))
        root.addHandler(handler)
        try:
            app = create_app()
            with portal.wrap_async_context_manager(app.router.lifespan_context(app)):
                _served.append(Served(app, portal))
                try:
                    yield _served[-1]
                finally:
                    _served.pop()
        finally:
            root.removeHandler(handler)
            handler.close()


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
    from app.core.db import get_engine, migrate

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
    _stack_urls.add(database_url)
    try:
        migrate(database_url)
        yield stack
    finally:
        stack.stop()
        if _default_engine_of == [database_url]:
            with settings_environment(env):  # where get_engine(None) is this database's
                _use_default_engine("")  # closes the app's engine of it, and the others
        get_engine(database_url).dispose()
        _stack_urls.discard(database_url)
        if db_name is not None:
            with postgres_admin(postgres_url) as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
            import redis

            client = redis.Redis.from_url(redis_url)
            keys = list(client.scan_iter(match=env["SNGAN_BROKER_KEY_PREFIX"] + "*"))
            if keys:
                client.delete(*keys)
