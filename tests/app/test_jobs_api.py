"""Job creation with Idempotency-Key, listing with cursors, and state rules of the routes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from tests.builders import insert_job, tiny_job
from tests.clients import cancel_all
from tests.stacks import Stack

SYNTHETIC = {"source": "synthetic", "num_images": 64}


def test_idempotent_submit(api: httpx.Client) -> None:
    body = tiny_job(SYNTHETIC, steps=2, name="idem")
    headers = {"Idempotency-Key": "submit-1"}
    first = api.post("/v1/jobs", json=body, headers=headers)
    assert first.status_code == 201, first.text
    again = api.post("/v1/jobs", json=body, headers=headers)
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == first.headers["location"]

    other = api.post("/v1/jobs", json={**body, "name": "other"}, headers=headers)
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_conflict"
    assert other.json()["error"]["details"]["job_id"] == first.json()["id"]

    fresh = api.post("/v1/jobs", json=body, headers={"Idempotency-Key": "submit-2"})
    assert fresh.status_code == 201 and fresh.json()["id"] != first.json()["id"]
    unkeyed = api.post("/v1/jobs", json=body)
    assert unkeyed.status_code == 201 and unkeyed.json()["id"] != first.json()["id"]
    assert len(api.get("/v1/jobs").json()["data"]) == 3
    cancel_all(api)


def test_idempotency_keys_belong_to_their_owner(stack: Stack, api: httpx.Client) -> None:
    body = tiny_job(SYNTHETIC, steps=2)
    mine = api.post("/v1/jobs", json=body, headers={"Idempotency-Key": "shared"})
    with stack.client(stack.new_key()) as other:
        theirs = other.post("/v1/jobs", json=body, headers={"Idempotency-Key": "shared"})
        cancel_all(other)
    cancel_all(api)
    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["id"] != theirs.json()["id"]


def test_list_newest_first_with_cursor(stack: Stack, owner: str, api: httpx.Client) -> None:
    ids = [insert_job(stack, owner, status="succeeded") for _ in range(5)]
    failed = insert_job(stack, owner, status="failed")
    ids.append(failed)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.get("/v1/jobs", params=params).json()
        seen += [j["id"] for j in page["data"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    assert pages == 3
    only_failed = api.get("/v1/jobs", params={"status": "failed"}).json()["data"]
    assert [j["id"] for j in only_failed] == [failed]


def test_state_rules(stack: Stack, owner: str, api: httpx.Client) -> None:
    future = datetime.now(UTC) + timedelta(days=1)
    running = insert_job(stack, owner, status="running", heartbeat_at=future, lease_token=1)
    succeeded = insert_job(stack, owner, status="succeeded")

    assert api.delete(f"/v1/jobs/{running}").status_code == 409
    assert api.post(f"/v1/jobs/{running}/resume").status_code == 409
    assert api.post(f"/v1/jobs/{succeeded}/cancel").status_code == 409
    assert api.post(f"/v1/jobs/{succeeded}/resume").status_code == 409

    canceling = api.post(f"/v1/jobs/{running}/cancel")
    assert canceling.status_code == 202 and canceling.json()["status"] == "canceling"
    assert api.post(f"/v1/jobs/{running}/cancel").status_code == 202  # idempotent

    assert api.delete(f"/v1/jobs/{succeeded}").status_code == 204
    assert api.get(f"/v1/jobs/{succeeded}").status_code == 404


def test_cancel_of_a_queued_job_ends_it_at_once(
    stack: Stack, owner: str, api: httpx.Client
) -> None:
    queued = insert_job(stack, owner, status="queued", enqueued_at=datetime.now(UTC))
    response = api.post(f"/v1/jobs/{queued}/cancel")
    assert response.status_code == 202
    job = response.json()
    assert job["status"] == "canceled" and job["finished_at"] is not None
