"""How long the dashboard's job page takes to draw its curves, for a long run and a short one.

Runs ``sngan serve`` (bench/stack.py; ``SNGAN_AUTH=off``, one API process and its idle
worker) on a scratch data directory with SQLite, or on a PostgreSQL database made for the run
with ``--postgres`` (dropped at the end); writes two finished jobs straight into its database
(``--points`` steps of the six training series, and ``--baseline`` steps); then opens
``/jobs/<id>`` in headless Chromium (Playwright, Debian's ``/usr/bin/chromium``) ``--repeats``
times per job as a first visit, each in a fresh browser context (nothing cached: plotly.js's
4.8 MB downloaded and compiled each time) after one unrecorded warm-up load, and
``--repeats`` times as a return visit, in one context after two unrecorded loads (plotly.js
from the HTTP cache, its compiled code from V8's cache). A load is timed from the
navigation's start to the moment the page marks its curves drawn
(``document.body.dataset.chartsReady``); the page's performance marks (charts.js) say where
the time went. Prints one table. Not a test: nothing is asserted.

    .venv/bin/python bench/dashboard_load.py --points 200000 --baseline 2000 --repeats 5
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.stack import (  # noqa: E402
    add_postgres_option,
    running,
    scratch_services,
    service_env,
)

if TYPE_CHECKING:
    from playwright.sync_api import ViewportSize

NAMES = ("loss_d", "loss_g", "d_real", "d_fake", "lr", "steps_per_s")
READY = "document.body && document.body.dataset.chartsReady === '1'"
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]


def insert_job(url: str, steps: int, seed: int) -> tuple[str, float]:
    """A succeeded job of owner ``local`` with `steps` points in each training series, the
    rows the worker's sinks write (bulk-loaded through the driver: executemany on SQLite,
    COPY on PostgreSQL); (its id, seconds spent writing the points)."""
    import numpy as np

    from app.api.schemas import JobCreate
    from app.core.db import get_engine, session_factory
    from app.core.tables import Job

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
    with session_factory(url)() as session:
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
    engine = get_engine(url)
    postgres = engine.dialect.name == "postgresql"
    values = {n: v.tolist() for n, v in series.items()}

    def rows() -> Iterator[tuple[Any, ...]]:
        for i in range(steps):
            at = start + timedelta(seconds=i / 20)
            # as SQLAlchemy stores this column: aware on PostgreSQL, naive UTC text on SQLite
            time_ = at if postgres else at.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
            for name in NAMES:
                yield (job_id, name, i + 1, values[name][i], time_)

    t0 = time.perf_counter()
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        if postgres:
            copy_sql = "COPY metrics (job_id, name, step, value, time) FROM STDIN"
            with cursor.copy(copy_sql) as copy:  # type: ignore[attr-defined]
                for row in rows():
                    copy.write_row(row)
        else:
            insert_sql = "INSERT INTO metrics (job_id, name, step, value, time) VALUES (?,?,?,?,?)"
            points = rows()
            while chunk := list(itertools.islice(points, 60_000)):
                cursor.executemany(insert_sql, chunk)
        raw.commit()
    finally:
        raw.close()
    return job_id, time.perf_counter() - t0


def points_in(body: dict[str, Any]) -> int:
    """Metric points in a /metrics answer, in either of its forms."""
    if "data" in body:
        return len(body["data"])
    return sum(v is not None for values in body["series"].values() for v in values)


def load_once(
    browser: Any, url: str, job_id: str, context: Any = None, screenshot: Path | None = None
) -> dict[str, float]:
    """One load of the job page, in a fresh context (an empty cache) or in `context`: ms to
    curves drawn, where the time went, points fetched from /metrics and drawn, its bytes."""
    fresh = context is None
    if fresh:
        context = browser.new_context(viewport=VIEWPORT)
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
        # where the time went: the page's modules run, the /metrics answers in, plotly.js
        # run, the curves drawn (the page's own marks, charts.js)
        timings = page.evaluate(
            """(path) => {
                const nav = performance.getEntriesByType('navigation')[0];
                const metrics = performance.getEntriesByType('resource')
                    .filter((e) => new URL(e.name).pathname === path);
                const mark = (name) => performance.getEntriesByName(name)[0]?.startTime ?? NaN;
                return [nav.domContentLoadedEventEnd,
                        Math.min(...metrics.map((e) => e.startTime)),
                        Math.max(...metrics.map((e) => e.responseEnd)),
                        mark('sngan:points-in'), mark('sngan:plotly-ready'), mark('sngan:drawn')];
            }""",
            path,
        )
        if errors:
            raise RuntimeError(f"the page threw: {errors}")
        bodies = [r.body() for r in metric_responses]
        fetched = sum(points_in(r.json()) for r in metric_responses)
        every = max(
            (int(parse_qs(urlsplit(r.url).query).get("every", ["1"])[0]) for r in metric_responses),
            default=1,
        )
        if screenshot is not None:
            page.screenshot(path=str(screenshot), full_page=True)
        drawn = page.evaluate(
            """[...document.querySelectorAll('.chart')].reduce(
                 (s, d) => s + (d.data || []).reduce((a, t) => a + t.x.length, 0), 0)"""
        )
        return {
            "ms": float(ms),
            "scripts": float(timings[0]),
            "metrics_start": float(timings[1]),
            "metrics_end": float(timings[2]),
            "points_in": float(timings[3]),
            "plotly_ready": float(timings[4]),
            "drawn": float(timings[5]),
            "fetched": float(fetched),
            "points_drawn": float(drawn),
            "bytes": float(sum(len(b) for b in bodies)),
            "requests": float(len(metric_responses)),
            "every": float(every),
        }
    finally:
        if fresh:
            context.close()
        else:
            page.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=200_000, help="steps per series (long run)")
    parser.add_argument("--baseline", type=int, default=2_000, help="steps per series (short)")
    parser.add_argument("--repeats", type=int, default=5, help="timed loads per job")
    add_postgres_option(parser)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument(
        "--screenshot", type=Path, help="save the long run's page here (PNG), after its warm-up"
    )
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
                # first visits: each load in a fresh context (nothing cached)
                shot = args.screenshot if n == args.points else None
                warm = load_once(browser, page_url, job_id, screenshot=shot)
                runs = [load_once(browser, page_url, job_id) for _ in range(args.repeats)]
                rows.append((n, "first", warm, runs))
                times = ", ".join(f"{r['ms']:.0f}" for r in runs)
                print(f"{n:,} steps, first visits: warm-up {warm['ms']:.0f} ms, runs {times}")
                # return visits: one context, its HTTP cache and V8's code cache of plotly.js
                # made by two unrecorded loads (Chromium caches a script's compiled code from
                # its second run on)
                context = browser.new_context(viewport=VIEWPORT)
                warm = [load_once(browser, page_url, job_id, context) for _ in range(2)][-1]
                runs = [load_once(browser, page_url, job_id, context) for _ in range(args.repeats)]
                context.close()
                rows.append((n, "return", warm, runs))
                times = ", ".join(f"{r['ms']:.0f}" for r in runs)
                print(f"{n:,} steps, return visits: warm-up {warm['ms']:.0f} ms, runs {times}")
            browser.close()

    kind = "PostgreSQL" if args.postgres else "SQLite (embedded)"
    print()
    print(
        f"Job page, navigation to curves drawn: {os.cpu_count()} CPUs ({platform.machine()}), "
        f"Chromium {version} headless, {kind}, sngan serve (one API process, an idle worker); "
        f"{args.repeats} loads per job and visit after warm-up: first visits each in a fresh "
        f"browser context (one warm-up), return visits in one context (two warm-ups)"
    )
    print(
        f"1-minute load average of the machine: {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} at the end (other processes than these count too)"
    )
    print()
    header = (
        "steps/series", "visit", "median ms", "min ms", "max ms", "warm-up ms", "scripts run ms",
        "/metrics asked ms", "/metrics in ms", "plotly.js run ms", "drawing ms", "every",
        "points fetched", "requests", "points drawn", "/metrics KiB",
    )  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for n, visit, warm, runs in rows:
        ms = [r["ms"] for r in runs]
        last = runs[-1]

        def median(key: str, loads: list[dict[str, float]] = runs) -> str:
            return f"{statistics.median(r[key] for r in loads):.0f}"

        drawing = [r["drawn"] - max(r["points_in"], r["plotly_ready"]) for r in runs]
        cells = [
            f"{n:,}",
            visit,
            f"{statistics.median(ms):.0f}",
            f"{min(ms):.0f}",
            f"{max(ms):.0f}",
            f"{warm['ms']:.0f}",
            median("scripts"),
            median("metrics_start"),
            median("metrics_end"),
            median("plotly_ready"),
            f"{statistics.median(drawing):.0f}",
            f"{int(last['every'])}",
            f"{int(last['fetched']):,}",
            f"{int(last['requests'])}",
            f"{int(last['points_drawn']):,}",
            f"{last['bytes'] / 1024:,.0f}",
        ]
        print("| " + " | ".join(cells) + " |")
    print()
    print(
        "ms since the navigation started, medians of the timed loads: scripts run = "
        "DOMContentLoaded (the page's modules executed; plotly.js, preloaded, runs once the "
        "/metrics requests are sent); /metrics asked "
        "/ in = the first /metrics request sent / the last answered; plotly.js run = when the "
        "page saw plotly.js executed; drawing = from the later of the points in and plotly.js "
        "run to the curves drawn (the page's performance marks, charts.js). every: the "
        "downsampling the page asked of /metrics; points fetched: metric points in its "
        "/metrics answers; points drawn: x values in its plotly traces"
    )


if __name__ == "__main__":
    main()
