"""Service overhead: a job through the real worker against the bare trainer, in one run.

The service side is the real stack: a fresh PostgreSQL database, Redis as the broker, `sngan
serve` and `sngan worker` as subprocesses with the production defaults (metrics flushed to the
database every second, a heartbeat every 5 s, checkpoints every 1000 steps). The job is
submitted over HTTP. The bare side is `models.Trainer` on the same config and data in this
process, with no sinks but one that keeps its metrics.

Both sides are measured the same way, from the trainer's own `steps_per_s` points (for the
job, the points the worker wrote to PostgreSQL), leaving out the first `--warmup` steps:
steps / Σ(time of each step).

    python bench/service_overhead.py                  # cnn32 g_ch/d_ch 16, batch 32, 400 steps
    python bench/service_overhead.py --device cuda --arch resnet32 --steps 3000 --warmup 500
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.stack import Service, running, scratch_services, service_env  # noqa: E402


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
        "checkpoint_every": 1000,
        "sample_every": 500,
    }


def rate(points: list[tuple[int, float]], warmup: int) -> tuple[float, int]:
    """(steps/s, steps counted) over the steps after `warmup`: each step took 1/rate s."""
    kept = [(s, r) for s, r in points if s > warmup and r > 0]
    if not kept:
        raise RuntimeError(f"no steps_per_s points after step {warmup}")
    return len(kept) / sum(1 / r for _, r in kept), len(kept)


def bare(args: argparse.Namespace, workdir: Path) -> tuple[float, int]:
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
    return rate(sinks.points, args.warmup)


def run_job(stack: Service, args: argparse.Namespace) -> tuple[float, int]:
    """Submit the job over HTTP, poll it once a second until it ends, and read its
    `steps_per_s` points back from PostgreSQL."""
    from sqlalchemy import select

    from app.core.tables import Metric

    with stack.client(timeout=60) as http:
        r = http.post("/v1/jobs", json=job_body(args))
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
    if job["status"] != "succeeded":
        raise RuntimeError(f"job ended {job['status']}: {job['error']}\n{stack.log_tail('worker')}")
    with stack.sessions()() as session:
        rows = session.execute(
            select(Metric.step, Metric.value)
            .where(Metric.job_id == job_id, Metric.name == "steps_per_s")
            .order_by(Metric.step)
        ).all()
    return rate([(int(s), float(v)) for s, v in rows], args.warmup)


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
    parser.add_argument(
        "--rounds", type=int, default=1, help="bare/service pairs, alternated (best of each)"
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
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on the way out

    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads is None and args.device == "cpu":
        args.threads = 1
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    workdir = Path(tempfile.mkdtemp(prefix="sngan-overhead-bench-"))
    results: dict[str, list[tuple[float, int]]] = {"bare": [], "service": []}
    threads = str(args.threads or torch.get_num_threads())
    # the service's own defaults (flushes, heartbeat, checkpoints), auth off for the bench
    extra = {
        "SNGAN_AUTH": "off",
        "SNGAN_TRAIN_DEVICE": args.device,
        "SNGAN_LOG_LEVEL": "WARNING",
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
    }
    extra.update(dict(item.split("=", 1) for item in args.env))
    try:
        with (
            scratch_services() as services,
            running(service_env(workdir / "data", **services, **extra), workdir) as stack,
        ):
            stack.serve()
            stack.worker()
            for i in range(args.rounds):
                results["bare"].append(bare(args, workdir))
                print(f"round {i + 1}: bare {results['bare'][-1][0]:.2f} steps/s", flush=True)
                results["service"].append(run_job(stack, args))
                print(f"round {i + 1}: service {results['service'][-1][0]:.2f} steps/s", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    bare_rate, bare_n = max(results["bare"])
    svc_rate, svc_n = max(results["service"])
    print()
    print(
        f"{args.arch} g_ch/d_ch {args.ch}, batch {args.batch_size}, n_dis {args.n_dis}, "
        f"{args.steps} steps (first {args.warmup} left out), synthetic data, on {args.device} "
        f"({threads} CPU threads); best of {args.rounds} round(s), each side alternated"
    )
    print()
    print("| run | steps/s | steps measured | ratio to bare |")
    print("|---|---|---|---|")
    print(f"| bare `models.Trainer` | {bare_rate:.2f} | {bare_n} | 1.00 |")
    print(
        f"| job through API + Celery worker (PostgreSQL, Redis) | {svc_rate:.2f} | {svc_n} | "
        f"{svc_rate / bare_rate:.3f} |"
    )
    print()
    verdict = "meets" if svc_rate >= 0.95 * bare_rate else "misses"
    print(
        f"The service keeps {100 * svc_rate / bare_rate:.1f}% of bare throughput ({verdict} ≥ 95%)."
    )


if __name__ == "__main__":
    main()
