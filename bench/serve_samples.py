"""Sample-serving throughput: concurrent single-image requests with batching on and off.

Trains a generator for a few steps (or takes `--checkpoint`), writes it into a fresh data
directory with a job row pointing at it (SQLite, embedded broker, auth off), starts
`sngan serve` as a subprocess (the API, and the idle worker child it runs on an embedded
data directory), and drives 1, 8 and 32 concurrent clients requesting single PNGs with
distinct seeds (`format=png&n=1`) over HTTP for a fixed time each; then restarts it with
SNGAN_BATCHING=false and does the same. With batching on it also times latent walks
(`/interpolations`, 3 seeds, `--walk-frames` a segment, one client, gif and npy): the walk
rows (`--walks-only`: those alone).

    python bench/serve_samples.py                       # resnet32 at paper widths, CPU or GPU
    python bench/serve_samples.py --device cuda --clients 1,8,32,128
    python bench/serve_samples.py --checkpoint path/to/step_00050000.pt

Prints requests/s, p50 and p99 latency, the mean images per batch (from the
server's own `sngan_generation_batch_size` histogram) and the ratio of requests/s to batching
off with the same number of clients.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.stack import insert_finished_job, running  # noqa: E402


def make_checkpoint(args: argparse.Namespace, data_dir: Path, job_id: str) -> tuple[Path, str]:
    """The checkpoint under the job's directory, and its sha256."""
    ckpt_dir = data_dir / "jobs" / job_id / "checkpoints"
    if args.checkpoint:
        src = Path(args.checkpoint)
        ckpt_dir.mkdir(parents=True)
        dst = ckpt_dir / src.name
        shutil.copyfile(src, dst)
        sha = hashlib.sha256(dst.read_bytes()).hexdigest()
        dst.with_name(dst.name + ".sha256").write_text(sha + "\n")
        return dst, sha
    from models import RunConfig, SpeedConfig, Trainer
    from models.checkpoint import recorded_sha256

    model: dict[str, object] = {"arch": args.arch}
    if args.g_ch:
        model.update(g_ch=args.g_ch, d_ch=args.g_ch)
    cfg = RunConfig.from_dict(
        {
            "model": model,
            # the generator's shape does not depend on the batch: train a small one, quickly
            "train": {"steps": 2, "batch_size": 8, "n_dis": 1, "ema_decay": 0.999},
            "data": {"source": "synthetic", "num_images": 64},
            "checkpoint_every": 2,
            "sample_every": 2,
        }
    )
    cfg.speed = SpeedConfig.eager()  # two steps: not worth a torch.compile
    device = "cpu" if args.device == "cpu" else "auto"
    result = Trainer(cfg, data_dir / "jobs" / job_id, device=device).fit()
    assert result.checkpoint is not None
    recorded = recorded_sha256(result.checkpoint)
    assert recorded is not None
    return result.checkpoint, recorded


def insert_job(database_url: str, data_dir: Path, job_id: str, path: Path, sha: str) -> None:
    from app.core.db import get_engine, migrate

    migrate(database_url)
    insert_finished_job(database_url, data_dir, job_id, path, sha, name="serve-bench")
    get_engine(database_url).dispose()


def batch_histogram(url: str) -> tuple[float, float]:
    """(calls to the generator, images generated) so far."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    values = dict(
        re.findall(r"^sngan_generation_batch_size_(count|sum) (\S+)$", text, re.MULTILINE)
    )
    return float(values.get("count", 0)), float(values.get("sum", 0))


@dataclass
class Row:
    clients: int
    batching: bool
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    mean_batch: float


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def drive(
    url: str, job_id: str, clients: int, duration: float, seed0: int
) -> tuple[int, list[float]]:
    """`clients` closed loops for `duration` s: (requests answered within it, the latency in
    seconds of every request sent within it, stragglers waited for, so slow ones count)."""
    latencies: list[float] = []
    answered = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:
        end = time.perf_counter() + duration

        async def client(c: int) -> None:
            nonlocal answered
            i = 0
            while time.perf_counter() < end:
                seed = seed0 + c * 1_000_000 + i
                t0 = time.perf_counter()
                r = await http.get(
                    f"/v1/jobs/{job_id}/samples", params={"format": "png", "n": 1, "seed": seed}
                )
                r.raise_for_status()
                done = time.perf_counter()
                latencies.append(done - t0)
                answered += done <= end
                i += 1

        await asyncio.gather(*(client(c) for c in range(clients)))
    return answered, latencies


def measure(url: str, job_id: str, args: argparse.Namespace, batching: bool) -> list[Row]:
    asyncio.run(drive(url, job_id, 2, args.warmup, seed0=10**12))  # load, warm up
    rows = []
    for clients in args.clients:
        calls0, images0 = batch_histogram(url)
        answered, lat = asyncio.run(drive(url, job_id, clients, args.duration, seed0=clients))
        calls1, images1 = batch_histogram(url)
        mean_batch = (images1 - images0) / max(calls1 - calls0, 1)
        rows.append(
            Row(
                clients,
                batching,
                answered / args.duration,
                percentile(lat, 0.5) * 1000,
                percentile(lat, 0.99) * 1000,
                mean_batch,
            )
        )
        print(f"  {clients} clients, batching {'on' if batching else 'off'}: {rows[-1]}")
    return rows


@dataclass
class WalkRow:
    fmt: str
    frames: int
    p50_ms: float
    frames_per_s: float


def measure_walks(url: str, job_id: str, args: argparse.Namespace) -> list[WalkRow]:
    """One client asking for walks through 3 new seeds at a time, for `duration` s a format."""
    rows = []
    with httpx.Client(base_url=url, timeout=600) as http:
        warm = {"seeds": "1,2", "frames": args.walk_frames, "format": "npy"}
        http.get(f"/v1/jobs/{job_id}/interpolations", params=warm).raise_for_status()
        for fmt in ("npy", "gif"):
            latencies: list[float] = []
            frames = 0
            end = time.perf_counter() + args.duration
            i = 0
            while time.perf_counter() < end or not latencies:
                seeds = ",".join(str(10**9 + 3 * i + k) for k in range(3))
                t0 = time.perf_counter()
                r = http.get(
                    f"/v1/jobs/{job_id}/interpolations",
                    params={"seeds": seeds, "frames": args.walk_frames, "format": fmt},
                )
                r.raise_for_status()
                latencies.append(time.perf_counter() - t0)
                frames = int(r.headers["X-Walk-Frames"])
                i += 1
            p50 = percentile(latencies, 0.5)
            rows.append(WalkRow(fmt, frames, p50 * 1000, frames / p50))
            print(f"  walk {fmt}: {rows[-1]}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (generation)")
    parser.add_argument("--checkpoint", help="a checkpoint to serve instead of a fresh one")
    parser.add_argument("--arch", default="resnet32")
    parser.add_argument("--g-ch", type=int, default=None, help="G and D width (paper's: none)")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per row")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--walk-frames", type=int, default=16, help="frames a walk's segment")
    parser.add_argument("--walks-only", action="store_true", help="only the walk rows")
    parser.add_argument("--batch-max-wait-ms", type=float, default=None)
    parser.add_argument("--batch-max-size", type=int, default=None)
    parser.add_argument("--chunk", type=int, default=None, help="SNGAN_GENERATION_CHUNK")
    parser.add_argument(
        "--api-workers", type=int, default=1, help="API processes (uvicorn --workers)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="OMP_NUM_THREADS of the server (torch's default)"
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on the way out
    args.clients = [int(c) for c in args.clients.split(",")]

    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    workdir = Path(tempfile.mkdtemp(prefix="sngan-serve-bench-"))
    data_dir = workdir / "data"
    job_id = uuid.uuid4().hex
    try:
        path, sha = make_checkpoint(args, data_dir, job_id)
        database_url = f"sqlite:///{data_dir / 'sngan.db'}"
        insert_job(database_url, data_dir, job_id, path, sha)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SNGAN_")}
        env.update(
            SNGAN_DATA_DIR=str(data_dir),
            SNGAN_AUTH="off",
            SNGAN_MIGRATE_ON_STARTUP="false",
            SNGAN_GENERATION_DEVICE=device,
            SNGAN_MAX_SAMPLES_PER_REQUEST="256",
            SNGAN_RATE_LIMIT_PER_MINUTE=str(10**9),
            SNGAN_LOG_LEVEL="WARNING",
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        )
        for name, value in (
            ("OMP_NUM_THREADS", args.threads),
            ("SNGAN_BATCH_MAX_WAIT_MS", args.batch_max_wait_ms),
            ("SNGAN_BATCH_MAX_SIZE", args.batch_max_size),
            ("SNGAN_GENERATION_CHUNK", args.chunk),
        ):
            if value is not None:
                env[name] = str(value)
        from app.api.services.generation import default_chunk
        from app.core.config import Settings

        settings = Settings.model_validate({"data_dir": data_dir})
        knobs = {
            "wait": env.get("SNGAN_BATCH_MAX_WAIT_MS", settings.batch_max_wait_ms),
            "size": env.get("SNGAN_BATCH_MAX_SIZE", settings.batch_max_size),
            "chunk": env.get("SNGAN_GENERATION_CHUNK")
            or settings.generation_chunk
            or f"{default_chunk(device)} (default on {device})",
        }
        rows: list[Row] = []
        walks: list[WalkRow] = []
        for batching in (True,) if args.walks_only else (True, False):
            logs = workdir / f"batching-{batching}"
            logs.mkdir()
            with running({**env, "SNGAN_BATCHING": str(batching).lower()}, logs) as service:
                url = service.serve(workers=args.api_workers)
                if not args.walks_only:
                    rows += measure(url, job_id, args, batching)
                if batching:
                    walks = measure_walks(url, job_id, args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    what = args.checkpoint or f"{args.arch}" + (f" g_ch/d_ch {args.g_ch}" if args.g_ch else "")
    print()
    print(f"Latent walks, {what} on {device}: 3 seeds, {args.walk_frames} frames a segment")
    print()
    print("| format | frames | ms per walk (p50) | frames/s |")
    print("|---|---|---|---|")
    for w in walks:
        print(f"| {w.fmt} | {w.frames} | {w.p50_ms:.0f} | {w.frames_per_s:.1f} |")
    if args.walks_only:
        return

    off = {r.clients: r for r in rows if not r.batching}
    single = off[min(off)].p50_ms
    print()
    print(
        f"{what}, generation on {device} (server's torch threads: {args.threads or 'default'}), "
        f"{args.duration:g} s a row; batch_max_wait_ms {knobs['wait']}, batch_max_size "
        f"{knobs['size']}, generation_chunk {knobs['chunk']}, {args.api_workers} API process(es)"
    )
    print()
    print(
        "| clients | batching | requests/s | p50 ms | p99 ms | images per batch "
        "| requests/s ÷ batching off |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r.clients, not r.batching)):
        ratio = r.requests_per_s / max(off[r.clients].requests_per_s, 1e-9)
        print(
            f"| {r.clients} | {'on' if r.batching else 'off'} | {r.requests_per_s:.1f} | "
            f"{r.p50_ms:.0f} | {r.p99_ms:.0f} | {r.mean_batch:.1f} | {ratio:.2f}× |"
        )
    top = max(off)
    on_top = next(r for r in rows if r.batching and r.clients == top)
    gain = on_top.requests_per_s / off[top].requests_per_s
    print()
    print(
        f"Goals: at {top} clients batching gives {gain:.2f}× "
        f"the requests/s of batching off (goal ≥ 3×); its p99 is {on_top.p99_ms / single:.2f}× "
        f"the single-client unbatched p50 of {single:.0f} ms (goal < 2×)."
    )


if __name__ == "__main__":
    main()
