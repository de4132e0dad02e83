"""The polled routes: ETag / If-None-Match -> 304 on the job and its metrics, and the key
cache's staleness bound (SNGAN_AUTH_CACHE_S)."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import update

from app.core.security import revoke_api_key
from app.core.tables import Job, Metric, utcnow
from tests.builders import insert_job
from tests.stacks import Stack


def test_job_and_metrics_answer_304_while_unchanged(
    stack: Stack, api: httpx.Client, owner: str
) -> None:
    # marked as sent to the queue: else the reaper sends it, the stack's worker may start it,
    # and the cancel below ends it `canceling`, not `canceled`
    job_id = insert_job(stack, owner, status="queued", enqueued_at=utcnow())
    for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/metrics"):
        first = api.get(path)
        assert first.status_code == 200
        etag = first.headers["etag"]
        assert first.headers["cache-control"] == "private, no-cache"
        again = api.get(path, headers={"If-None-Match": etag})
        assert again.status_code == 304, again.text
        assert again.content == b""
        assert again.headers["etag"] == etag
        # a list of tags, a weak one among them, and "*" match too; another tag does not
        for header in (f'"nope", W/{etag}', "*"):
            assert api.get(path, headers={"If-None-Match": header}).status_code == 304
        other = api.get(path, headers={"If-None-Match": '"not-this-one"'})
        assert other.status_code == 200
        assert other.content == first.content

    # a change of the job changes its tag; the old tag then gets the whole new answer
    old_job_tag = api.get(f"/v1/jobs/{job_id}").headers["etag"]
    assert api.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    changed = api.get(f"/v1/jobs/{job_id}", headers={"If-None-Match": old_job_tag})
    assert changed.status_code == 200
    assert changed.json()["status"] == "canceled"
    assert changed.headers["etag"] != old_job_tag

    # a new metric point changes the metrics' tag
    old_metrics_tag = api.get(f"/v1/jobs/{job_id}/metrics").headers["etag"]
    with stack.sessions()() as session:
        session.add(Metric(job_id=job_id, name="loss_d", step=1, value=0.5, time=utcnow()))
        session.commit()
    fresh = api.get(f"/v1/jobs/{job_id}/metrics", headers={"If-None-Match": old_metrics_tag})
    assert fresh.status_code == 200
    assert [p["value"] for p in fresh.json()["data"]] == [0.5]

    # another key's If-None-Match with the right tag still gets 404: the tag is no key
    with stack.client(stack.new_key()) as stranger:
        tag = fresh.headers["etag"]
        response = stranger.get(f"/v1/jobs/{job_id}/metrics", headers={"If-None-Match": tag})
        assert response.status_code == 404


@pytest.mark.settings(SNGAN_AUTH_CACHE_S="3600")
def test_a_verified_key_is_trusted_for_the_cache_period(stack: Stack) -> None:
    """The staleness bound is a setting: within SNGAN_AUTH_CACHE_S of its last check a key
    revoked elsewhere still works in this process (with 0 it is refused at once: see
    test_auth). A wrong key is never cached."""
    key = stack.new_key()
    with stack.client(key) as client:
        assert client.get("/v1/jobs").status_code == 200
        with stack.sessions()() as session:
            assert revoke_api_key(session, key.split("_")[1])
        assert client.get("/v1/jobs").status_code == 200
    with stack.client(key[:-1] + ("x" if key[-1] != "x" else "y")) as wrong:
        assert wrong.get("/v1/jobs").status_code == 401
        assert wrong.get("/v1/jobs").status_code == 401
    with stack.client(stack.new_key()) as fresh:
        assert fresh.get("/v1/jobs").status_code == 200


@pytest.mark.settings(SNGAN_JOB_CACHE_S="60", SNGAN_AUTH_CACHE_S="3600")
def test_a_job_answer_is_kept_for_the_cache_period_and_dropped_by_a_change_here(
    stack: Stack, api: httpx.Client, owner: str
) -> None:
    """GET /v1/jobs/{id} hands out the same bytes for SNGAN_JOB_CACHE_S: a change the worker
    writes (here: straight to the row) is not read meanwhile; a change made through this API
    process (cancel) is seen at once; another owner is read and refused, not served the kept
    answer."""
    job_id = insert_job(stack, owner, status="queued", enqueued_at=utcnow())
    first = api.get(f"/v1/jobs/{job_id}")
    assert first.status_code == 200
    assert first.json()["progress"]["step"] == 0
    with stack.sessions()() as session:
        session.execute(update(Job).where(Job.id == job_id).values(step=7))
        session.commit()
    kept = api.get(f"/v1/jobs/{job_id}")
    assert kept.content == first.content
    assert kept.headers["etag"] == first.headers["etag"]
    assert (
        api.get(f"/v1/jobs/{job_id}", headers={"If-None-Match": first.headers["etag"]}).status_code
        == 304
    )
    with stack.client(stack.new_key()) as stranger:
        assert stranger.get(f"/v1/jobs/{job_id}").status_code == 404
    assert api.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    after = api.get(f"/v1/jobs/{job_id}").json()
    assert after["status"] == "canceled"
    assert after["progress"]["step"] == 7  # read again: the worker's write shows too


@pytest.mark.settings(SNGAN_JOB_CACHE_S="0")
def test_with_no_job_cache_every_get_reads_the_job(
    stack: Stack, api: httpx.Client, owner: str
) -> None:
    job_id = insert_job(stack, owner, status="queued", enqueued_at=utcnow())
    assert api.get(f"/v1/jobs/{job_id}").json()["progress"]["step"] == 0
    with stack.sessions()() as session:
        session.execute(update(Job).where(Job.id == job_id).values(step=7))
        session.commit()
    assert api.get(f"/v1/jobs/{job_id}").json()["progress"]["step"] == 7
