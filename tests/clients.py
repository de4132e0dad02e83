"""What the tests do through the HTTP API: upload a dataset, wait for a job's status, read a
job's event stream (a small Server-Sent Events reader), cancel what is left running."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from app.core.status import FINISHED_STATUSES
from tests.stacks import wait_for

T = TypeVar("T")


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coroutine)`` on a thread of its own: in a test process where the browser
    tests' Playwright (its sync API) has started an event loop on the main thread, asyncio.run
    refuses to run there, whichever test runs after them."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def upload(client: httpx.Client, filename: str, data: bytes) -> httpx.Response:
    return client.post("/v1/datasets", files={"file": (filename, data)})


def wait_for_status(
    client: httpx.Client, job_id: str, statuses: tuple[str, ...] | str, timeout: float = 120
) -> dict[str, Any]:
    wanted = (statuses,) if isinstance(statuses, str) else statuses
    last: dict[str, Any] = {}

    def probe() -> dict[str, Any] | None:
        nonlocal last
        response = client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        last = response.json()
        if last["status"] in FINISHED_STATUSES and last["status"] not in wanted:
            raise AssertionError(f"job ended {last['status']}, wanted {wanted}: {last['error']}")
        return last if last["status"] in wanted else None

    try:
        return wait_for(probe, timeout, f"job {job_id} to be {wanted}")
    except AssertionError as e:
        raise AssertionError(f"{e}; last seen: {json.dumps(last)[:2000]}") from None


def cancel_all(client: httpx.Client) -> None:
    """Cancel the caller's unfinished jobs, so the shared worker does not train them (none
    when the key can no longer list them: revoked, or rate-limited by the test)."""
    listed = client.get("/v1/jobs", params={"limit": 200})
    if listed.status_code != 200:
        return
    for job in listed.json()["data"]:
        if job["status"] not in FINISHED_STATUSES:
            client.post(f"/v1/jobs/{job['id']}/cancel")


@dataclass
class SSEEvent:
    id: int | None
    event: str
    data: Any


def read_events(
    client: httpx.Client,
    job_id: str,
    last_event_id: int | None = None,
    timeout: float = 120,
) -> list[SSEEvent]:
    """Every event of the job's stream until the server ends it (after ``done``)."""
    headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
    found: list[SSEEvent] = []
    fields: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    with client.stream(
        "GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=timeout
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if time.monotonic() > deadline:
                raise AssertionError(f"event stream still open after {timeout}s")
            if line.startswith(":"):
                continue  # a keep-alive comment
            if not line:
                if "data" in fields:
                    found.append(
                        SSEEvent(
                            int(fields["id"]) if "id" in fields else None,
                            fields.get("event", "message"),
                            json.loads(fields["data"]),
                        )
                    )
                fields = {}
                continue
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value
    return found
