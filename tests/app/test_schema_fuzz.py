"""Schemathesis against the service's own /openapi.json: every operation, a few hundred
generated requests (valid and invalid ones) with a valid API key, and no 5xx nor a response
that breaks the schema (body, status code or content type).

It calls the app in process (schemathesis's ASGI transport) on a database of its own with no
worker (the jobs it submits are never trained, so the other tests' worker is not kept busy).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.stacks import STACKS, Served, Stack, new_stack

pytestmark = pytest.mark.services

EXAMPLES_PER_OPERATION = 25


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if "services" not in STACKS:
        pytest.skip("runs on the services stack (SNGAN_TEST_STACKS)")
    extra = {"SNGAN_MAX_CONCURRENT_JOBS_PER_KEY": "1000", "SNGAN_REAPER_INTERVAL_S": "3600"}
    with new_stack("services", tmp_path_factory.mktemp("fuzz"), extra) as s, s.serving():
        yield s


@pytest.fixture(scope="module")
def fuzz_key(fuzz_stack: Stack) -> str:
    return fuzz_stack.new_key("fuzz")


def test_no_server_errors_and_responses_match_the_schema(fuzz_stack: Stack, fuzz_key: str) -> None:
    served = fuzz_stack.served
    assert isinstance(served, Served)
    schema = schemathesis.openapi.from_asgi("/openapi.json", served.app)
    headers = {"Authorization": f"Bearer {fuzz_key}"}
    checks = [
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
        content_type_conformance,
    ]
    tested = []
    statuses: dict[int, int] = {}
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        if operation.path == "/v1/jobs/{job_id}/events":
            continue  # an event stream stays open; its errors are covered by the e2e tests

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
            response = case.call_and_validate(headers=headers, checks=checks, timeout=30)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        check()
        tested.append(f"{operation.method.upper()} {operation.path}")
    assert len(tested) >= 15, tested
    assert sum(statuses.values()) >= 200, statuses
    assert any(200 <= s < 300 for s in statuses), statuses  # not only refusals
    print(f"schemathesis: {len(tested)} operations, statuses {sorted(statuses.items())}")
