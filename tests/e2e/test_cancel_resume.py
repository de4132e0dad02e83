"""Cancel a running job, then resume it to the end; and jobs whose worker or message was
lost are recovered by the reaper."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import httpx
from PIL import Image

from tests.builders import METRIC_NAMES, insert_job, tiny_job
from tests.clients import read_events, wait_for_status
from tests.stacks import Stack, wait_for

STEPS = 300


def test_cancel_writes_a_final_checkpoint_and_resume_finishes(
    worker: Stack, api: httpx.Client
) -> None:
    body = tiny_job(
        {"source": "synthetic", "num_images": 128},
        steps=STEPS,
        checkpoint_every=10_000,  # no periodic checkpoint: the canceled one is the only one
        sample_every=10_000,
    )
    job = api.post("/v1/jobs", json=body).json()
    url = f"/v1/jobs/{job['id']}"

    wait_for(lambda: api.get(url).json()["progress"]["step"] >= 20, 120, "the job to make progress")
    canceling = api.post(f"{url}/cancel")
    assert canceling.status_code == 202, canceling.text
    assert canceling.json()["status"] in ("canceling", "canceled")
    canceled = wait_for_status(api, job["id"], "canceled", timeout=60)
    stopped_at = canceled["progress"]["step"]
    assert 20 <= stopped_at < STEPS, f"the job was not stopped mid-run ({stopped_at})"

    checkpoints = api.get(f"{url}/checkpoints").json()["data"]
    assert [c["step"] for c in checkpoints] == [stopped_at]
    grid = api.get(f"{url}/samples", params={"n": 4, "seed": 3})
    assert grid.status_code == 200
    Image.open(io.BytesIO(grid.content)).load()
    assert api.post(f"{url}/cancel").status_code == 409  # already canceled

    resumed = api.post(f"{url}/resume")
    assert resumed.status_code == 202, resumed.text
    assert resumed.json()["status"] == "queued"
    done = wait_for_status(api, job["id"], "succeeded", timeout=180)
    assert done["attempts"] == 2
    assert done["progress"]["step"] == STEPS
    assert [c["step"] for c in api.get(f"{url}/checkpoints").json()["data"]] == [stopped_at, STEPS]

    points = api.get(f"{url}/metrics", params={"limit": 10_000}).json()["data"]
    seen = [(p["name"], p["step"]) for p in points]
    assert len(seen) == len(set(seen)) == len(METRIC_NAMES) * STEPS
    # steps up to the checkpoint were not trained again: their points predate the cancel
    canceled_at = datetime.fromisoformat(canceled["finished_at"])
    assert all(
        datetime.fromisoformat(p["time"]) <= canceled_at for p in points if p["step"] <= stopped_at
    )
    assert all(
        datetime.fromisoformat(p["time"]) > canceled_at for p in points if p["step"] > stopped_at
    )

    statuses = [e.data["status"] for e in read_events(api, job["id"]) if e.event == "status"]
    assert statuses == [
        "queued",
        "running",
        "canceling",
        "canceled",
        "queued",
        "running",
        "succeeded",
    ]
    assert api.post(f"{url}/resume").status_code == 409  # succeeded jobs do not resume


def test_a_job_of_a_dead_worker_is_requeued_and_finished(
    stack: Stack, worker: Stack, owner: str, api: httpx.Client
) -> None:
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    job_id = insert_job(
        stack,
        owner,
        status="running",
        steps=20,
        attempts=1,
        lease_owner="a-worker-that-died:1",
        lease_token=1,
        heartbeat_at=long_ago,
        started_at=long_ago,
    )
    done = wait_for_status(api, job_id, "succeeded", timeout=120)
    assert done["attempts"] == 2
    assert done["progress"]["step"] == 20
    statuses = [e.data for e in read_events(api, job_id) if e.event == "status"]
    assert statuses[0] == {"status": "queued", "error": None, "reason": "lease expired"}


def test_a_queued_job_whose_message_was_lost_is_enqueued_again(
    stack: Stack, worker: Stack, owner: str, api: httpx.Client
) -> None:
    job_id = insert_job(stack, owner, status="queued", steps=10, enqueued_at=None)
    done = wait_for_status(api, job_id, "succeeded", timeout=120)
    assert done["attempts"] == 1
