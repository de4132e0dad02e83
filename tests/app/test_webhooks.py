"""Webhooks of job events: signed per Standard Webhooks (checked by a hand-written verifier), sent
by the API's deliverer to a receiver process on loopback, retried, disabled by a 410, written to
the outbox in the event's own transaction and delivered after the API process dies.

Job states are written through the functions the worker uses (claim, its sinks, finish), so no
job trains here."""

from __future__ import annotations

import json
import os
import signal
import typing
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from app.api.schemas import WebhookEvent
from app.core import events, leases, webhooks
from app.core.leases import Lease
from app.core.status import JobStatus
from app.core.tables import Job, WebhookMessage, WebhookSecret, utcnow
from tests.builders import insert_job, tiny_job
from tests.stacks import STACKS, Stack, new_stack, wait_for
from tests.webhook_receiver import Receiver, verify

FAST = {
    "SNGAN_WEBHOOK_ALLOW_PRIVATE": "true",  # the receiver is on loopback
    "SNGAN_WEBHOOK_POLL_INTERVAL_S": "0.1",
    # retries within a second at first, then over about 15 s: room for a receiver to start
    "SNGAN_WEBHOOK_RETRY_SCHEDULE_S": "0,0.3,0.3,0.5,0.5,1,1,2,2,2,3,3",
    "SNGAN_WEBHOOK_MAX_ATTEMPTS": "12",
    "SNGAN_WEBHOOK_TIMEOUT_S": "1",
}
fast = pytest.mark.settings(**FAST)


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(kind, marks=[pytest.mark.services] if kind == "services" else [])
        for kind in STACKS
    ],
)
def bare_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """A stack of this module's own that conftest does not serve: the tests that use it start
    and stop its API themselves."""
    kind: str = request.param
    with new_stack(kind, tmp_path_factory.mktemp(f"webhooks-{kind}")) as stack:
        yield stack


def queued_job(stack: Stack, owner: str) -> str:
    """A queued job row; marked enqueued, so the reaper does not hand it to a worker that
    other tests may have started (the test claims it itself)."""
    return insert_job(stack, owner, status="queued", enqueued_at=utcnow())


def claim(stack: Stack, job_id: str) -> Lease:
    with stack.sessions()() as session:
        lease = leases.claim(session, job_id, "test-worker", 60)
    assert lease is not None
    return lease


def finish(stack: Stack, lease: Lease, status: JobStatus = JobStatus.SUCCEEDED) -> None:
    with stack.sessions()() as session:
        assert leases.finish(session, lease, status)


def subscribe(
    stack: Stack, owner: str, url: str, events_: list[str], job_id: str | None = None
) -> str:
    """An endpoint written straight to the database (no check of its URL)."""
    with stack.sessions()() as session:
        endpoint = webhooks.subscribe(session, owner, url, events_, job_id)
        session.commit()
        return endpoint.id


def deliveries(api: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    response = api.get(f"/v1/jobs/{job_id}/webhook-deliveries")
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def wait_delivery(api: httpx.Client, job_id: str, status: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        found = deliveries(api, job_id)
        return found[0] if found and found[0]["status"] == status else None

    return wait_for(probe, 60, f"a {status} delivery of job {job_id}")


def test_the_schema_offers_the_events_the_outbox_knows() -> None:
    assert typing.get_args(WebhookEvent) == webhooks.EVENTS


@fast
def test_a_job_submitted_with_a_webhook_reports_to_it(
    stack: Stack, api: httpx.Client, receiver: Receiver
) -> None:
    receiver.start()
    url = receiver.url("/submitted/ok")
    body = tiny_job({"source": "synthetic"}, webhook={"url": url, "events": ["status"]})
    created = api.post("/v1/jobs", json=body)
    assert created.status_code == 201, created.text
    job = created.json()
    assert "webhook" not in job["config"]  # the job's own field, not its training spec
    assert api.get("/v1/webhooks").json()["data"] == []  # this job's endpoint, not the key's

    first = receiver.wait_for("/submitted/", 1)[0]
    secret = api.get("/v1/webhooks/secret").json()["secret"]
    assert secret.startswith("whsec_")
    assert verify(secret, first["headers"], first["body"]), first["headers"]
    payload = json.loads(first["body"])
    assert payload["type"] == "job.status"
    assert payload["data"]["id"] == job["id"] and payload["data"]["status"] == "queued"
    api.post(f"/v1/jobs/{job['id']}/cancel")  # no worker here; one elsewhere need not train it


@fast
def test_a_jobs_events_arrive_signed_and_in_order(
    stack: Stack, api: httpx.Client, owner: str, receiver: Receiver
) -> None:
    from worker.sinks import DatabaseSinks

    receiver.start()
    url = receiver.url("/order/ok")
    job_id = queued_job(stack, owner)
    subscribe(stack, owner, url, ["status", "sample", "checkpoint", "evaluation"], job_id)
    lease = claim(stack, job_id)
    sinks = DatabaseSinks(lease, stack.sessions(), stack.settings(), total_steps=20)
    job_dir = stack.data_dir / "jobs" / job_id
    sinks.on_sample_grid(10, job_dir / "samples" / "10.png")  # the worker's own writes
    sinks.on_checkpoint(10, job_dir / "ckpt_10.pt", "ab" * 32, 1234)
    sinks.on_metrics(10, {"is_mean": 3.5, "is_std": 0.25, "fid": 42.0})
    sinks.on_metrics(11, {"loss_d": 1.0})  # not an evaluation
    sinks.flush()
    finish(stack, lease)

    got = receiver.wait_for("/order/", 5)
    secret = api.get("/v1/webhooks/secret").json()["secret"]
    payloads = []
    for request in got:
        assert verify(secret, request["headers"], request["body"]), request["headers"]
        assert request["headers"]["content-type"] == "application/json"
        payloads.append(json.loads(request["body"]))
    kinds = [(p["type"], p["data"].get("status") or p["data"].get("step")) for p in payloads]
    assert kinds == [
        ("job.status", "running"),
        ("job.sample", 10),
        ("job.checkpoint", 10),
        ("job.evaluation", 10),
        ("job.status", "succeeded"),
    ]
    assert payloads[-1]["data"]["id"] == job_id
    assert payloads[2]["data"]["sha256"] == "ab" * 32
    assert payloads[3]["data"]["metrics"] == {"is_mean": 3.5, "is_std": 0.25, "fid": 42.0}
    ids = [r["headers"]["webhook-id"] for r in got]
    assert len(set(ids)) == 5  # one per message

    listed = deliveries(api, job_id)
    assert [d["id"] for d in reversed(listed)] == ids
    assert all(d["status"] == "delivered" and d["attempts"] == 1 for d in listed)
    assert all(d["last_status_code"] == 200 and d["url"] == url for d in listed)


@fast
def test_the_keys_default_endpoint_gets_final_statuses_only(
    stack: Stack, api: httpx.Client, owner: str, receiver: Receiver
) -> None:
    receiver.start()
    made = api.post("/v1/webhooks", json={"url": receiver.url("/final/ok")})
    assert made.status_code == 201, made.text
    assert made.json()["events"] == ["finished"]
    assert [w["id"] for w in api.get("/v1/webhooks").json()["data"]] == [made.json()["id"]]
    job_id = queued_job(stack, owner)
    finish(stack, claim(stack, job_id), JobStatus.FAILED)

    delivered = wait_delivery(api, job_id, "delivered")
    assert len(deliveries(api, job_id)) == 1  # queued -> running sent nothing
    [request] = receiver.requests("/final/")
    payload = json.loads(request["body"])
    assert payload["type"] == "job.status" and payload["data"]["status"] == "failed"
    assert request["headers"]["webhook-id"] == delivered["id"]

    assert api.delete(f"/v1/webhooks/{made.json()['id']}").status_code == 204
    assert api.get("/v1/webhooks").json()["data"] == []
    assert api.delete(f"/v1/webhooks/{made.json()['id']}").status_code == 404


@fast
def test_retries_keep_the_webhook_id_until_delivered(
    stack: Stack, api: httpx.Client, owner: str, receiver: Receiver
) -> None:
    # the receiver is down at first (connection refused), then answers 500 twice, then 200
    subscribe(stack, owner, receiver.url("/retry/fail/2"), ["finished"])
    job_id = queued_job(stack, owner)
    finish(stack, claim(stack, job_id))

    def refused_twice() -> dict[str, Any] | None:
        found = deliveries(api, job_id)
        return found[0] if found and found[0]["attempts"] >= 2 else None

    pending = wait_for(refused_twice, 60, "two refused attempts")
    assert pending["status"] == "pending" and pending["next_attempt_at"] is not None
    assert pending["last_status_code"] is None
    assert pending["last_error"].startswith("connection error")
    receiver.start()

    delivered = wait_delivery(api, job_id, "delivered")
    got = receiver.requests("/retry/")
    assert len(got) == 3  # 500, 500, 200
    assert {r["headers"]["webhook-id"] for r in got} == {delivered["id"]}
    assert len({r["body"] for r in got}) == 1  # the same bytes each time
    assert delivered["attempts"] >= 5 and delivered["last_status_code"] == 200


@fast
def test_a_timeout_is_retried(
    stack: Stack, api: httpx.Client, owner: str, receiver: Receiver
) -> None:
    receiver.start()
    subscribe(stack, owner, receiver.url("/slow/slow/1"), ["finished"])
    job_id = queued_job(stack, owner)
    finish(stack, claim(stack, job_id))
    delivered = wait_delivery(api, job_id, "delivered")
    assert delivered["attempts"] == 2
    assert len(receiver.requests("/slow/")) == 2


@fast
def test_410_disables_the_endpoint(
    stack: Stack, api: httpx.Client, owner: str, receiver: Receiver
) -> None:
    receiver.start()
    made = api.post("/v1/webhooks", json={"url": receiver.url("/gone/gone"), "events": ["status"]})
    job_id = queued_job(stack, owner)
    lease = claim(stack, job_id)  # one message: running

    failed = wait_delivery(api, job_id, "failed")
    assert failed["last_status_code"] == 410 and failed["attempts"] == 1
    [endpoint] = api.get("/v1/webhooks").json()["data"]
    assert endpoint["id"] == made.json()["id"]
    assert endpoint["disabled_at"] is not None and "410" in endpoint["disabled_reason"]
    finish(stack, lease)  # a disabled endpoint gets no more messages
    assert len(deliveries(api, job_id)) == 1
    again = api.post(f"/v1/jobs/{job_id}/webhook-deliveries/{failed['id']}/redeliver")
    assert again.status_code == 409, again.text
    assert len(receiver.requests("/gone/")) == 1


@fast
def test_a_redirect_is_not_followed_and_a_redelivery_sends_again(
    stack: Stack, api: httpx.Client, owner: str, receiver: Receiver
) -> None:
    receiver.start()
    subscribe(stack, owner, receiver.url("/moved/redirect"), ["finished"])
    job_id = queued_job(stack, owner)
    finish(stack, claim(stack, job_id))

    failed = wait_delivery(api, job_id, "failed")
    assert failed["last_status_code"] == 307 and failed["attempts"] == 1
    assert [r["path"] for r in receiver.requests("/moved/")] == ["/moved/redirect"]

    again = api.post(f"/v1/jobs/{job_id}/webhook-deliveries/{failed['id']}/redeliver")
    assert again.status_code == 202, again.text
    wait_for(lambda: deliveries(api, job_id)[0]["attempts"] == 2, 60, "the redelivery")
    got = receiver.requests("/moved/")
    assert [r["headers"]["webhook-id"] for r in got] == [failed["id"]] * 2
    assert api.post(f"/v1/jobs/{job_id}/webhook-deliveries/msg_x/redeliver").status_code == 404


def test_private_addresses_are_refused_at_subscription_and_at_send(
    stack: Stack, api: httpx.Client, owner: str, receiver: Receiver
) -> None:
    refused = api.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/hook"})
    assert refused.status_code == 422, refused.text
    message = refused.json()["error"]["message"]
    assert "127.0.0.1" in message and "loopback" in message, message
    for url in (
        "http://169.254.169.254/latest",
        "http://10.1.2.3/x",
        "http://[::1]/x",
        "http://100.64.0.1/x",
    ):
        assert api.post("/v1/webhooks", json={"url": url}).status_code == 422, url
    assert api.post("/v1/webhooks", json={"url": "ftp://example.com/x"}).status_code == 422
    body = tiny_job({"source": "synthetic"}, webhook={"url": "http://192.168.1.5/hook"})
    job = api.post("/v1/jobs", json=body)
    assert job.status_code == 422, job.text
    assert job.json()["error"]["details"][0]["field"] == "webhook.url"

    # an endpoint that got in anyway (or whose name resolves elsewhere now) is refused at send
    receiver.start()
    subscribe(stack, owner, receiver.url("/private/ok"), ["finished"])
    job_id = queued_job(stack, owner)
    finish(stack, claim(stack, job_id))
    failed = wait_delivery(api, job_id, "failed")
    assert failed["last_error"].startswith("refused") and "loopback" in failed["last_error"]
    assert receiver.requests() == []


def test_the_message_is_written_in_the_events_transaction(stack: Stack, owner: str) -> None:
    subscribe(stack, owner, "http://127.0.0.1:9/tx", ["status"])
    job_id = queued_job(stack, owner)

    def messages() -> int:
        with stack.sessions()() as session:
            rows = session.scalars(select(WebhookMessage).where(WebhookMessage.job_id == job_id))
            return len(rows.all())

    with stack.sessions()() as session:  # a status change that is rolled back
        session.execute(update(Job).where(Job.id == job_id).values(status=JobStatus.CANCELED))
        events.status_events(session, job_id, JobStatus.CANCELED, None)
        in_transaction = session.scalars(
            select(WebhookMessage).where(WebhookMessage.job_id == job_id)
        ).all()
        assert len(in_transaction) == 1
        session.rollback()
    assert messages() == 0
    finish(stack, claim(stack, job_id))  # committed: running, succeeded
    assert messages() == 2


def test_a_message_outlives_the_api_process(
    bare_stack: Stack, owner: str, receiver: Receiver
) -> None:
    stack = bare_stack  # not served by conftest: no API process until the test serves one
    receiver.start()
    subscribe(stack, owner, receiver.url("/restart/ok"), ["finished"])
    job_a, job_b = queued_job(stack, owner), insert_job(stack, owner)
    finish(stack, claim(stack, job_a))  # no API process: nothing sends it
    with stack.sessions()() as session:
        [message] = session.scalars(select(WebhookMessage).where(WebhookMessage.job_id == job_a))
        assert message.status == "pending" and message.attempts == 0
        # a message a dead API process had taken: sent once its lease has run out
        webhooks.on_event(session, job_b, "status", {"status": "failed", "error": None})
        session.execute(
            update(WebhookMessage)
            .where(WebhookMessage.job_id == job_b)
            .values(lease_owner="dead:1", lease_until=utcnow() + timedelta(seconds=1))
        )
        session.commit()

    with stack.serving(**FAST) as served, served.client(stack.new_key(owner)) as client:
        a = wait_delivery(client, job_a, "delivered")
        b = wait_delivery(client, job_b, "delivered")
    got = receiver.requests("/restart/")
    assert sorted(r["headers"]["webhook-id"] for r in got) == sorted([a["id"], b["id"]])


def test_delivery_survives_a_sigkilled_api_process(
    bare_stack: Stack, owner: str, receiver: Receiver
) -> None:
    stack = bare_stack  # not served here: only the API processes started below send
    subscribe(stack, owner, receiver.url("/killed/ok"), ["finished"])
    job_id = queued_job(stack, owner)
    finish(stack, claim(stack, job_id))  # the receiver is down: attempts fail, then...
    key = stack.new_key(owner)
    api = stack.start_api("api-killed", FAST)
    with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {key}"}) as client:
        wait_for(lambda: deliveries(client, job_id)[0]["attempts"] >= 1, 60, "an attempt")
    proc = stack.procs["api-killed"]
    os.killpg(proc.pid, signal.SIGKILL)  # ...the API dies with the message undelivered
    proc.wait(timeout=10)
    receiver.start()
    with stack.sessions()() as session:
        [message] = session.scalars(select(WebhookMessage).where(WebhookMessage.job_id == job_id))
        assert message.status == "pending"

    api = stack.start_api("api-restarted", FAST)
    try:
        with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {key}"}) as client:
            delivered = wait_delivery(client, job_id, "delivered")
    finally:  # it would go on sending other tests' messages with its settings
        restarted = stack.procs.pop("api-restarted")
        os.killpg(restarted.pid, signal.SIGTERM)
        restarted.wait(timeout=15)
    got = receiver.requests("/killed/")
    assert got and {r["headers"]["webhook-id"] for r in got} == {delivered["id"]}


@fast
def test_a_rotated_secret_signs_beside_the_new_one_until_the_overlap_ends(
    stack: Stack, api: httpx.Client, owner: str, receiver: Receiver
) -> None:
    receiver.start()
    subscribe(stack, owner, receiver.url("/rotate/ok"), ["finished"])
    old = api.get("/v1/webhooks/secret").json()
    assert old["previous_secret_expires_at"] is None
    rotated = api.post("/v1/webhooks/secret/rotate").json()
    assert rotated["secret"] != old["secret"] and rotated["previous_secret_expires_at"]
    assert api.get("/v1/webhooks/secret").json() == rotated

    first = queued_job(stack, owner)
    finish(stack, claim(stack, first))
    [during] = receiver.wait_for("/rotate/", 1)
    assert len(during["headers"]["webhook-signature"].split(" ")) == 2
    assert verify(old["secret"], during["headers"], during["body"])
    assert verify(rotated["secret"], during["headers"], during["body"])

    with stack.sessions()() as session:  # the overlap has passed
        session.execute(
            update(WebhookSecret)
            .where(WebhookSecret.owner == owner)
            .values(previous_until=utcnow() - timedelta(seconds=1))
        )
        session.commit()
    assert api.get("/v1/webhooks/secret").json()["previous_secret_expires_at"] is None
    second = queued_job(stack, owner)
    finish(stack, claim(stack, second))
    after = receiver.wait_for("/rotate/", 2)[1]
    assert len(after["headers"]["webhook-signature"].split(" ")) == 1
    assert verify(rotated["secret"], after["headers"], after["body"])
    assert not verify(old["secret"], after["headers"], after["body"])
    log = (stack.workdir / "api.log").read_text()
    assert old["secret"] not in log and rotated["secret"] not in log  # never logged
