"""How fast /metrics answers the dashboard's downsampled view of a very long run, against the
same view of a short one.

Writes two finished jobs into a scratch SQLite data directory, or with ``--postgres`` into a
PostgreSQL database made for the run (dropped at the end): ``--points`` steps (default
1,000,000) of the six training series and ``--baseline`` steps (default 1,000), bulk-loaded as
``bench/dashboard_load.py`` does. Starts ``sngan serve`` on it (bench/stack.py: one API
process, auth off) and asks each job, one request at a time over one kept-alive connection,
``--repeats`` times after ``--warmup`` unrecorded ones:

- overview: what the job page asks first: the six series, ``every`` = ceil(steps / 1000)
  (about 1,000 steps), ``limit=10000``, ``format=columns``;
- overview, points form: the same page as a list of {step, name, value, time} objects;
- zoom: 1,000 consecutive steps from the middle of the run at full detail (columns);
- evaluations: the IS / FID / KID names the page asks without ``every`` (a sparse series;
  none are logged here, so the answer is empty: the cost is finding that out);

and, in this process, the database part of the overview alone
(``app.api.services.outputs.metrics``). Prints one table. Not a test: nothing is asserted.

    .venv/bin/python bench/metrics_long.py                 # SQLite (embedded)
    .venv/bin/python bench/metrics_long.py --postgres      # PostgreSQL
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.dashboard_load import NAMES, insert_job  # noqa: E402
from bench.stack import (  # noqa: E402
    add_postgres_option,
    running,
    scratch_services,
    service_env,
)

EVAL_NAMES = ("is_mean", "is_std", "fid", "kid_mean", "kid_std")
OVERVIEW_STEPS = 1000  # charts.js MAX_POINTS


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile: with 50 samples, p99 is the largest."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1)]


def timed(call: Callable[[], Any], warmup: int, repeats: int) -> tuple[list[float], Any]:
    """ms of each of `repeats` calls after `warmup` unrecorded ones, and the last result."""
    result = None
    for _ in range(warmup):
        result = call()
    ms = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = call()
        ms.append((time.perf_counter() - t0) * 1000)
    return ms, result


def queries(steps: int) -> dict[str, dict[str, Any]]:
    """The /metrics queries measured on a job of `steps` steps."""
    every = max(1, math.ceil(steps / OVERVIEW_STEPS))
    train = ",".join(NAMES)
    middle = steps // 2
    return {
        "overview": {"names": train, "every": every, "limit": 10_000, "format": "columns"},
        "overview, points form": {"names": train, "every": every, "limit": 10_000},
        "zoom (1,000 steps, full detail)": {
            "names": train,
            "after_step": middle,
            "limit": 1000,
            "format": "columns",
        },
        "evaluations (sparse)": {
            "names": ",".join(EVAL_NAMES),
            "limit": 10_000,
            "format": "columns",
        },
    }


def points_of(body: dict[str, Any]) -> tuple[int, int]:
    """(steps, points) of a /metrics answer in either form."""
    if "data" in body:
        return len({p["step"] for p in body["data"]}), len(body["data"])
    points = sum(v is not None for values in body["series"].values() for v in values)
    return len(body["steps"]), points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=1_000_000, help="steps per series (long)")
    parser.add_argument("--baseline", type=int, default=1_000, help="steps per series (short)")
    parser.add_argument("--repeats", type=int, default=200, help="timed requests per query")
    parser.add_argument("--warmup", type=int, default=5, help="unrecorded requests first")
    add_postgres_option(parser)
    args = parser.parse_args()

    import httpx

    from app.api.services import outputs as job_service
    from app.core.db import session_factory

    load_before = os.getloadavg()[0]
    results = []
    with tempfile.TemporaryDirectory(prefix="sngan-metrics-") as tmp, contextlib.ExitStack() as ctx:
        workdir = Path(tmp)
        data_dir = workdir / "data"
        if args.postgres:
            settings = ctx.enter_context(scratch_services(args.postgres))
        else:
            settings = {"SNGAN_DATABASE_URL": f"sqlite:///{data_dir / 'sngan.db'}"}
        url = settings["SNGAN_DATABASE_URL"]
        env = service_env(data_dir, SNGAN_AUTH="off", SNGAN_LOG_LEVEL="WARNING", **settings)
        service = ctx.enter_context(running(env, workdir))
        base = service.serve()  # the database is migrated once it answers
        jobs = []
        for n, seed in ((args.points, 1), (args.baseline, 2)):
            job_id, seconds = insert_job(url, n, seed)
            rate = n * len(NAMES) / seconds
            print(f"inserted {n:,} steps x {len(NAMES)} series: {rate:,.0f} rows/s", flush=True)
            jobs.append((n, job_id))
        if args.postgres:  # as autovacuum would before long: the planner's statistics
            with session_factory(url)() as session:
                from sqlalchemy import text

                session.execute(text("ANALYZE metrics"))
                session.commit()
        sessions = session_factory(url)
        with httpx.Client(base_url=base, timeout=60) as client:
            for n, job_id in jobs:
                for label, params in queries(n).items():

                    def ask(
                        params: dict[str, Any] = params, job_id: str = job_id
                    ) -> httpx.Response:
                        path = f"/v1/jobs/{job_id}/metrics"
                        return client.get(path, params=params).raise_for_status()

                    ms, response = timed(ask, args.warmup, args.repeats)
                    steps, points = points_of(response.json())
                    results.append((n, label, ms, steps, points, len(response.content)))
                    print(f"{n:,} steps, {label}: p50 {statistics.median(ms):.1f} ms", flush=True)
                every = max(1, math.ceil(n / OVERVIEW_STEPS))
                with sessions() as session:

                    def read(
                        session: Any = session, job_id: str = job_id, every: int = every
                    ) -> Any:
                        return job_service.metrics(
                            session, job_id, list(NAMES), None, 10_000, every, with_time=False
                        )

                    ms, (rows, _) = timed(read, args.warmup, args.repeats)
                    steps = len({r[0] for r in rows})
                    label = "overview: the database part alone (in-process)"
                    results.append((n, label, ms, steps, len(rows), 0))

    kind = "PostgreSQL" if args.postgres else "SQLite (embedded)"
    print()
    print(
        f"/metrics of a finished job: {os.cpu_count()} CPUs ({platform.machine()}), {kind}, "
        f"sngan serve (one API process, auth off), httpx over loopback, one request at a time; "
        f"{args.repeats} requests per row after {args.warmup} unrecorded"
    )
    print(
        f"1-minute load average of the machine: {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} at the end (other processes than these count too)"
    )
    print()
    header = ("steps/series", "query", "p50 ms", "p99 ms", "max ms", "steps", "points", "KiB")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for n, label, ms, steps, points, size in results:
        cells = [
            f"{n:,}",
            label,
            f"{statistics.median(ms):.1f}",
            f"{percentile(ms, 99):.1f}",
            f"{max(ms):.1f}",
            f"{steps:,}",
            f"{points:,}",
            f"{size / 1024:,.0f}" if size else "",
        ]
        print("| " + " | ".join(cells) + " |")
    print()
    print(
        "overview: the page the dashboard's job page asks first (six series, every = "
        f"ceil(steps / {OVERVIEW_STEPS}), format=columns); p99: nearest rank; in-process: "
        "the rows read through app.api.services.outputs.metrics, no HTTP, no JSON"
    )


if __name__ == "__main__":
    main()
