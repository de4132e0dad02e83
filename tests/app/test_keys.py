"""Keys a caller can see and revoke (issue 12, class 6): over HTTP only its own owner's, with
`sngan keys list/revoke` for the administrator on the database; and temp uploads a crash
left behind are swept."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import pytest

from app.api.services.datasets import INCOMING_STALE_S, sweep_incoming
from tests.cli.cli_helpers import run_sngan, sngan_env
from tests.stacks import Stack


@pytest.mark.settings(SNGAN_AUTH_CACHE_S="0")
def test_a_key_lists_and_revokes_its_owners_keys_only(
    stack: Stack, api: httpx.Client, owner: str
) -> None:
    second = stack.new_key(owner)
    stranger = stack.new_key()
    second_id, stranger_id = second.split("_")[1], stranger.split("_")[1]

    listed = api.get("/v1/keys")
    assert listed.status_code == 200, listed.text
    keys = listed.json()["data"]
    assert {k["id"] for k in keys} >= {second_id}
    assert stranger_id not in {k["id"] for k in keys}
    assert sum(k["current"] for k in keys) == 1
    assert all(set(k) == {"id", "created_at", "revoked_at", "current"} for k in keys)

    assert api.delete(f"/v1/keys/{stranger_id}").status_code == 404  # not probeable
    assert api.delete(f"/v1/keys/{second_id}").status_code == 204
    assert api.delete(f"/v1/keys/{second_id}").status_code == 404  # already revoked
    with stack.client(second) as revoked:
        assert revoked.get("/v1/jobs").status_code == 401
    with stack.client(stranger) as other:
        assert other.get("/v1/jobs").status_code == 200
    listed_after = {k["id"]: k for k in api.get("/v1/keys").json()["data"]}
    assert listed_after[second_id]["revoked_at"] is not None


def test_cli_lists_and_revokes_keys(tmp_path: Path) -> None:
    env = sngan_env(tmp_path / "data")
    created = run_sngan("keys", "create", "--owner", "alice", env=env, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    key_id = created.stdout.strip().splitlines()[-1].split("_")[1]
    run_sngan("keys", "create", "--owner", "bob", env=env, cwd=tmp_path)

    listed = run_sngan("keys", "list", "--owner", "alice", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert key_id in listed.stdout and "bob" not in listed.stdout and "active" in listed.stdout

    revoked = run_sngan("keys", "revoke", key_id, env=env, cwd=tmp_path)
    assert revoked.returncode == 0, revoked.stderr
    again = run_sngan("keys", "revoke", key_id, env=env, cwd=tmp_path)
    assert again.returncode != 0 and "no active key" in again.stderr
    listed = run_sngan("keys", "list", "--json", env=env, cwd=tmp_path)
    rows = {row["id"]: row for row in json.loads(listed.stdout)}
    assert rows[key_id]["revoked_at"] is not None
    assert len(rows) == 2


def test_stale_temp_uploads_are_swept(stack: Stack) -> None:
    settings = stack.settings()
    incoming = settings.datasets_dir / ".incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    stale, fresh = incoming / "crashed.upload", incoming / "in-progress.upload"
    stale.write_bytes(b"x" * 1024)
    fresh.write_bytes(b"y")
    old = time.time() - INCOMING_STALE_S - 60
    os.utime(stale, (old, old))
    sweep_incoming(settings)
    assert not stale.exists()
    assert fresh.exists()
    fresh.unlink()
