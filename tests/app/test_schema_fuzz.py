"""Schemathesis against the service's own /openapi.json, on both stacks: every operation with
generated requests (valid and invalid ones) and a valid API key, then the stateful phase,
which follows the document's links (an id a create returns fills the routes that take it), so
operations run on jobs that exist. No 5xx, and no response that breaks the schema (body,
status code or content type).

It calls the app in process (schemathesis's ASGI transport) on a database of its own with no
worker (the jobs it submits are never trained, so the other tests' worker is not kept busy).
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.builders import tiny_job
from tests.served import Served
from tests.stacks import STACKS, Stack, new_stack

EXAMPLES_PER_OPERATION = 15
STATEFUL_SCENARIOS = 100
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]
# an event stream stays open (its errors are covered by the e2e tests)
STREAMS = r"/events$"


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(kind, marks=[pytest.mark.services] if kind == "services" else [])
        for kind in STACKS
    ],
)
def fuzz_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    extra = {
        "SNGAN_MAX_CONCURRENT_JOBS_PER_KEY": "1000",
        "SNGAN_REAPER_INTERVAL_S": "3600",
        "SNGAN_RATE_LIMIT_PER_MINUTE": "1000000",
    }
    kind: str = request.param
    with new_stack(kind, tmp_path_factory.mktemp(f"fuzz-{kind}"), extra) as s, s.serving():
        yield s


def _schema(stack: Stack) -> Any:
    served = stack.served
    assert isinstance(served, Served)
    return schemathesis.openapi.from_asgi("/openapi.json", served.app).exclude(path_regex=STREAMS)


def authorize(case: schemathesis.Case, headers: dict[str, str]) -> None:
    """The fuzz key on every case: generated Authorization values (the bearer scheme is in
    the document) would make most cases 401s that test nothing else."""
    case.headers.update(headers)


def test_no_server_errors_and_responses_match_the_schema(fuzz_stack: Stack) -> None:
    schema = _schema(fuzz_stack)
    headers = {"Authorization": f"Bearer {fuzz_stack.new_key('fuzz')}"}
    tested = []
    statuses: dict[int, int] = {}
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        cases = operation.as_strategy() | operation.as_strategy(GenerationMode.NEGATIVE)

        @given(case=cases)
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,  # the same cases on every run
            database=None,
        )
        def check(case: schemathesis.Case) -> None:
            authorize(case, headers)
            response = case.call_and_validate(checks=CHECKS, timeout=30)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        check()
        tested.append(f"{operation.method.upper()} {operation.path}")
    assert len(tested) >= 15, tested
    assert sum(statuses.values()) >= 400, statuses
    assert any(200 <= s < 300 for s in statuses), statuses  # not only refusals
    print(f"schemathesis: {len(tested)} operations, statuses {sorted(statuses.items())}")


def test_stateful_links_reach_real_jobs(fuzz_stack: Stack) -> None:
    """Scenarios of linked calls: create a job, then read, cancel, resume, delete it, ask for
    its metrics, checkpoints and samples by the id the create returned."""
    # The job and dataset operations only (the links join them): among all 32 operations
    # few scenarios started with a create; keys and webhooks are fuzzed by the first phase.
    schema = _schema(fuzz_stack).include(path_regex=r"^/v1/(jobs|datasets)")
    scenarios = itertools.count()
    headers: dict[str, str] = {}
    failures: list[str] = []
    calls: dict[str, dict[int, int]] = {}

    @schema.hook
    def map_body(ctx: schemathesis.HookContext, body: Any) -> Any:
        """Three job bodies in four are a valid one: generated bodies
        almost never pass every check (a source on disk, limits, sizes), so without them no
        scenario had a job to follow its links to."""
        operation = ctx.operation
        if operation is None or (operation.method.upper(), operation.path) != ("POST", "/v1/jobs"):
            return body
        # chosen from the body itself: hypothesis wants a case to depend on its draws only
        if not isinstance(body, dict) or zlib.crc32(repr(sorted(body.items())).encode()) % 4 == 0:
            return body
        return tiny_job({"source": "synthetic", "num_images": 64}, steps=20)

    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            # an owner per scenario: a scenario starts with no jobs, datasets or webhooks, so
            # the server answers its calls the same whatever ran before (hypothesis checks
            # that a scenario's choices lead to the same kinds of draws)
            owner = f"fuzz-{next(scenarios)}"
            headers["Authorization"] = f"Bearer {fuzz_stack.new_key(owner)}"

        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            authorize(case, headers)
            return {"timeout": 30}

        def validate_response(self, response: Any, case: schemathesis.Case, **kwargs: Any) -> None:
            label = f"{case.method.upper()} {case.path}"
            by_status = calls.setdefault(label, {})
            by_status[response.status_code] = by_status.get(response.status_code, 0) + 1
            try:
                case.validate_response(response, checks=CHECKS)
            except Exception as failure:  # collected: a replay would see another server state
                failures.append(f"{label} -> {response.status_code}: {failure}"[:2000])

    Workflow.run(
        settings=settings(
            max_examples=STATEFUL_SCENARIOS,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            # each scenario has an owner of its own (setup), so the same cases meet the same
            # answers on every run: generated once each, the same ones each time
            phases=[Phase.generate],
            derandomize=True,
            database=None,
            stateful_step_count=8,
        )
    )
    assert failures == [], "\n\n".join(failures[:5])
    linked = {
        label: by_status
        for label, by_status in calls.items()
        if "{job_id}" in label and any(200 <= s < 300 for s in by_status)
    }
    total = sum(sum(c.values()) for c in calls.values())
    assert total >= 500, calls
    # the links are followed: a create's id reaches the routes that take one (how often
    # depends on how many generated bodies the server accepts: few pass every check)
    assert any(label.startswith("POST /v1/jobs") for label in calls), calls
    reached = sum(n for c in linked.values() for status, n in c.items() if 200 <= status < 300)
    assert reached >= 20, linked  # 31 and 42 on the two stacks when written (0-8 before)
    print(f"stateful: {total} calls, linked {linked}")
