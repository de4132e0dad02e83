"""Fixtures of the service tests: a real stack per configuration.

``services``: a fresh PostgreSQL database (``sngan_test_<random>``, migrated with Alembic and
dropped at the end) and Redis under a unique key prefix. ``embedded``: SQLite and the
filesystem broker in a temp directory. Each stack runs the API under uvicorn and a Celery
worker, both as real subprocesses. ``SNGAN_TEST_STACKS=services`` (or ``embedded``) picks one;
both run by default. Without PostgreSQL/Redis the ``services`` tests are skipped, or fail when
``CI=true``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.utils import (
    POSTGRES_URL,
    REDIS_URL,
    REPO,
    STACKS,
    admin_connect,
    base_env,
    free_port,
    wait_for,
)


def services_unreachable(reason: str) -> None:
    message = (
        f"{reason}; start the servers with `docker compose up -d postgres redis` "
        "(or set SNGAN_TEST_POSTGRES_URL / SNGAN_TEST_REDIS_URL)"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class Stack:
    kind: str
    base_url: str
    database_url: str
    data_dir: Path
    env: dict[str, str]
    workdir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def client(self, key: str | None = None, timeout: float = 60) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def sessions(self):  # type: ignore[no-untyped-def]
        from app.db import session_factory

        return session_factory(self.database_url)

    def new_key(self, owner: str | None = None) -> str:
        from app.auth import create_api_key

        with self.sessions()() as session:
            return create_api_key(session, owner or f"owner-{secrets.token_hex(4)}")

    def settings(self):  # type: ignore[no-untyped-def]
        """The stack's settings, for code the tests run in this process."""
        from app.config import Settings

        values = {
            k[len("SNGAN_") :].lower(): v for k, v in self.env.items() if k.startswith("SNGAN_")
        }
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

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


def _start_processes(stack: Stack, worker: bool = True) -> None:
    port = free_port()
    stack.base_url = f"http://127.0.0.1:{port}"
    stack.start(
        "api",
        [
            sys.executable,
            "-m",
            "uvicorn",
            "app.main:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
    )
    if worker:
        start_worker(stack)
        return
    wait_for(lambda: _api_up(stack), 60, "the API to start")


def _api_up(stack: Stack) -> bool:
    if stack.procs["api"].poll() is not None:
        raise RuntimeError(f"api exited at start:\n{stack.log_tail('api')}")
    try:
        return httpx.get(f"{stack.base_url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def start_worker(stack: Stack, name: str = "worker") -> None:
    """Start (or restart) a Celery worker (its log: `name`.log) and wait until it and the API
    are up."""
    mark = len(stack.log_tail(name, 100_000).splitlines())
    stack.start(
        name,
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker.celery_app:celery",
            "worker",
            "-Q",
            "gpu",
            "--concurrency",
            "1",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-n",
            f"test-{secrets.token_hex(3)}@%h",
        ],
    )
    deadline = time.monotonic() + 60
    while True:
        for name, proc in stack.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited at start:\n{stack.log_tail(name)}")
        try:
            api_up = httpx.get(f"{stack.base_url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            api_up = False
        new_lines = stack.log_tail(name, 100_000).splitlines()[mark:]
        if api_up and any("ready." in line for line in new_lines):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"stack did not start:\n{stack.log_tail('api')}\n{stack.log_tail(name)}"
            )
        time.sleep(0.2)


@pytest.fixture(
    scope="session",
    params=[
        pytest.param(kind, marks=[pytest.mark.services] if kind == "services" else [])
        for kind in STACKS
    ],
)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    kind: str = request.param
    with running_stack(kind, tmp_path_factory.mktemp(f"stack-{kind}")) as stack:
        yield stack


@contextlib.contextmanager
def running_stack(
    kind: str, workdir: Path, extra_env: dict[str, str] | None = None, worker: bool = True
) -> Iterator[Stack]:
    """A fresh database (and Redis key prefix), the API and (unless `worker` is false) one
    worker; all removed after."""
    from app.db import get_engine, migrate

    data_dir = workdir / "data"
    env = base_env(data_dir)
    env.update(extra_env or {})
    db_name = None
    if kind == "services":
        try:
            with admin_connect() as conn:
                db_name = f"sngan_test_{secrets.token_hex(4)}"
                conn.execute(f'CREATE DATABASE "{db_name}"')
        except Exception as e:
            services_unreachable(f"PostgreSQL at {POSTGRES_URL} is unreachable ({e})")
        try:
            import redis

            redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
        except Exception as e:
            services_unreachable(f"Redis at {REDIS_URL} is unreachable ({e})")
        from sqlalchemy.engine import make_url

        database_url = (
            make_url(POSTGRES_URL).set(database=db_name).render_as_string(hide_password=False)
        )
        env.update(
            SNGAN_DATABASE_URL=database_url,
            SNGAN_BROKER_URL=REDIS_URL,
            SNGAN_BROKER_KEY_PREFIX=f"sngan-test-{secrets.token_hex(4)}:",
        )
    elif kind == "embedded":
        database_url = f"sqlite:///{data_dir / 'sngan.db'}"
    else:
        raise ValueError(f"unknown stack {kind!r} in SNGAN_TEST_STACKS")

    stack = Stack(kind, "", database_url, data_dir, env, workdir)
    try:
        migrate(database_url)
        _start_processes(stack, worker)
        yield stack
    finally:
        stack.stop()
        get_engine(database_url).dispose()
        if db_name is not None:
            with admin_connect() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
            if "SNGAN_BROKER_KEY_PREFIX" in env:
                import redis

                client = redis.Redis.from_url(REDIS_URL)
                keys = list(client.scan_iter(match=env["SNGAN_BROKER_KEY_PREFIX"] + "*"))
                if keys:
                    client.delete(*keys)


# Fast clocks for the fault tests: a dead worker's lease expires in seconds, a lost message is
# sent again in seconds. The lease still outlasts a PostgreSQL restart.
FAULT_SETTINGS = {
    "SNGAN_HEARTBEAT_INTERVAL_S": "0.3",
    "SNGAN_LEASE_TIMEOUT_S": "10",
    "SNGAN_REAPER_INTERVAL_S": "0.5",
    "SNGAN_REQUEUE_QUEUED_AFTER_S": "4",
    "SNGAN_METRICS_FLUSH_EVERY_S": "0.2",
}


@pytest.fixture(scope="module")
def fault_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A PostgreSQL + Redis stack of its own, for tests that kill its processes and restart
    the servers (the shared `stack` is left alone)."""
    if "services" not in STACKS:
        pytest.skip("the fault tests need the services stack (SNGAN_TEST_STACKS)")
    workdir = tmp_path_factory.mktemp("stack-faults")
    with running_stack("services", workdir, FAULT_SETTINGS) as stack:
        yield stack


@pytest.fixture
def owner() -> str:
    """A fresh owner per test, so tests never see each other's jobs and datasets."""
    return f"owner-{secrets.token_hex(4)}"


@pytest.fixture
def api(stack: Stack, owner: str) -> Iterator[httpx.Client]:
    """A client holding an API key of `owner`."""
    with stack.client(stack.new_key(owner)) as client:
        yield client


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed service test shows the end of its stack's API and worker logs."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    funcargs = getattr(item, "funcargs", {})
    stack = funcargs.get("stack") or funcargs.get("fault_stack")
    if report.failed and isinstance(stack, Stack):
        for name in stack.procs:
            report.sections.append((f"{stack.kind} {name} log (last lines)", stack.log_tail(name)))
