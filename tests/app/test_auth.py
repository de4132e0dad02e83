"""API keys: hashed at rest, 401 without one, and no key sees another's jobs or datasets."""

from __future__ import annotations

import hashlib

import httpx
import pytest
from sqlalchemy import select

from app.core.security import revoke_api_key
from app.core.tables import ApiKey
from tests.builders import npz_bytes, shapes, tiny_job
from tests.clients import upload, wait_for_status
from tests.stacks import Stack


@pytest.mark.settings(SNGAN_AUTH_CACHE_S="0")  # revoked: refused at the next request
def test_requests_without_a_valid_key_are_401(stack: Stack) -> None:
    key = stack.new_key()
    with stack.client() as anonymous:
        response = anonymous.get("/v1/jobs")
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["code"] == "unauthorized"
        assert anonymous.post("/v1/jobs", json={}).status_code == 401
        assert anonymous.get("/v1/datasets").status_code == 401
    for bad in ("nonsense", key[:-1] + ("x" if key[-1] != "x" else "y"), "sngan_00_zz"):
        with stack.client(bad) as client:
            assert client.get("/v1/jobs").status_code == 401
    with stack.client(key) as client:
        assert client.get("/v1/jobs").status_code == 200
        key_id = key.split("_")[1]
        with stack.sessions()() as session:
            assert revoke_api_key(session, key_id)
        assert client.get("/v1/jobs").status_code == 401


def test_keys_are_stored_hashed_and_never_logged(stack: Stack, worker: Stack) -> None:
    key = stack.new_key("hash-check")
    with stack.client(key) as client:
        assert client.get("/v1/jobs").status_code == 200
    with stack.sessions()() as session:
        row = session.scalars(select(ApiKey).where(ApiKey.owner == "hash-check")).one()
        stored = [str(getattr(row, c.key)) for c in ApiKey.__table__.columns]
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    secret = key.split("_", 2)[2]  # the secret itself may hold "_"
    assert not any(secret in value for value in stored)
    for name in ("api", "worker"):
        assert secret not in stack.log_tail(name, lines=100_000)


def test_one_key_cannot_see_or_touch_anothers_resources(stack: Stack, worker: Stack) -> None:
    with stack.client(stack.new_key()) as alice, stack.client(stack.new_key()) as bob:
        images, _ = shapes(32)
        dataset = upload(alice, "a.npz", npz_bytes(images)).json()
        job = alice.post("/v1/jobs", json=tiny_job({"id": dataset["id"]}, steps=2)).json()
        wait_for_status(alice, job["id"], ("succeeded", "failed"), timeout=120)

        base = f"/v1/jobs/{job['id']}"
        for method, path in [
            ("GET", base),
            ("GET", f"{base}/metrics"),
            ("GET", f"{base}/events"),
            ("GET", f"{base}/checkpoints"),
            ("GET", f"{base}/checkpoints/latest"),
            ("GET", f"{base}/samples"),
            ("GET", f"{base}/training-samples"),
            ("GET", f"{base}/training-samples/2"),
            ("POST", f"{base}/cancel"),
            ("POST", f"{base}/resume"),
            ("DELETE", base),
            ("GET", f"/v1/datasets/{dataset['id']}"),
            ("DELETE", f"/v1/datasets/{dataset['id']}"),
        ]:
            response = bob.request(method, path)
            assert response.status_code == 404, (method, path, response.text)
            assert response.json()["error"]["code"] == "not_found"
        assert bob.get("/v1/jobs").json()["data"] == []
        assert bob.get("/v1/datasets").json()["data"] == []
        borrowed = bob.post("/v1/jobs", json=tiny_job({"id": dataset["id"]}, steps=2))
        assert borrowed.status_code == 422 and "dataset.id" in borrowed.json()["error"]["message"]

        # the owner still sees everything
        assert alice.get(base).status_code == 200
        assert alice.get(f"/v1/datasets/{dataset['id']}").status_code == 200
        assert [j["id"] for j in alice.get("/v1/jobs").json()["data"]] == [job["id"]]


@pytest.mark.settings(SNGAN_RATE_LIMIT_PER_MINUTE="5")
def test_rate_limit_answers_429_with_retry_after(stack: Stack) -> None:
    """The stack's app served with a limit of 5 requests per key per minute."""
    first, second = stack.new_key(), stack.new_key()
    with stack.client(first) as client:
        statuses = [client.get("/v1/jobs").status_code for _ in range(5)]
        assert statuses == [200] * 5
        limited = client.get("/v1/jobs")
        assert limited.status_code == 429, limited.text
        assert int(limited.headers["retry-after"]) >= 1
        error = limited.json()["error"]
        assert error["code"] == "rate_limited"
        assert "5 per minute" in error["message"]
        assert "SNGAN_RATE_LIMIT_PER_MINUTE" in error["message"]
    with stack.client(second) as other:
        assert other.get("/v1/jobs").status_code == 200  # buckets are per key
    with stack.client() as anonymous:
        assert anonymous.get("/healthz").status_code == 200  # unauthenticated routes are free


def test_outputs_are_reached_only_through_ids(worker: Stack, api: httpx.Client) -> None:
    """Path-traversal attempts in job ids, dataset ids and steps never reach a file."""
    images, _ = shapes(8)
    dataset = upload(api, "d.npz", npz_bytes(images)).json()
    job = api.post("/v1/jobs", json=tiny_job({"id": dataset["id"]}, steps=2)).json()
    wait_for_status(api, job["id"], ("succeeded", "failed"), timeout=120)
    base = f"/v1/jobs/{job['id']}"
    for path in [
        f"{base}/checkpoints/..%2F..%2F..%2Fetc%2Fpasswd",
        f"{base}/checkpoints/../../../etc/passwd",
        f"{base}/checkpoints/%2Fetc%2Fpasswd",
        f"{base}/checkpoints/2%2F..%2F..%2Fsngan.db",
        f"{base}/training-samples/..%2F..%2Fsngan.db",
        f"{base}/samples?n=4&checkpoint=..%2F..%2Fetc%2Fpasswd",
        "/v1/jobs/..%2F..%2Fetc%2Fpasswd/checkpoints/latest",
        "/v1/jobs/%2E%2E/checkpoints/latest",
        f"/v1/datasets/..%2F{dataset['id']}",
        "/v1/datasets/..%2F..%2Fsngan.db",
    ]:
        response = api.get(path)
        assert response.status_code in (404, 405, 422), (path, response.status_code)
        assert b"root:" not in response.content and b"SQLite format" not in response.content
        assert response.headers["content-type"].startswith("application/json"), path
