"""What the browser tests share: the stack's API over real HTTP (a browser needs a socket),
job bodies, and waiting on the API."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import httpx

from app.core.status import FINISHED_STATUSES as FINISHED
from tests.clients import cancel_all
from tests.stacks import wait_for

__all__ = [
    "FINISHED",
    "Live",
    "cancel_all",
    "insert_long_job",
    "job_body",
    "live_api",
    "wait_status",
]

# A tiny job: a few dozen steps a second on one CPU core.
TINY: dict[str, Any] = {
    "dataset": {"source": "synthetic", "num_images": 256},
    "model": {"arch": "cnn32", "g_ch": 16, "d_ch": 16},
    "train": {"steps": 60, "batch_size": 16, "n_dis": 1},
    "checkpoint_every": 20,
    "sample_every": 10,
}


def job_body(steps: int = 60, **top: Any) -> dict[str, Any]:
    body: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v for k, v in TINY.items()}
    body["train"]["steps"] = steps
    body.update(top)
    return body


@dataclass
class Live:
    """The API of a test stack on a loopback port, with a worker."""

    url: str
    stack: Any

    def new_key(self, owner: str | None = None) -> str:
        return str(self.stack.new_key(owner or f"web-{secrets.token_hex(4)}"))

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def live_api(stack: Any) -> Live:
    """The stack's own uvicorn when it runs one; otherwise one started here, and a worker
    when the stack has none."""
    url = getattr(stack, "base_url", "") or ""
    if url.startswith("http://127.0.0.1:") and _up(url):
        return Live(url, stack)
    url = stack.start_api("web-api")
    if not any("worker" in name for name in stack.procs):
        stack.start_worker()
    return Live(url, stack)


def wait_status(api: httpx.Client, job_id: str, *statuses: str, timeout: float = 180) -> dict:
    def probe() -> dict | None:
        job = api.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in FINISHED and job["status"] not in statuses:
            raise AssertionError(f"job ended {job['status']}, wanted {statuses}: {job['error']}")
        return job if job["status"] in statuses else None

    return wait_for(probe, timeout, f"job {job_id} to be {statuses}", interval=0.2)


def insert_long_job(stack: Any, owner: str, steps: int, eval_every: int = 0) -> str:
    """A succeeded job of `owner` with `steps` points in each training series (and IS and
    FID every `eval_every` steps), written straight into the stack's database as the
    worker's sinks write them; its id."""
    import uuid
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import insert

    from app.api.schemas import JobCreate
    from app.core.tables import Job, Metric

    names = ("loss_d", "loss_g", "d_real", "d_fake", "lr", "steps_per_s")
    config = JobCreate.model_validate(job_body(steps=steps)).model_dump(mode="json")
    job_id = uuid.uuid4().hex
    start = datetime.now(UTC) - timedelta(hours=1)
    with stack.sessions()() as session:
        session.add(
            Job(
                id=job_id,
                owner=owner,
                name=f"long-{steps}",
                status="succeeded",
                config=config,
                created_at=start,
                updated_at=start,
                started_at=start,
                finished_at=start + timedelta(minutes=30),
                step=steps,
                total_steps=steps,
                latest_metrics={n: 1.0 for n in names},
            )
        )
        session.commit()
        rows = [
            {"job_id": job_id, "name": n, "step": s, "value": 1.0 + (s % 7) / 10, "time": start}
            for s in range(1, steps + 1)
            for n in names
        ]
        rows += [
            {"job_id": job_id, "name": n, "step": s, "value": v + s / 1000, "time": start}
            for s in range(eval_every, steps + 1, eval_every or steps + 1)
            for n, v in (("is_mean", 2.0), ("fid", 80.0))
        ]
        session.execute(insert(Metric), rows)
        session.commit()
    return job_id
