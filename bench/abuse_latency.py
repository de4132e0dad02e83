"""Does the API keep answering while a client abuses it with the largest bodies the limits
allow? `GET /v1/jobs/{id}` latency from one client, first alone, then while A abusers send
back to back: JSON bodies of exactly SNGAN_MAX_JSON_BODY_BYTES (a job spec padded to the
limit, so it is read, parsed and validated), bodies one byte over (413), and 100 MB bodies
(413 from the Content-Length alone, the rest never read). Prints one table. Not a test:
nothing is asserted (tests/app/test_hostile_inputs.py has the test, bounded for CI).

    .venv/bin/python bench/abuse_latency.py --abusers 4 --duration 15

Starts `sngan serve` (one API process) on a scratch embedded data directory (SQLite), or on a
scratch PostgreSQL database and Redis prefix with --postgres; auth is on, each client with
its own key.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from multiprocessing.queues import Queue
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.stack import running, scratch_services, service_env  # noqa: E402

LIMIT = 1024 * 1024  # SNGAN_MAX_JSON_BODY_BYTES' default


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def bodies() -> list[tuple[str, bytes, dict[str, str]]]:
    spec = {
        "name": "abuse",
        "dataset": {"source": "synthetic", "num_images": 64},
        "model": {"arch": "cnn32", "z_dim": 16, "g_ch": 8, "d_ch": 8},
        "train": {"steps": 10, "batch_size": 4},
        "eval": {"metrics": ["is"] * 16},  # the longest list allowed
    }
    at_limit = json.dumps(spec).encode()
    at_limit += b" " * (LIMIT - len(at_limit))
    json_type = {"Content-Type": "application/json"}
    return [
        ("at the limit", at_limit, json_type),
        ("one byte over", at_limit + b" ", json_type),
        ("100 MB", b" " * (100 * 1024 * 1024), json_type),
    ]


async def poll(client: httpx.AsyncClient, url: str, seconds: float) -> list[float]:
    latencies: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        response = await client.get(url)
        latencies.append(time.perf_counter() - start)
        assert response.status_code == 200, response.text
        await asyncio.sleep(0.01)
    return latencies


def abuse(url: str, key: str, seconds: float, counts: Queue[dict[str, int]]) -> None:
    """One abuser, in a process of its own (sending 100 MB costs the client CPU, which must
    not delay the poller's own event loop and pass for the server's latency)."""
    kinds = bodies()
    seen: dict[str, int] = {}
    end = time.perf_counter() + seconds
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as client:
        while time.perf_counter() < end:
            for name, body, headers in kinds:
                try:
                    response = client.post("/v1/jobs", content=body, headers=headers)
                    answer = f"{name}: {response.status_code}"
                except Exception as e:  # the server answers 413 and closes the connection
                    answer = f"{name}: {type(e).__name__}"
                seen[answer] = seen.get(answer, 0) + 1
    counts.put(seen)


async def measure(url: str, poll_key: str, abuse_key: str, args: argparse.Namespace) -> None:
    auth = {"Authorization": f"Bearer {poll_key}"}
    async with httpx.AsyncClient(base_url=url, headers=auth, timeout=30) as client:
        spec = {"dataset": {"source": "synthetic", "num_images": 64}, "train": {"steps": 10}}
        job = (await client.post("/v1/jobs", json=spec)).json()["id"]
        target = f"/v1/jobs/{job}"
        alone = await poll(client, target, args.duration)
        queue: Queue[dict[str, int]] = multiprocessing.Queue()
        abusers = [
            multiprocessing.Process(target=abuse, args=(url, abuse_key, args.duration, queue))
            for _ in range(args.abusers)
        ]
        for process in abusers:
            process.start()
        loaded = await poll(client, target, args.duration)
        counts: dict[str, int] = {}
        for _ in abusers:
            for answer, n in queue.get(timeout=120).items():
                counts[answer] = counts.get(answer, 0) + n
        for process in abusers:
            process.join()
    rows = [("alone", alone), (f"{args.abusers} abusers", loaded)]
    print(f"\n{platform.node()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    print(f"stack: {'PostgreSQL' if args.postgres else 'SQLite'}, one API process\n")
    print("| GET /v1/jobs/{id} | requests | p50 ms | p99 ms | max ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, values in rows:
        p50, p99 = percentile(values, 0.5) * 1e3, percentile(values, 0.99) * 1e3
        print(f"| {name} | {len(values)} | {p50:.1f} | {p99:.1f} | {max(values) * 1e3:.1f} |")
    print("\n| abuse request: answer | count |\n| --- | ---: |")
    for key, count in sorted(counts.items()):
        print(f"| {key} | {count} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--abusers", type=int, default=4)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per phase")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL + Redis stack")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        data = work / "data"
        settings: dict[str, str]
        if args.postgres:
            settings = stack.enter_context(scratch_services())
        else:
            settings = {"SNGAN_DATABASE_URL": f"sqlite:///{data / 'sngan.db'}"}
        env = service_env(data, SNGAN_MAX_CONCURRENT_JOBS_PER_KEY="100000", **settings)
        from app.core.db import migrate, session_factory
        from app.core.security import create_api_key

        migrate(env["SNGAN_DATABASE_URL"])
        with session_factory(env["SNGAN_DATABASE_URL"])() as session:
            poll_key = create_api_key(session, "poller")
            abuse_key = create_api_key(session, "abuser")
        service = stack.enter_context(running(env, work))
        url = service.serve()
        asyncio.run(measure(url, poll_key, abuse_key, args))


if __name__ == "__main__":
    main()
