"""Hundreds of event streams of one job opening at once (a team's dashboards reconnecting after
an API restart): does the API keep answering, is any stream cut, how fast does a new event
reach every stream, and what do the open streams cost the database. Not a test: nothing is
asserted.

One uvicorn process (`bench/wrk_app.py`, the service's app) on a scratch PostgreSQL database,
auth on, one worker training a job throughout (its steps/s alone and beside the streams); a
queued job with one event. N streams open at once while another process GETs the
job back to back; then a new event is written and its delivery to every stream is timed; then
the database's transactions/s (pg_stat_database.xact_commit) are counted with 1 stream open
and with N open.

    .venv/bin/python bench/streams_open.py --streams 300
    .venv/bin/python bench/streams_open.py --streams 300 --source /tmp/old   # older code
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.load_wrk import (  # noqa: E402
    CLOCK_TICKS,
    TRAINER_JOB,
    cpu_seconds,
    job_step,
    serve,
    start_worker,
    steps_per_s,
)
from bench.stack import (  # noqa: E402
    admin_connect,
    running,
    scratch_services,
    service_env,
    wait_until,
)

# The GET probe, run in its own process; prints each request's seconds when terminated.
PROBE = """
import signal, sys, time
import httpx
url, key, path = sys.argv[1:4]
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
took = []
with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as c:
    while not stop:
        begun = time.monotonic()
        c.get(path).raise_for_status()
        took.append(time.monotonic() - begun)
print(" ".join(map(str, took)))
"""


def trainer_speed(url: str, auth: dict[str, str], job_id: str, seconds: float) -> float:
    with httpx.Client(base_url=url, headers=auth, timeout=60) as client:
        return steps_per_s(client, job_id, seconds)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def machine_busy() -> tuple[float, float]:
    """(busy, all) CPU seconds of the whole machine so far, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields) - idle) / CLOCK_TICKS, sum(fields) / CLOCK_TICKS


def commits(database: str) -> int:
    with admin_connect() as conn:
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (database,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def add_progress(database_url: str, job_id: str, step: int) -> float:
    """A progress event written as the worker writes one; when it was committed."""
    from app.core import events
    from app.core.db import session_factory

    with session_factory(database_url)() as session:
        events.append(session, job_id, "progress", {"step": step})
        session.commit()
    return time.monotonic()


async def run(
    args: argparse.Namespace,
    url: str,
    key: str,
    job_id: str,
    trainer_job: str,
    db: dict[str, str],
    api_pid: int,
) -> None:
    auth = {"Authorization": f"Bearer {key}"}
    database_url, database = db["SNGAN_DATABASE_URL"], db["SNGAN_DATABASE_URL"].rsplit("/", 1)[1]
    received: list[dict[int, float]] = [{} for _ in range(args.streams)]  # step -> when
    opened = [False] * args.streams
    cut: list[str] = []
    release = asyncio.Event()
    limits = httpx.Limits(max_connections=args.streams + 5)
    async with httpx.AsyncClient(base_url=url, headers=auth, limits=limits, timeout=120) as c:

        async def stream(i: int) -> None:
            try:
                async with c.stream("GET", f"/v1/jobs/{job_id}/events") as response:
                    if response.status_code != 200:
                        body = (await response.aread())[:200].decode(errors="replace")
                        cut.append(f"HTTP {response.status_code}: {body}")
                        return
                    async for line in response.aiter_lines():
                        if line.startswith("event: "):
                            opened[i] = True
                        elif line.startswith("data: ") and '"step"' in line:
                            step = int(line.split('"step": ')[1].split("}")[0].split(",")[0])
                            received[i][step] = time.monotonic()
                        if release.is_set():
                            return
            except httpx.HTTPError as e:
                cut.append(f"{type(e).__name__}: {e}")

        async def probe(until: Any) -> list[float]:
            """GET the job back to back from another process until `until()`: the streams'
            own client, busy with 1,000 connections in this event loop, would time itself."""
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", PROBE, url, key, f"/v1/jobs/{job_id}",
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            while not until():
                await asyncio.sleep(0.05)
            proc.terminate()
            out, _ = await proc.communicate()
            return [float(x) for x in out.split()]

        one = asyncio.create_task(stream(0))
        while not opened[0]:
            await asyncio.sleep(0.05)
        c0, t0, cpu0, m0 = commits(database), time.monotonic(), cpu_seconds(api_pid), machine_busy()
        own0 = time.process_time()
        alone_speed = await asyncio.to_thread(trainer_speed, url, auth, trainer_job, args.window)
        alone_tps = (commits(database) - c0) / (time.monotonic() - t0)
        alone_cpu = (cpu_seconds(api_pid) - cpu0) / (time.monotonic() - t0)
        alone_own = (time.process_time() - own0) / (time.monotonic() - t0)
        m1 = machine_busy()
        alone_machine = (m1[0] - m0[0]) / (m1[1] - m0[1])

        begun = time.monotonic()
        tasks = [one] + [asyncio.create_task(stream(i)) for i in range(1, args.streams)]
        opening = await probe(lambda: all(opened) or len(cut) + sum(opened) >= args.streams)
        open_s = time.monotonic() - begun

        c0, t0, cpu0, m0 = commits(database), time.monotonic(), cpu_seconds(api_pid), machine_busy()
        own0 = time.process_time()
        # the streams held: what they cost the database and the API, and the trainer beside
        held_speed = await asyncio.to_thread(trainer_speed, url, auth, trainer_job, args.window)
        held_tps = (commits(database) - c0) / (time.monotonic() - t0)
        held_cpu = (cpu_seconds(api_pid) - cpu0) / (time.monotonic() - t0)
        held_own = (time.process_time() - own0) / (time.monotonic() - t0)
        m1 = machine_busy()
        held_machine = (m1[0] - m0[0]) / (m1[1] - m0[1])
        t1 = time.monotonic()
        held = await probe(lambda: time.monotonic() - t1 > args.window / 2)

        delays: list[float] = []
        for step in range(1, args.events + 1):
            written = await asyncio.to_thread(add_progress, database_url, job_id, step)
            await asyncio.sleep(2.0)
            delays += [r[step] - written for r in received if step in r]
        release.set()
        await add_progress_and_wait(database_url, job_id, tasks)
        # alone again: the trainer's speed drifts over a run by itself (seen: 0.88x from one
        # window to the next with 1 stream held throughout), so "alone" is the mean of the
        # windows before and after the held one
        after_speed = await asyncio.to_thread(trainer_speed, url, auth, trainer_job, args.window)

    missing = args.streams * args.events - len(delays)
    print(
        f"streams_open: {args.streams} streams of one job opened at once, PostgreSQL, auth on, "
        f"one uvicorn process, served from {args.source}; {os.cpu_count()} CPU cores"
    )
    print()
    print("| | value |")
    print("| --- | ---: |")
    print(f"| all streams open after | {open_s:.1f} s |")
    print(f"| streams cut | {len(cut)} |")
    print(
        f"| GET /v1/jobs/{{id}} while they open: n, p50, p99, max | {len(opening)}, "
        f"{percentile(opening, 0.5) * 1000:.0f} ms, {percentile(opening, 0.99) * 1000:.0f} ms, "
        f"{max(opening, default=float('nan')) * 1000:.0f} ms |"
    )
    print(
        f"| GET /v1/jobs/{{id}} while they are held: p50, p99 | "
        f"{percentile(held, 0.5) * 1000:.1f} ms, {percentile(held, 0.99) * 1000:.1f} ms |"
    )
    print(
        f"| a new event reaches every stream: p50, p99 (missed) | "
        f"{percentile(delays, 0.5) * 1000:.0f} ms, {percentile(delays, 0.99) * 1000:.0f} ms "
        f"({missing}) |"
    )
    print(
        f"| database transactions/s, 1 stream → {args.streams} held | "
        f"{alone_tps:.1f} → {held_tps:.1f} |"
    )
    print(
        f"| the API process's CPU, 1 stream → {args.streams} held | "
        f"{alone_cpu * 100:.1f}% → {held_cpu * 100:.1f}% of a core |"
    )
    print(
        f"| the streams' client's CPU (this process), 1 stream → {args.streams} held | "
        f"{alone_own * 100:.1f}% → {held_own * 100:.1f}% of a core |"
    )
    print(
        f"| the machine's CPU busy, 1 stream → {args.streams} held | "
        f"{alone_machine * 100:.0f}% → {held_machine * 100:.0f}% of all cores |"
    )
    alone = (alone_speed + after_speed) / 2
    print(
        f"| the trainer's steps/s: 1 stream, {args.streams} held, none (held / mean of the "
        f"others) | {alone_speed:.2f}, {held_speed:.2f}, {after_speed:.2f} "
        f"({held_speed / alone:.2f}×) |"
    )
    print()
    print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()}")
    if cut:
        print("first cuts:", cut[:3])


async def add_progress_and_wait(database_url: str, job_id: str, tasks: list[Any]) -> None:
    """One more event wakes the streams, which then see the release and close."""
    await asyncio.to_thread(add_progress, database_url, job_id, 10**6)
    await asyncio.wait(tasks, timeout=60)
    for task in tasks:
        task.cancel()


def main() -> None:
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # unwind: stop the processes
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=300)
    parser.add_argument("--events", type=int, default=3, help="events timed to every stream")
    parser.add_argument("--window", type=float, default=10.0, help="seconds per tps count")
    parser.add_argument("--source", type=Path, default=REPO, help="the code to serve")
    args = parser.parse_args()

    from app.core.db import session_factory
    from app.core.security import create_api_key

    workdir = Path(tempfile.mkdtemp(prefix="sngan-streams-"))
    with scratch_services() as services:
        env = service_env(
            workdir / "data",
            SNGAN_AUTH="on",
            SNGAN_LOG_LEVEL="WARNING",
            SNGAN_RATE_LIMIT_PER_MINUTE=str(10**9),  # the GET probe is one key's
            OMP_NUM_THREADS="1",  # the trainer takes one core, as in load_wrk.py
            **services,
        )
        env["PYTHONPATH"] = os.pathsep.join([str(args.source.resolve()), str(REPO)])
        with running(env, workdir) as service:
            api_pid = serve(service, args.source.resolve())
            with session_factory(services["SNGAN_DATABASE_URL"])() as session:
                key = create_api_key(session, "bench")
            start_worker(service, args.source.resolve())
            with httpx.Client(
                base_url=service.url, headers={"Authorization": f"Bearer {key}"}, timeout=60
            ) as c:
                # the job the worker trains throughout (one torch thread), then the job the
                # streams follow, queued behind it
                trainer = c.post("/v1/jobs", json={**TRAINER_JOB, "name": "streams-trainer"})
                trainer.raise_for_status()
                trainer_id = trainer.json()["id"]
                wait_until(lambda: job_step(c, trainer_id) >= 60, 300, "the trainer")
                body = {"dataset": {"source": "synthetic", "num_images": 64}}
                job = c.post("/v1/jobs", json=body)
                job.raise_for_status()
            asyncio.run(
                run(args, service.url, key, job.json()["id"], trainer_id, services, api_pid)
            )


if __name__ == "__main__":
    main()
