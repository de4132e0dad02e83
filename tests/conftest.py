"""Fixtures of the service tests: a real stack per configuration (see tests/stacks.py).

``stack``: a fresh database and broker, ``services`` (PostgreSQL + Redis) and ``embedded``
(SQLite + the filesystem broker), one per session. A test that asks for it runs with the API
served in this process through its ASGI app, with the stack's settings (and those of its
``settings`` marker); ``worker`` adds a Celery worker process, for tests that train. Without
PostgreSQL/Redis the ``services`` tests are skipped, or fail when ``CI=true``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Generator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.clients import cancel_all
from tests.servers import PrivatePostgres, PrivateRedis, private_postgres, private_redis
from tests.stacks import STACKS, Stack, new_stack
from tests.trained import TrainedGAN
from tests.trained import trained_gan as train_once


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
    with new_stack(kind, tmp_path_factory.mktemp(f"stack-{kind}")) as stack:
        yield stack


@pytest.fixture(autouse=True)
def _served(request: pytest.FixtureRequest) -> Iterator[None]:
    """The app of the test's stack, served in this process for the test's duration."""
    name = next((n for n in ("stack", "fault_stack") if n in request.fixturenames), None)
    if name is None:
        yield
        return
    stack: Stack = request.getfixturevalue(name)
    marker = request.node.get_closest_marker("settings")
    with stack.serving(**(marker.kwargs if marker else {})):
        yield


@pytest.fixture(scope="session")
def worker(stack: Stack) -> Stack:
    """The stack with a Celery worker process running (started once per stack)."""
    if "worker" not in stack.procs:
        stack.start_worker()
    return stack


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
def fault_servers() -> Iterator[tuple[PrivatePostgres, PrivateRedis]]:
    """A PostgreSQL cluster and a Redis server of the fault tests' own, which they may stop
    and restart: the machine's servers, under every other stack, are left alone."""
    if "services" not in STACKS:
        pytest.skip("the fault tests need the services stack (SNGAN_TEST_STACKS)")
    with private_postgres() as postgres, private_redis() as redis:
        yield postgres, redis


@pytest.fixture(scope="module")
def fault_stack(
    fault_servers: tuple[PrivatePostgres, PrivateRedis], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """A stack with a worker on `fault_servers`, for tests that kill its processes and
    restart its servers (the shared `stack` is left alone)."""
    postgres, redis = fault_servers
    workdir = tmp_path_factory.mktemp("stack-faults")
    with new_stack(
        "services", workdir, FAULT_SETTINGS, postgres_url=postgres.url, redis_url=redis.url
    ) as stack:
        stack.start_worker()
        yield stack


@pytest.fixture(scope="session")
def trained_gan(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> TrainedGAN:
    """The conditional GAN of tests/trained.py, trained once per run: the run's pytest
    processes (xdist workers) share the folder above their own temporary folders."""
    root = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        root = root.parent
    return train_once(root / "trained-gan")


@pytest.fixture
def owner() -> str:
    """A fresh owner per test, so tests never see each other's jobs and datasets."""
    return f"owner-{secrets.token_hex(4)}"


@pytest.fixture
def api(stack: Stack, owner: str) -> Iterator[httpx.Client]:
    """A client holding an API key of `owner`; the owner's unfinished jobs are canceled
    afterwards, so none is left queued for the stack's one worker to train during the tests
    that follow (a test that only submits has no use for its jobs' training)."""
    with stack.client(stack.new_key(owner)) as client:
        yield client
        cancel_all(client)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed service test shows the end of its stack's API and worker logs."""
    report = yield
    funcargs = getattr(item, "funcargs", {})
    stack = funcargs.get("stack") or funcargs.get("fault_stack")
    if report.failed and isinstance(stack, Stack):
        for name in ["api", *stack.procs]:
            report.sections.append((f"{stack.kind} {name} log (last lines)", stack.log_tail(name)))
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Where the browser tests left their screenshots (tests/web), when a folder was set."""
    folder = os.environ.get("SNGAN_SCREENSHOTS")
    if folder and Path(folder).is_dir() and any(Path(folder).iterdir()):
        terminalreporter.write_line(f"browser test screenshots: {folder}")
