"""How long the dashboard's job page takes to draw its curves, for a long run and a short one.

Runs ``sngan serve`` (bench/stack.py; ``SNGAN_AUTH=off``, one API process and its idle
worker) on a scratch data directory with SQLite, or on a PostgreSQL database made for the run
with ``--postgres`` (dropped at the end); writes two finished jobs straight into its database
(``--points`` steps of the six training series, and ``--baseline`` steps); then opens
``/jobs/<id>`` in headless Chromium (Playwright, Debian's ``/usr/bin/chromium``) ``--repeats``
times per job, each in a fresh browser context (an empty HTTP cache), after one unrecorded
warm-up load. A load is timed from the navigation's start to the moment the page marks its
curves drawn (``document.body.dataset.chartsReady``). Prints one table. Not a test: nothing
is asserted.

    .venv/bin/python bench/dashboard_load.py --points 200000 --baseline 2000 --repeats 5
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.stack import POSTGRES_URL, running, scratch_services, service_env  # noqa: E402

NAMES = ("loss_d", "loss_g", "d_real", "d_fake", "lr", "steps_per_s")
BATCH = 20_000  # rows per INSERT
READY = "document.body && document.body.dataset.chartsReady === '1'"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]


def insert_job(url: str, steps: int, seed: int) -> tuple[str, float]:
    """A succeeded job of owner ``local`` with `steps` points in each training series, as
    the worker's sinks write them (batched INSERTs); (its id, seconds spent inserting)."""
    import numpy as np
    from sqlalchemy import insert

    from app.api.schemas import JobCreate
    from app.core.db import session_factory
    from app.core.tables import Job, Metric

    body = {
        "dataset": {"source": "synthetic", "num_images": 64},
        "model": {"arch": "cnn32", "z_dim": 16, "g_ch": 8, "d_ch": 8},
        "train": {"steps": steps, "batch_size": 4, "n_dis": 1},
    }
    config = JobCreate.model_validate(body).model_dump(mode="json")
    job_id = uuid.uuid4().hex
    start = datetime.now(UTC) - timedelta(seconds=steps / 20)
    rng = np.random.default_rng(seed)
    step = np.arange(1, steps + 1)
    # curves with the shapes and noise of a real run, so the plots are not trivial to draw
    decay = np.exp(-step / (steps / 4))
    series = {
        "loss_d": 1.0 + 0.8 * decay + rng.normal(0, 0.15, steps),
        "loss_g": 0.6 + 1.2 * decay + rng.normal(0, 0.25, steps),
        "d_real": 0.5 + 0.4 * decay + rng.normal(0, 0.1, steps),
        "d_fake": -0.5 - 0.4 * decay + rng.normal(0, 0.1, steps),
        "lr": 2e-4 * (1 - step / steps),
        "steps_per_s": 20 + rng.normal(0, 1, steps),
    }
    sessions = session_factory(url)
    t0 = time.perf_counter()
    with sessions() as session:
        session.add(
            Job(
                id=job_id,
                owner="local",  # every request's owner with SNGAN_AUTH=off
                name=f"bench-{steps}-steps",
                status="succeeded",
                config=config,
                created_at=start,
                updated_at=start,
                started_at=start,
                finished_at=datetime.now(UTC),
                step=steps,
                total_steps=steps,
                latest_metrics={n: float(series[n][-1]) for n in NAMES},
            )
        )
        session.commit()
        rows: list[dict[str, Any]] = []
        for i in range(steps):
            at = start + timedelta(seconds=i / 20)
            for name in NAMES:
                rows.append(
                    {
                        "job_id": job_id,
                        "name": name,
                        "step": i + 1,
                        "value": float(series[name][i]),
                        "time": at,
                    }
                )
            if len(rows) >= BATCH or i == steps - 1:
                session.execute(insert(Metric), rows)
                session.commit()
                rows = []
    return job_id, time.perf_counter() - t0


def load_once(browser: Any, url: str, job_id: str) -> dict[str, float]:
    """One load of the job page in a fresh context: ms to curves drawn, points fetched from
    /metrics, points drawn, and the /metrics bytes."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        metric_responses: list[Any] = []
        path = f"/v1/jobs/{job_id}/metrics"
        page.on(
            "response",
            lambda r: metric_responses.append(r) if urlsplit(r.url).path == path else None,
        )
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url, wait_until="commit")
        page.wait_for_function(READY, timeout=120_000)
        # the page's own clock: ms since its navigation started, read as the marker appears
        ms = page.evaluate("performance.now()")
        # where the time went: scripts run (plotly.js parsed), the last /metrics answer in
        timings = page.evaluate(
            """(path) => {
                const nav = performance.getEntriesByType('navigation')[0];
                const metrics = performance.getEntriesByType('resource')
                    .filter((e) => new URL(e.name).pathname === path);
                return [nav.domContentLoadedEventEnd,
                        Math.min(...metrics.map((e) => e.startTime)),
                        Math.max(...metrics.map((e) => e.responseEnd))];
            }""",
            path,
        )
        if errors:
            raise RuntimeError(f"the page threw: {errors}")
        bodies = [r.body() for r in metric_responses]
        fetched = sum(len(r.json()["data"]) for r in metric_responses)
        every = max(
            (int(parse_qs(urlsplit(r.url).query).get("every", ["1"])[0]) for r in metric_responses),
            default=1,
        )
        drawn = page.evaluate(
            """[...document.querySelectorAll('.chart')].reduce(
                 (s, d) => s + (d.data || []).reduce((a, t) => a + t.x.length, 0), 0)"""
        )
        return {
            "ms": float(ms),
            "scripts": float(timings[0]),
            "metrics_start": float(timings[1]),
            "metrics_end": float(timings[2]),
            "fetched": float(fetched),
            "drawn": float(drawn),
            "bytes": float(sum(len(b) for b in bodies)),
            "requests": float(len(metric_responses)),
            "every": float(every),
        }
    finally:
        context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=200_000, help="steps per series (long run)")
    parser.add_argument("--baseline", type=int, default=2_000, help="steps per series (short)")
    parser.add_argument("--repeats", type=int, default=5, help="timed loads per job")
    parser.add_argument(
        "--postgres",
        nargs="?",
        const=POSTGRES_URL,
        help=f"run on PostgreSQL: a database made under this URL (default {POSTGRES_URL})",
    )
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="sngan-dash-") as tmp, contextlib.ExitStack() as ctx:
        workdir = Path(tmp)
        data_dir = workdir / "data"
        if args.postgres:
            settings = ctx.enter_context(scratch_services(args.postgres))
        else:
            settings = {"SNGAN_DATABASE_URL": f"sqlite:///{data_dir / 'sngan.db'}"}
        env = service_env(data_dir, SNGAN_AUTH="off", SNGAN_LOG_LEVEL="WARNING", **settings)
        service = ctx.enter_context(running(env, workdir))
        base = service.serve()  # the database is migrated once it answers
        jobs = []
        for n, seed in ((args.points, 1), (args.baseline, 2)):
            job_id, seconds = insert_job(settings["SNGAN_DATABASE_URL"], n, seed)
            rate = n * len(NAMES) / seconds
            print(f"inserted {n:,} steps x {len(NAMES)} series: {rate:,.0f} rows/s", flush=True)
            jobs.append((n, job_id))
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            version = browser.version
            rows = []
            for n, job_id in jobs:
                page_url = f"{base}/jobs/{job_id}"
                warm = load_once(browser, page_url, job_id)
                runs = [load_once(browser, page_url, job_id) for _ in range(args.repeats)]
                rows.append((n, warm, runs))
                times = ", ".join(f"{r['ms']:.0f}" for r in runs)
                print(f"{n:,} steps: warm-up {warm['ms']:.0f} ms, runs {times}", flush=True)
            browser.close()

    kind = "PostgreSQL" if args.postgres else "SQLite (embedded)"
    print()
    print(
        f"Job page, navigation to curves drawn: {os.cpu_count()} CPUs ({platform.machine()}), "
        f"Chromium {version} headless, {kind}, sngan serve (one API process, an idle worker); "
        f"{args.repeats} loads per job, each in a fresh browser context, after one warm-up"
    )
    print(
        f"1-minute load average of the machine: {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} at the end (other processes than these count too)"
    )
    print()
    header = (
        "steps/series", "median ms", "min ms", "max ms", "warm-up ms", "scripts run ms",
        "/metrics asked ms", "/metrics in ms", "every", "points fetched", "requests",
        "points drawn", "/metrics KiB",
    )  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for n, warm, runs in rows:
        ms = [r["ms"] for r in runs]
        last = runs[-1]
        cells = [
            f"{n:,}",
            f"{statistics.median(ms):.0f}",
            f"{min(ms):.0f}",
            f"{max(ms):.0f}",
            f"{warm['ms']:.0f}",
            f"{statistics.median(r['scripts'] for r in runs):.0f}",
            f"{statistics.median(r['metrics_start'] for r in runs):.0f}",
            f"{statistics.median(r['metrics_end'] for r in runs):.0f}",
            f"{int(last['every'])}",
            f"{int(last['fetched']):,}",
            f"{int(last['requests'])}",
            f"{int(last['drawn']):,}",
            f"{last['bytes'] / 1024:,.0f}",
        ]
        print("| " + " | ".join(cells) + " |")
    print()
    print(
        "ms since the navigation started, medians of the timed loads: scripts run = "
        "DOMContentLoaded (plotly.js and the page's modules executed); /metrics asked / in = the "
        "first /metrics request sent / the last answered. every: the downsampling the page "
        "asked of /metrics; points fetched: metric points in its /metrics answers; points "
        "drawn: x values in its plotly traces"
    )


if __name__ == "__main__":
    main()
