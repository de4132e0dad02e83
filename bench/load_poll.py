"""Many clients polling a training job: API latency, errors, and what it costs the trainer.

Starts `sngan serve` (one API process) and one `sngan worker` on loopback against PostgreSQL
and Redis (a fresh database and Redis key prefix, removed at the end), submits a small training job,
measures its steps/s unloaded, then runs N async pollers (httpx) for D seconds, each with its
own API key of the job's owner, each alternating ``GET /v1/jobs/{id}`` and
``GET /v1/jobs/{id}/metrics?names=loss_d,loss_g&after_step=...`` every ``--interval`` seconds
(0: back to back). Prints one table. Not a test: nothing is asserted.

    .venv/bin/python bench/load_poll.py --pollers 300 --duration 30

Needs PostgreSQL and Redis (``--postgres``/``--redis``, the test defaults otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.stack import running, scratch_services, service_env, wait_until  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def job_step(client: httpx.Client, job_id: str) -> tuple[int, str]:
    body = client.get(f"/v1/jobs/{job_id}").json()
    return int(body["progress"]["step"]), str(body["status"])


def measure_rate(client: httpx.Client, job_id: str, seconds: float) -> float:
    """Generator steps per second over `seconds`, from the job's recorded step."""
    s0, _ = job_step(client, job_id)
    t0 = time.monotonic()
    time.sleep(seconds)
    s1, status = job_step(client, job_id)
    if status != "running":
        raise RuntimeError(f"the job stopped ({status}) during the measurement; raise --steps")
    return (s1 - s0) / (time.monotonic() - t0)


async def poll(
    base_url: str, keys: list[str], job_id: str, duration: float, interval: float
) -> tuple[list[float], dict[str, int], int]:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    requests = 0
    limits = httpx.Limits(max_connections=len(keys), max_keepalive_connections=len(keys))
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:
        stop_at = time.monotonic() + duration

        async def poller(i: int, key: str) -> None:
            nonlocal requests
            headers = {"Authorization": f"Bearer {key}"}
            await asyncio.sleep(interval * i / len(keys))  # spread the first requests
            n = 0
            while time.monotonic() < stop_at:
                begun = time.monotonic()
                if n % 2 == 0:
                    url = f"/v1/jobs/{job_id}"
                    params: dict[str, Any] = {}
                else:
                    url = f"/v1/jobs/{job_id}/metrics"
                    params = {"names": "loss_d,loss_g", "after_step": max(0, n * 5), "limit": 50}
                try:
                    response = await client.get(url, params=params, headers=headers)
                    kind = "" if response.status_code == 200 else str(response.status_code)
                except httpx.HTTPError as e:
                    kind = type(e).__name__
                elapsed = time.monotonic() - begun
                requests += 1
                if kind:
                    errors[kind] = errors.get(kind, 0) + 1
                else:
                    latencies.append(elapsed)
                n += 1
                if interval > 0:
                    await asyncio.sleep(max(0.0, interval - elapsed))

        await asyncio.gather(*(poller(i, k) for i, k in enumerate(keys)))
    return latencies, errors, requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pollers", type=int, default=300)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
    parser.add_argument("--unloaded", type=float, default=20.0, help="seconds measured alone")
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "SNGAN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument(
        "--redis", default=os.environ.get("SNGAN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    args = parser.parse_args()

    from app.core.db import session_factory

    workdir = Path(tempfile.mkdtemp(prefix="sngan-bench-"))
    with scratch_services(args.postgres, args.redis) as services:
        env = service_env(
            workdir / "data",
            SNGAN_TRAIN_DEVICE="cpu",
            SNGAN_LOG_LEVEL="WARNING",
            OMP_NUM_THREADS="1",  # the trainer takes one core, leaving the other to the API
            **services,
        )
        with running(env, workdir) as service:
            base_url = service.serve()
            service.worker()
            report(args, base_url, session_factory(services["SNGAN_DATABASE_URL"]))


def report(args: argparse.Namespace, base_url: str, sessions: sessionmaker[Session]) -> None:
    """Train a job, poll it from `args.pollers` clients, and print the table."""
    from app.core.security import create_api_key

    owner = "bench"
    with sessions() as session:
        keys = [create_api_key(session, owner) for _ in range(args.pollers + 1)]
    with httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {keys[-1]}"}, timeout=30
    ) as client:
        body = {
            "name": "load-poll",
            "dataset": {"source": "synthetic", "num_images": 2048},
            "model": {"arch": "cnn32", "g_ch": 16, "d_ch": 16, "z_dim": 64},
            "train": {"steps": args.steps, "batch_size": 16, "n_dis": 1},
            "checkpoint_every": 10_000,
            "sample_every": 10_000,
        }
        job = client.post("/v1/jobs", json=body)
        job.raise_for_status()
        job_id = job.json()["id"]
        wait_until(lambda: job_step(client, job_id)[0] >= 20, 180, "the job to train")
        load_before = os.getloadavg()[0]
        unloaded = measure_rate(client, job_id, args.unloaded)

        s0, _ = job_step(client, job_id)
        t0 = time.monotonic()
        latencies, errors, requests = asyncio.run(
            poll(base_url, keys[: args.pollers], job_id, args.duration, args.interval)
        )
        elapsed = time.monotonic() - t0
        load_after = os.getloadavg()[0]
        # an overloaded API still works through the requests queued before the pollers
        # stopped: wait for it (counted in the loaded window, as it is still busy)
        with httpx.Client(base_url=base_url, headers=client.headers, timeout=300) as patient:
            s1, status = job_step(patient, job_id)
        loaded = (s1 - s0) / (time.monotonic() - t0)
        client.post(f"/v1/jobs/{job_id}/cancel")

    cpu = f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()})"
    print(
        f"load_poll: {args.pollers} pollers x {args.duration:.0f} s, interval "
        f"{args.interval} s, one uvicorn process + one worker (torch 1 thread), {cpu}"
    )
    print()
    print(
        "| pollers | requests | req/s | errors | p50 ms | p99 ms | steps/s alone "
        "| steps/s under load | ratio |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(
        f"| {args.pollers} | {requests} | {requests / elapsed:.0f} | {sum(errors.values())} "
        f"| {percentile(latencies, 0.5) * 1000:.1f} | {percentile(latencies, 0.99) * 1000:.1f} "
        f"| {unloaded:.2f} | {loaded:.2f} | {loaded / unloaded:.2f} |"
    )
    print()
    print(
        f"1-minute load average of the machine: {load_before:.1f} before, "
        f"{load_after:.1f} at the end of the load (other processes than these count too)"
    )
    if errors:
        print(f"errors by kind: {errors}")
    if status != "running":
        print(f"note: the job was {status} at the end of the load phase")


if __name__ == "__main__":
    main()
