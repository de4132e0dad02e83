"""What the browser tests share: the stack's API over real HTTP (a browser needs a socket),
job bodies, and waiting on the API."""

from __future__ import annotations

import secrets
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any

import httpx

# A tiny job: a few dozen steps a second on one CPU core.
TINY: dict[str, Any] = {
    "dataset": {"source": "synthetic", "num_images": 256},
    "model": {"arch": "cnn32", "g_ch": 16, "d_ch": 16},
    "train": {"steps": 60, "batch_size": 16, "n_dis": 1},
    "checkpoint_every": 20,
    "sample_every": 10,
}
FINISHED = ("succeeded", "failed", "canceled")


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def start_api(stack: Any, name: str, env: dict[str, str] | None = None) -> str:
    """uvicorn on a free loopback port with the stack's settings (and `env`), as one of the
    stack's processes (stopped with it); its URL once it answers."""
    port = _free_port()
    argv = [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory"]
    proc = stack.start(name, [*argv, "--host", "127.0.0.1", "--port", str(port)], env)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited at start:\n{stack.log_tail(name)}")
        return _up(url)

    wait(up, 60, f"{name} to start")
    return url


def live_api(stack: Any) -> Live:
    """The stack's own uvicorn when it runs one; otherwise one started here, and a worker
    when the stack has none."""
    url = getattr(stack, "base_url", "") or ""
    if url.startswith("http://127.0.0.1:") and _up(url):
        return Live(url, stack)
    url = start_api(stack, "web-api")
    if not any("worker" in name for name in stack.procs):
        stack.start_worker()
    return Live(url, stack)


def wait(probe: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_status(api: httpx.Client, job_id: str, *statuses: str, timeout: float = 180) -> dict:
    def probe() -> dict | None:
        job = api.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in FINISHED and job["status"] not in statuses:
            raise AssertionError(f"job ended {job['status']}, wanted {statuses}: {job['error']}")
        return job if job["status"] in statuses else None

    return wait(probe, timeout, f"job {job_id} to be {statuses}")


def cancel_all(api: httpx.Client) -> None:
    """Cancel the key's unfinished jobs, so the stack's one worker is free for the next test."""
    for job in api.get("/v1/jobs", params={"limit": 200}).json()["data"]:
        if job["status"] not in FINISHED:
            api.post(f"/v1/jobs/{job['id']}/cancel")


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
