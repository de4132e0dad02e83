"""API keys: hashed at rest, 401 without one, and no key sees another's jobs or datasets."""

from __future__ import annotations

import hashlib

from sqlalchemy import select

from app.auth import revoke_api_key
from app.tables import ApiKey
from tests.utils import npz_bytes, shapes, tiny_job, upload, wait_for_status


def test_requests_without_a_valid_key_are_401(stack) -> None:  # type: ignore[no-untyped-def]
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


def test_keys_are_stored_hashed_and_never_logged(stack) -> None:  # type: ignore[no-untyped-def]
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


def test_one_key_cannot_see_or_touch_anothers_resources(stack) -> None:  # type: ignore[no-untyped-def]
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
