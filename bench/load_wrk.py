"""The polled routes under `wrk`, beside a bare route returning the same bytes, while a job
trains: requests/s and p50/p99 per route, the API process's CPU-seconds per 1,000 requests
(from /proc/<pid>/stat, stable on a noisy machine), and the trainer's steps/s alone and under
each load. Not a test: nothing is asserted.

One uvicorn process serves `bench/wrk_app.py` (the service's app plus ``GET /bench/bare``);
one `sngan worker` trains a small CPU job. Each round runs, one after the other, for
``--duration`` seconds each (``--connections`` connections, ``--threads`` wrk threads):

- ``GET /v1/jobs/{id}`` (changes about once a second while the job trains);
- ``GET /v1/jobs/{id}/metrics?names=loss_d,loss_g&after_step=N&limit=50`` (a full page: its
  bytes stay the same);
- the same metrics page with its ``If-None-Match`` (304s);
- ``GET /bench/bare``: the job's bytes as of the round's start, with no database, key or
  schema work.

    .venv/bin/python bench/load_wrk.py                       # embedded (SQLite), auth off
    .venv/bin/python bench/load_wrk.py --postgres --auth on  # PostgreSQL + Redis, auth on
    .venv/bin/python bench/load_wrk.py --source /tmp/old     # another checkout's code

Needs `wrk` on the PATH (Debian's package: ``apt-get install wrk``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.stack import (  # noqa: E402
    SNGAN,
    Service,
    free_port,
    running,
    scratch_services,
    service_env,
    wait_until,
)

LUA = REPO / "bench" / "wrk_poll.lua"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    """One wrk run against one route."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int  # socket errors and statuses other than 200/304
    not_modified: int
    cpu_s: float  # the API process's user + system CPU during the run
    steps_per_s: float  # the trainer's, during the run


@dataclass
class Target:
    name: str
    path: str
    if_none_match: str = ""
    runs: list[Run] = field(default_factory=list)


# The job the worker trains throughout a load benchmark (one torch thread): long enough never
# to finish, checkpoints and grids rare enough not to weigh on its steps/s.
TRAINER_JOB: dict[str, Any] = {
    "dataset": {"source": "synthetic", "num_images": 2048},
    "model": {"arch": "cnn32", "g_ch": 16, "d_ch": 16, "z_dim": 64},
    "train": {"steps": 1_000_000, "batch_size": 16, "n_dis": 1},
    "checkpoint_every": 100_000,
    "sample_every": 100_000,
}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14, 15)


def job_step(client: httpx.Client, job_id: str) -> int:
    return int(client.get(f"/v1/jobs/{job_id}").json()["progress"]["step"])


def steps_per_s(client: httpx.Client, job_id: str, seconds: float) -> float:
    s0, t0 = job_step(client, job_id), time.monotonic()
    time.sleep(seconds)
    return (job_step(client, job_id) - s0) / (time.monotonic() - t0)


def wrk(url: str, target: Target, args: argparse.Namespace, key: str) -> dict[str, int]:
    env = {**os.environ, "WRK_KEY": key, "WRK_IF_NONE_MATCH": target.if_none_match}
    command = ["wrk", "-t", str(args.threads), "-c", str(args.connections)]
    command += ["-d", f"{args.duration}s", "--timeout", "10s", "-s", str(LUA), url + target.path]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("WRK_JSON "))
    result: dict[str, int] = json.loads(line.removeprefix("WRK_JSON "))
    return result


def measure(
    service: Service, api_pid: int, client: httpx.Client, job_id: str, target: Target,
    args: argparse.Namespace, key: str,
) -> Run:  # fmt: skip
    cpu0, s0, t0 = cpu_seconds(api_pid), job_step(client, job_id), time.monotonic()
    found = wrk(service.url, target, args, key)
    cpu1, s1, t1 = cpu_seconds(api_pid), job_step(client, job_id), time.monotonic()
    return Run(
        requests=found["requests"],
        seconds=found["duration_us"] / 1e6,
        p50_ms=found["p50_us"] / 1000,
        p99_ms=found["p99_us"] / 1000,
        errors=found["socket_errors"] + found["other"],
        not_modified=found["not_modified"],
        cpu_s=cpu1 - cpu0,
        steps_per_s=(s1 - s0) / (t1 - t0),
    )


@contextlib.contextmanager
def database(postgres: bool) -> Iterator[dict[str, str]]:
    if postgres:
        with scratch_services() as services:
            yield services
    else:
        yield {}


def serve(service: Service, source: Path) -> int:
    """The bench app under uvicorn (one process, access log off as `sngan serve` logs at
    WARNING); its pid once it answers."""
    port = free_port()
    with (service.workdir / "api.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "wrk_app:create_app", "--factory"]
            + ["--app-dir", str(REPO / "bench"), "--port", str(port)]
            + ["--log-level", "warning", "--no-access-log"],
            cwd=source,
            env=service.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    service.procs["api"] = proc
    service.url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited:\n{service.log_tail('api')}")
        try:
            return httpx.get(f"{service.url}/healthz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, 120, "the API")
    return proc.pid


def start_worker(service: Service, source: Path) -> None:
    """`sngan worker` running `source`'s code: it starts Celery with ``python -m``, which puts
    its working directory first on the path."""
    with (service.workdir / "worker.log").open("ab") as log:
        service.procs["worker"] = subprocess.Popen(
            [str(SNGAN), "worker", "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=source,
            env=service.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def main() -> None:
    # a SIGTERM (timeout, kill) unwinds through `running`, which stops the processes
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL + Redis stack")
    parser.add_argument("--auth", choices=["on", "off"], default="off")
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--unloaded", type=float, default=10.0, help="trainer alone, seconds")
    parser.add_argument("--source", type=Path, default=REPO, help="the code to serve")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk (Debian's package)")

    source = args.source.resolve()
    workdir = Path(tempfile.mkdtemp(prefix="sngan-wrk-"))
    with database(args.postgres) as services:
        env = service_env(
            workdir / "data",
            SNGAN_AUTH=args.auth,
            SNGAN_TRAIN_DEVICE="cpu",
            SNGAN_LOG_LEVEL="WARNING",
            SNGAN_RATE_LIMIT_PER_MINUTE=str(10**9),  # the load is one key's
            OMP_NUM_THREADS="1",  # the trainer takes one core
            **services,
        )
        # the served code first (`--source`), this checkout's bench modules after it
        env["PYTHONPATH"] = os.pathsep.join([str(source), str(REPO)])
        with running(env, workdir) as service:
            api_pid = serve(service, source)
            start_worker(service, source)
            report(args, service, api_pid, services.get("SNGAN_DATABASE_URL"))


def report(
    args: argparse.Namespace, service: Service, api_pid: int, database_url: str | None
) -> None:
    from app.core.db import session_factory
    from app.core.security import create_api_key

    key = ""
    if args.auth == "on":
        url = database_url or f"sqlite:///{service.workdir / 'data' / 'sngan.db'}"
        with session_factory(url)() as session:
            key = create_api_key(session, "bench")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with httpx.Client(base_url=service.url, headers=headers, timeout=60) as client:
        created = client.post("/v1/jobs", json={**TRAINER_JOB, "name": "load-wrk"})
        created.raise_for_status()
        job_id = created.json()["id"]
        wait_until(lambda: job_step(client, job_id) >= 60, 300, "the job to train 60 steps")
        load_before = os.getloadavg()
        alone = steps_per_s(client, job_id, args.unloaded)
        after = max(0, job_step(client, job_id) - 55)  # a full page of 50 steps from here
        metrics = f"/v1/jobs/{job_id}/metrics?names=loss_d,loss_g&after_step={after}&limit=50"
        tag = client.get(metrics).headers.get("ETag", "")
        targets = [
            Target("GET /v1/jobs/{id}", f"/v1/jobs/{job_id}"),
            Target("GET /v1/jobs/{id}/metrics?after_step=…", metrics),
            Target("the same, If-None-Match (304)", metrics, if_none_match=tag),
            Target("bare route, same bytes as the job", "/bench/bare"),
        ]
        for _ in range(args.rounds):
            client.put("/bench/bare", content=client.get(f"/v1/jobs/{job_id}").content)
            for target in targets:
                target.runs.append(measure(service, api_pid, client, job_id, target, args, key))
        alone_after = steps_per_s(client, job_id, args.unloaded)
        load_after = os.getloadavg()
        size = len(client.get(f"/v1/jobs/{job_id}").content)
        client.post(f"/v1/jobs/{job_id}/cancel")
    print_table(args, targets, (alone + alone_after) / 2, size, load_before, load_after)


def print_table(
    args: argparse.Namespace,
    targets: list[Target],
    alone: float,
    size: int,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
) -> None:
    stack = "PostgreSQL + Redis" if args.postgres else "embedded (SQLite)"
    print(
        f"load_wrk: {stack}, auth {args.auth}, served from {args.source}; wrk -t{args.threads} "
        f"-c{args.connections} -d{args.duration}s, {args.rounds} rounds alternated; "
        f"one uvicorn process + one worker (torch 1 thread), {os.cpu_count()} CPU cores; "
        f"job body {size} bytes"
    )
    print()
    print(
        "| route | req/s per round | p50 ms | p99 ms | errors | 304s | of bare req/s "
        "| API CPU-s / 1,000 req | trainer steps/s (alone "
        f"{alone:.2f}) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    bare = targets[-1]
    bare_rate = sum(r.requests for r in bare.runs) / sum(r.seconds for r in bare.runs)
    for target in targets:
        runs = target.runs
        rates = [r.requests / r.seconds for r in runs]
        rate = sum(r.requests for r in runs) / sum(r.seconds for r in runs)
        cpu = 1000 * sum(r.cpu_s for r in runs) / sum(r.requests for r in runs)
        speed = sum(r.steps_per_s for r in runs) / len(runs)
        print(
            f"| {target.name} | {' / '.join(f'{x:,.0f}' for x in rates)} "
            f"| {' / '.join(f'{r.p50_ms:.1f}' for r in runs)} "
            f"| {' / '.join(f'{r.p99_ms:.1f}' for r in runs)} "
            f"| {sum(r.errors for r in runs)} | {sum(r.not_modified for r in runs)} "
            f"| {rate / bare_rate:.2f} | {cpu:.3f} | {speed:.2f} ({speed / alone:.2f}×) |"
        )
    print()
    print(
        f"load average (1, 5, 15 min): {', '.join(f'{x:.1f}' for x in load_before)} before, "
        f"{', '.join(f'{x:.1f}' for x in load_after)} after (other processes count too)"
    )


if __name__ == "__main__":
    main()
