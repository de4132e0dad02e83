"""Service overhead: a job through the real worker against the bare trainer, in one run.

The service side is the real stack: a fresh PostgreSQL database, Redis as the broker, `sngan
serve` and `sngan worker` as subprocesses with the production defaults (metrics flushed to the
database every second, a heartbeat every 5 s, checkpoints every 1000 steps). The job is
submitted over HTTP. The bare side is `models.Trainer` on the same config and data in this
process, with no sinks but one that keeps its metrics.

With `--arms service,webhooks` the same job runs with no webhook against the job with a
webhook subscribed to every event type, sent by the API's deliverer to a receiver in this
process (a real HTTP server on loopback answering 204 at once; the API runs with
SNGAN_WEBHOOK_ALLOW_PRIVATE=true so loopback is allowed). Every arm (`bare`, `service`,
`webhooks`) runs once per round, alternated; ratios are to the first arm of the same run.

Every side is measured the same way, from the trainer's own `steps_per_s` points (for the
job, the points the worker wrote to PostgreSQL), leaving out the first `--warmup` steps:
steps / Σ(time of each step). A job's wall time is from its submission to the poll that saw
it end; a webhook's lag is from its event's timestamp to its arrival at the receiver.

    python bench/service_overhead.py                  # cnn32 g_ch/d_ch 16, batch 32, 400 steps
    python bench/service_overhead.py --device cuda --arch resnet32 --steps 3000 --warmup 500
    python bench/service_overhead.py --arms service,webhooks --rounds 2 --steps 300
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.stack import Service, running, scratch_services, service_env  # noqa: E402

ARMS = {
    "bare": "bare `models.Trainer`",
    "service": "job through API + Celery worker (PostgreSQL, Redis)",
    "webhooks": "the same job, a webhook on every event (loopback receiver)",
}
EVENTS = ["status", "finished", "checkpoint", "sample", "evaluation"]  # every type there is


@dataclass
class Result:
    rate: float  # steps/s after the warmup
    steps: int  # steps measured
    wall_s: float | None = None  # submission to the end (jobs)
    hooks: int | None = None  # webhook requests received (the webhooks arm)
    lags_s: list[float] = field(default_factory=list)  # each one's event -> arrival


class Receiver:
    """A webhook receiver on loopback, in a thread of this process: every POST is answered
    204 at once and kept (arrival time, path, body) for the lags."""

    def __init__(self) -> None:
        self.got: list[tuple[float, str, dict[str, Any]]] = []
        lock = threading.Lock()
        got = self.got

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the http.server name)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                self.send_response(204)
                self.end_headers()
                with lock:
                    got.append((time.time(), self.path, json.loads(body)))

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def of(self, path: str) -> list[tuple[float, dict[str, Any]]]:
        return [(at, body) for at, p, body in list(self.got) if p == path]


def job_body(args: argparse.Namespace) -> dict[str, Any]:
    model: dict[str, Any] = {"arch": args.arch, "g_ch": args.ch, "d_ch": args.ch}
    return {
        "name": "overhead-bench",
        "dataset": {"source": "synthetic", "num_images": args.num_images},
        "model": model,
        "train": {
            "steps": args.steps,
            "batch_size": args.batch_size,
            "n_dis": args.n_dis,
            "seed": 0,
        },
        "checkpoint_every": args.checkpoint_every,
        "sample_every": args.sample_every,
    }


def rate(points: list[tuple[int, float]], warmup: int) -> tuple[float, int]:
    """(steps/s, steps counted) over the steps after `warmup`: each step took 1/rate s."""
    kept = [(s, r) for s, r in points if s > warmup and r > 0]
    if not kept:
        raise RuntimeError(f"no steps_per_s points after step {warmup}")
    return len(kept) / sum(1 / r for _, r in kept), len(kept)


def bare(args: argparse.Namespace, workdir: Path) -> Result:
    from models import RunConfig, Trainer, TrainerSinks

    body = job_body(args)
    cfg = RunConfig.from_dict(
        {
            "model": {**body["model"], "channels": 3},
            "train": body["train"],
            "data": {"source": "synthetic", "num_images": args.num_images},
            "checkpoint_every": body["checkpoint_every"],
            "sample_every": body["sample_every"],
        }
    )

    class Keep(TrainerSinks):
        def __init__(self) -> None:
            self.points: list[tuple[int, float]] = []

        def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
            if "steps_per_s" in metrics:
                self.points.append((step, metrics["steps_per_s"]))

    sinks = Keep()
    out = workdir / f"bare-{secrets.token_hex(3)}"
    Trainer(cfg, out, sinks=sinks, device=args.device).fit()
    shutil.rmtree(out, ignore_errors=True)
    return Result(*rate(sinks.points, args.warmup))


def run_job(stack: Service, args: argparse.Namespace, receiver: Receiver | None) -> Result:
    """Submit the job over HTTP (with a webhook on every event to `receiver`, if given), poll
    it once a second until it ends, and read its `steps_per_s` points back from PostgreSQL.
    With a receiver, wait for the job's last status message to arrive."""
    from sqlalchemy import select

    from app.core.tables import Metric

    body = job_body(args)
    path = f"/hooks/{secrets.token_hex(4)}"
    if receiver is not None:
        body["webhook"] = {"url": receiver.url + path, "events": EVENTS}
    with stack.client(timeout=60) as http:
        start = time.monotonic()
        r = http.post("/v1/jobs", json=body)
        r.raise_for_status()
        job_id = r.json()["id"]
        while True:  # polled once a second, as a dashboard would
            polled: httpx.Response | None
            try:
                polled = http.get(f"/v1/jobs/{job_id}")
            except httpx.HTTPError:
                polled = None
            if polled is not None and polled.status_code == 200:
                job = polled.json()
                if job["status"] in ("succeeded", "failed", "canceled"):
                    break
            else:  # the database may be restarted under us (a shared machine)
                print(
                    f"  poll: {polled.status_code if polled else 'no answer'}; retrying", flush=True
                )
            time.sleep(1)
    wall_s = time.monotonic() - start
    if job["status"] != "succeeded":
        raise RuntimeError(f"job ended {job['status']}: {job['error']}\n{stack.log_tail('worker')}")
    with stack.sessions()() as session:
        rows = session.execute(
            select(Metric.step, Metric.value)
            .where(Metric.job_id == job_id, Metric.name == "steps_per_s")
            .order_by(Metric.step)
        ).all()
    result = Result(*rate([(int(s), float(v)) for s, v in rows], args.warmup), wall_s=wall_s)
    if receiver is not None:
        deadline = time.monotonic() + 60
        while not any(b["data"].get("status") == "succeeded" for _, b in receiver.of(path)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the job's final webhook did not arrive in 60 s: {job_id}")
            time.sleep(0.2)
        got = receiver.of(path)
        result.hooks = len(got)
        result.lags_s = [at - datetime.fromisoformat(b["timestamp"]).timestamp() for at, b in got]
    return result


def summary(results: list[Result]) -> Result:
    """The best round's figures (the least disturbed by other work), every round's lags."""
    best = max(results, key=lambda r: r.rate)
    lags = [lag for r in results for lag in r.lags_s]
    return Result(best.rate, best.steps, best.wall_s, best.hooks, lags)


def report(args: argparse.Namespace, arms: list[str], results: dict[str, list[Result]]) -> None:
    print()
    print(
        f"{args.arch} g_ch/d_ch {args.ch}, batch {args.batch_size}, n_dis {args.n_dis}, "
        f"{args.steps} steps (first {args.warmup} left out), checkpoint every "
        f"{args.checkpoint_every}, samples every {args.sample_every}, synthetic data, on "
        f"{args.device} ({args.threads_used} CPU threads); best of {args.rounds} round(s), "
        f"the arms alternated ({', '.join(arms)}); load average before/after: {args.load_before} / "
        f"{load()}; {os.cpu_count()} CPUs"
    )
    print()
    base = summary(results[arms[0]]).rate
    print(f"| run | steps/s (best) | every round | steps measured | ratio to {arms[0]} |")
    print("|---|---|---|---|---|")
    for arm in arms:
        best = summary(results[arm])
        rounds = ", ".join(f"{r.rate:.2f}" for r in results[arm])
        print(
            f"| {ARMS[arm]} | {best.rate:.2f} | {rounds} | {best.steps} | {best.rate / base:.3f} |"
        )
    jobs = [arm for arm in arms if arm != "bare"]
    if jobs:
        print()
        print("| run | job wall time, each round (s) | webhooks per job | lag p50 / max (s) |")
        print("|---|---|---|---|")
        for arm in jobs:
            walls = ", ".join(f"{r.wall_s:.1f}" for r in results[arm])
            lags = summary(results[arm]).lags_s
            hooks = ", ".join(str(r.hooks) for r in results[arm]) if arm == "webhooks" else "-"
            lag = f"{statistics.median(lags):.2f} / {max(lags):.2f}" if lags else "-"
            print(f"| {ARMS[arm]} | {walls} | {hooks} | {lag} |")
    print()
    if "bare" in arms and "service" in arms:
        share = summary(results["service"]).rate / summary(results["bare"]).rate
        verdict = "meets" if share >= 0.95 else "misses"
        print(f"The service keeps {100 * share:.1f}% of bare throughput ({verdict} ≥ 95%).")
    if "service" in arms and "webhooks" in arms:
        share = summary(results["webhooks"]).rate / summary(results["service"]).rate
        print(
            f"With a webhook on every event the job keeps {100 * share:.1f}% of its throughput "
            "without one."
        )


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (training)")
    parser.add_argument("--arch", default="cnn32")
    parser.add_argument("--ch", type=int, default=16, help="g_ch and d_ch")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--n-dis", type=int, default=1)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=50, help="first steps left out")
    parser.add_argument("--num-images", type=int, default=2000)
    parser.add_argument("--checkpoint-every", type=int, default=1000)
    parser.add_argument("--sample-every", type=int, default=500)
    parser.add_argument(
        "--arms",
        default="bare,service",
        help=f"comma-separated, run in this order each round, ratios to the first: "
        f"{', '.join(ARMS)}",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="rounds of the arms, alternated (best of each)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads of both trainers (default: 1 on CPU, as many as torch likes "
        "on CUDA); on a CPU shared with other work, more threads than idle cores make "
        "OpenMP spin and the figures meaningless",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="SNGAN_X=VALUE",
        help="a setting of the service's processes (to find where time goes)",
    )
    args = parser.parse_args()
    arms = args.arms.split(",")
    if not arms or any(arm not in ARMS for arm in arms):
        parser.error(f"--arms: a comma-separated choice of {', '.join(ARMS)}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on the way out
    args.load_before = load()

    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads is None and args.device == "cpu":
        args.threads = 1
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    workdir = Path(tempfile.mkdtemp(prefix="sngan-overhead-bench-"))
    results: dict[str, list[Result]] = {arm: [] for arm in arms}
    threads = args.threads_used = str(args.threads or torch.get_num_threads())
    # the service's own defaults (flushes, heartbeat, checkpoints), auth off for the bench;
    # loopback webhooks allowed (the receiver is local; the setting changes nothing else)
    extra = {
        "SNGAN_AUTH": "off",
        "SNGAN_TRAIN_DEVICE": args.device,
        "SNGAN_LOG_LEVEL": "WARNING",
        "SNGAN_WEBHOOK_ALLOW_PRIVATE": "true",
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
    }
    extra.update(dict(item.split("=", 1) for item in args.env))
    receiver = Receiver() if "webhooks" in arms else None
    try:
        with (
            scratch_services() as services,
            running(service_env(workdir / "data", **services, **extra), workdir) as stack,
        ):
            if arms != ["bare"]:
                stack.serve()
                stack.worker()
            for i in range(args.rounds):
                for arm in arms:
                    if arm == "bare":
                        result = bare(args, workdir)
                    else:
                        result = run_job(stack, args, receiver if arm == "webhooks" else None)
                    results[arm].append(result)
                    wall = f", {result.wall_s:.1f} s wall" if result.wall_s else ""
                    hooks = f", {result.hooks} webhooks" if result.hooks is not None else ""
                    print(
                        f"round {i + 1}: {arm} {result.rate:.2f} steps/s{wall}{hooks} "
                        f"(load {load()})",
                        flush=True,
                    )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if receiver is not None:
            receiver.server.shutdown()
    report(args, arms, results)


if __name__ == "__main__":
    main()
