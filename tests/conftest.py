"""Fixtures of the service tests: a real stack per configuration.

``services``: a fresh PostgreSQL database (``sngan_test_<random>``, migrated with Alembic and
dropped at the end) and Redis under a unique key prefix. ``embedded``: SQLite and the
filesystem broker in a temp directory. Each stack runs the API under uvicorn and a Celery
worker, both as real subprocesses. ``SNGAN_TEST_STACKS=services`` (or ``embedded``) picks one;
both run by default. Without PostgreSQL/Redis the ``services`` tests are skipped, or fail when
``CI=true``.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import httpx
import pytest

from tests.utils import (
    STACKS,
    Stack,
    running_stack,
    services_unreachable,
)


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
    workdir = tmp_path_factory.mktemp(f"stack-{kind}")
    with running_stack(kind, workdir, on_unreachable=services_unreachable) as stack:
        yield stack


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
    with running_stack(
        "services", workdir, FAULT_SETTINGS, on_unreachable=services_unreachable
    ) as stack:
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
