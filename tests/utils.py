"""Helpers of the service tests: where the servers are, the stacks' environment, datasets
made on the fly, tiny job bodies, rows written directly, waiting, and a small Server-Sent
Events reader."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[1]
POSTGRES_URL = os.environ.get(
    "SNGAN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("SNGAN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
STACKS = [s.strip() for s in os.environ.get("SNGAN_TEST_STACKS", "services,embedded").split(",")]

# Small limits and fast clocks, so the tests can reach every limit and finish quickly.
TEST_SETTINGS = {
    "SNGAN_AUTH": "on",
    "SNGAN_MIGRATE_ON_STARTUP": "false",
    "SNGAN_MAX_STEPS": "5000",
    "SNGAN_MAX_SAMPLES_PER_REQUEST": "16",
    "SNGAN_MAX_UPLOAD_BYTES": str(2 * 1024 * 1024),
    "SNGAN_MAX_UNCOMPRESSED_BYTES": str(8 * 1024 * 1024),
    "SNGAN_MAX_DATASET_IMAGES": "500",
    "SNGAN_MAX_IMAGE_SIDE": "256",
    "SNGAN_HEARTBEAT_INTERVAL_S": "0.5",
    "SNGAN_LEASE_TIMEOUT_S": "15",
    "SNGAN_METRICS_FLUSH_EVERY_S": "0.2",
    "SNGAN_REAPER_INTERVAL_S": "1",
    "SNGAN_REQUEUE_QUEUED_AFTER_S": "30",
    "SNGAN_SSE_POLL_INTERVAL_S": "0.1",
    "SNGAN_TRAIN_DEVICE": "cpu",
    "SNGAN_GENERATION_DEVICE": "cpu",
    "SNGAN_LOG_LEVEL": "INFO",
}


def admin_connect(postgres_url: str = POSTGRES_URL):  # type: ignore[no-untyped-def]
    """An autocommit connection to PostgreSQL's maintenance database (CREATE/DROP DATABASE)."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(postgres_url)
    return psycopg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        dbname=url.database or "postgres",
        autocommit=True,
        connect_timeout=3,
    )


def base_env(data_dir: Path) -> dict[str, str]:
    """The environment of a test's API or worker: none of the caller's SNGAN_ settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNGAN_")}
    env.update(TEST_SETTINGS)
    env.update(
        SNGAN_DATA_DIR=str(data_dir),
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",  # two processes share two cores; one torch thread each
    )
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Small enough to train a few dozen steps a second on one CPU core.
TINY_MODEL = {"arch": "cnn32", "z_dim": 16, "g_ch": 8, "d_ch": 8}
TINY_TRAIN = {"batch_size": 4, "n_dis": 1}
METRIC_NAMES = ("loss_d", "loss_g", "d_real", "d_fake", "lr", "steps_per_s")
FINISHED = ("succeeded", "failed", "canceled")


def tiny_job(dataset: dict[str, Any], steps: int = 30, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "dataset": dataset,
        "model": dict(TINY_MODEL),
        "train": {**TINY_TRAIN, "steps": steps},
        "checkpoint_every": 10,
        "sample_every": 10,
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(body.get(key), dict):
            body[key] = {**body[key], **value}
        else:
            body[key] = value
    return body


def shapes(
    n: int, size: int = 32, channels: int = 3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, size, size, C) images of bright squares on noise, and labels 0..3."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, (n, size, size, channels), dtype=np.uint8)
    labels = rng.integers(0, 4, n)
    for i, label in enumerate(labels):
        top, left = rng.integers(0, size // 2, 2)
        side = size // 4 + int(label) * 2
        images[i, top : top + side, left : left + side] = 200 + 10 * int(label)
    return images, labels.astype(np.int64)


def npz_bytes(images: np.ndarray, labels: np.ndarray | None = None, **arrays: Any) -> bytes:
    buf = io.BytesIO()
    if labels is not None:
        arrays["labels"] = labels
    np.savez(buf, images=images, **arrays)
    return buf.getvalue()


def png_bytes(width: int, height: int, mode: str = "RGB", value: int = 128) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    colour: Any = value if mode == "L" else (value,) * len(mode)
    Image.new(mode, (width, height), colour).save(buf, format="PNG")
    return buf.getvalue()


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def upload(client: httpx.Client, filename: str, data: bytes) -> httpx.Response:
    return client.post("/v1/datasets", files={"file": (filename, data)})


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_for_status(
    client: httpx.Client, job_id: str, statuses: tuple[str, ...] | str, timeout: float = 120
) -> dict[str, Any]:
    wanted = (statuses,) if isinstance(statuses, str) else statuses
    last: dict[str, Any] = {}

    def probe() -> dict[str, Any] | None:
        nonlocal last
        response = client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        last = response.json()
        if last["status"] in FINISHED and last["status"] not in wanted:
            raise AssertionError(f"job ended {last['status']}, wanted {wanted}: {last['error']}")
        return last if last["status"] in wanted else None

    try:
        return wait_for(probe, timeout, f"job {job_id} to be {wanted}")
    except AssertionError as e:
        raise AssertionError(f"{e}; last seen: {json.dumps(last)[:2000]}") from None


@dataclass
class SSEEvent:
    id: int | None
    event: str
    data: Any


def read_events(
    client: httpx.Client,
    job_id: str,
    last_event_id: int | None = None,
    timeout: float = 120,
) -> list[SSEEvent]:
    """Every event of the job's stream until the server ends it (after ``done``)."""
    headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
    found: list[SSEEvent] = []
    fields: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    with client.stream(
        "GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=timeout
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if time.monotonic() > deadline:
                raise AssertionError(f"event stream still open after {timeout}s")
            if line.startswith(":"):
                continue  # a keep-alive comment
            if not line:
                if "data" in fields:
                    found.append(
                        SSEEvent(
                            int(fields["id"]) if "id" in fields else None,
                            fields.get("event", "message"),
                            json.loads(fields["data"]),
                        )
                    )
                fields = {}
                continue
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value
    return found


def insert_job(
    stack: Any, owner: str, status: str = "failed", steps: int = 20, **values: Any
) -> str:
    """A job row written straight to the database (no message is sent for it): for states
    the API cannot be asked to produce on demand, like a crashed worker's job."""
    import uuid

    from app.api.schemas import JobCreate
    from app.core.tables import Job, utcnow

    body = tiny_job({"source": "synthetic", "num_images": 64}, steps=steps)
    config = JobCreate.model_validate(body).model_dump(mode="json")
    job_id = uuid.uuid4().hex
    now = utcnow()
    with stack.sessions()() as session:
        session.add(
            Job(
                id=job_id,
                owner=owner,
                name=f"inserted-{job_id[:8]}",
                status=status,
                config=config,
                created_at=now,
                updated_at=now,
                total_steps=steps,
                latest_metrics={},
                **values,
            )
        )
        session.commit()
    return job_id


def cancel_all(client: httpx.Client) -> None:
    """Cancel the caller's unfinished jobs, so the shared worker does not train them."""
    for job in client.get("/v1/jobs", params={"limit": 200}).json()["data"]:
        if job["status"] not in FINISHED:
            client.post(f"/v1/jobs/{job['id']}/cancel")


def uvicorn_argv(port: int) -> list[str]:
    """The API under uvicorn on a loopback port, as the tests and benchmarks run it."""
    return [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory"] + [
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip


class ApiServer:
    """uvicorn serving `app.main:create_app` as a subprocess on a free loopback port, up
    (every one of its `workers` processes answering) when the constructor returns; its output
    goes to `log`. Several workers share their Prometheus metrics through a folder beside
    `log`, as `sngan serve --workers` sets up."""

    def __init__(
        self, env: dict[str, str], log: Path, timeout: float = 60, workers: int = 1
    ) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        argv = uvicorn_argv(port)
        if workers > 1:
            metrics_dir = log.with_suffix(".metrics")
            shutil.rmtree(metrics_dir, ignore_errors=True)
            metrics_dir.mkdir(parents=True)
            env = {
                **env,
                "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
                "SNGAN_API_WORKERS": str(workers),  # as `sngan serve --workers` runs them
            }
            argv += ["--workers", str(workers)]
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv,
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited:\n{log.read_text()[-3000:]}")
            try:
                text = httpx.get(f"{self.url}/metrics", timeout=5).text
                up = re.search(r"^sngan_api_processes (\S+)$", text, re.MULTILINE)
                if up and float(up.group(1)) >= workers:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def insert_finished_job(
    database_url: str, data_dir: Path, job_id: str, checkpoint: Path, sha: str, name: str
) -> None:
    """A succeeded job of owner `local` (every request's owner with auth off) whose one
    checkpoint is `checkpoint`, recorded as the worker's sinks record it."""
    from app.core.db import session_factory
    from app.core.tables import Checkpoint, Job, utcnow

    now = utcnow()
    with session_factory(database_url)() as session:
        session.add(
            Job(
                id=job_id,
                owner="local",
                name=name,
                status="succeeded",
                config={},
                created_at=now,
                updated_at=now,
                total_steps=2,
                latest_metrics={},
            )
        )
        session.flush()
        session.add(
            Checkpoint(
                job_id=job_id,
                step=2,
                path=str(checkpoint.relative_to(data_dir)),
                size_bytes=checkpoint.stat().st_size,
                sha256=sha,
            )
        )
        session.commit()


# --- a running stack: database, broker, API and worker as real processes -------------------


def services_unreachable(reason: str) -> None:
    """A test needs PostgreSQL or Redis and it is not there: skip, or fail under CI."""
    import pytest

    message = (
        f"{reason}; start the servers with `docker compose up -d postgres redis` "
        "(or set SNGAN_TEST_POSTGRES_URL / SNGAN_TEST_REDIS_URL)"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class Stack:
    kind: str
    base_url: str
    database_url: str
    data_dir: Path
    env: dict[str, str]
    workdir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def client(self, key: str | None = None, timeout: float = 60) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def sessions(self):  # type: ignore[no-untyped-def]
        from app.core.db import session_factory

        return session_factory(self.database_url)

    def new_key(self, owner: str | None = None) -> str:
        from app.api.deps import create_api_key

        with self.sessions()() as session:
            return create_api_key(session, owner or f"owner-{secrets.token_hex(4)}")

    def settings(self):  # type: ignore[no-untyped-def]
        """The stack's settings, for code the tests run in this process."""
        from app.core.config import Settings

        values = {
            k[len("SNGAN_") :].lower(): v for k, v in self.env.items() if k.startswith("SNGAN_")
        }
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    def log_tail(self, name: str, lines: int = 60) -> str:
        path = self.workdir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def start(
        self, name: str, args: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with (self.workdir / f"{name}.log").open("ab") as log:  # the child keeps its own fd
            proc = subprocess.Popen(
                args,
                cwd=REPO,
                env={**self.env, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: pool children stop with it
            )
        self.procs[name] = proc
        return proc

    def stop(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is None:
                # the worker's cold shutdown: no waiting for a job a test left running
                os.killpg(proc.pid, signal.SIGQUIT if "worker" in name else signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


def start_processes(stack: Stack, worker: bool = True) -> None:
    """The API under uvicorn on a free port, and (unless `worker` is false) one worker."""
    port = free_port()
    stack.base_url = f"http://127.0.0.1:{port}"
    stack.start("api", uvicorn_argv(port))
    if worker:
        start_worker(stack)
        return
    wait_for(lambda: _api_up(stack), 60, "the API to start")


def _api_up(stack: Stack) -> bool:
    if stack.procs["api"].poll() is not None:
        raise RuntimeError(f"api exited at start:\n{stack.log_tail('api')}")
    try:
        return httpx.get(f"{stack.base_url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def start_worker(stack: Stack, name: str = "worker") -> None:
    """Start (or restart) a Celery worker (its log: `name`.log) and wait until it and the API
    are up."""
    mark = len(stack.log_tail(name, 100_000).splitlines())
    stack.start(
        name,
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker.celery_app:celery",
            "worker",
            "-Q",
            "gpu",
            "--concurrency",
            "1",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-n",
            f"test-{secrets.token_hex(3)}@%h",
        ],
    )
    deadline = time.monotonic() + 60
    while True:
        for name, proc in stack.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited at start:\n{stack.log_tail(name)}")
        try:
            api_up = httpx.get(f"{stack.base_url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            api_up = False
        new_lines = stack.log_tail(name, 100_000).splitlines()[mark:]
        if api_up and any("ready." in line for line in new_lines):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"stack did not start:\n{stack.log_tail('api')}\n{stack.log_tail(name)}"
            )
        time.sleep(0.2)


@contextlib.contextmanager
def running_stack(
    kind: str,
    workdir: Path,
    extra_env: dict[str, str] | None = None,
    worker: bool = True,
    test_settings: bool = True,
    on_unreachable: Callable[[str], None] | None = None,
) -> Iterator[Stack]:
    """A fresh database (and Redis key prefix), the API and (unless `worker` is false) one
    worker; all removed after. `test_settings` false keeps the service's own defaults (for
    benchmarks); `on_unreachable` is told when PostgreSQL or Redis is not there (default:
    RuntimeError)."""
    from app.core.db import get_engine, migrate

    def services_unreachable(reason: str) -> None:
        if on_unreachable is not None:
            on_unreachable(reason)
        raise RuntimeError(reason)

    data_dir = workdir / "data"
    env = base_env(data_dir)
    if not test_settings:
        for name in TEST_SETTINGS:
            env.pop(name, None)
    env.update(extra_env or {})
    db_name = None
    if kind == "services":
        try:
            with admin_connect() as conn:
                db_name = f"sngan_test_{secrets.token_hex(4)}"
                conn.execute(f'CREATE DATABASE "{db_name}"')
        except Exception as e:
            services_unreachable(f"PostgreSQL at {POSTGRES_URL} is unreachable ({e})")
        try:
            import redis

            redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
        except Exception as e:
            services_unreachable(f"Redis at {REDIS_URL} is unreachable ({e})")
        from sqlalchemy.engine import make_url

        database_url = (
            make_url(POSTGRES_URL).set(database=db_name).render_as_string(hide_password=False)
        )
        env.update(
            SNGAN_DATABASE_URL=database_url,
            SNGAN_BROKER_URL=REDIS_URL,
            SNGAN_BROKER_KEY_PREFIX=f"sngan-test-{secrets.token_hex(4)}:",
        )
    elif kind == "embedded":
        database_url = f"sqlite:///{data_dir / 'sngan.db'}"
    else:
        raise ValueError(f"unknown stack {kind!r} in SNGAN_TEST_STACKS")

    stack = Stack(kind, "", database_url, data_dir, env, workdir)
    try:
        migrate(database_url)
        start_processes(stack, worker)
        yield stack
    finally:
        stack.stop()
        get_engine(database_url).dispose()
        if db_name is not None:
            with admin_connect() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
            if "SNGAN_BROKER_KEY_PREFIX" in env:
                import redis

                client = redis.Redis.from_url(REDIS_URL)
                keys = list(client.scan_iter(match=env["SNGAN_BROKER_KEY_PREFIX"] + "*"))
                if keys:
                    client.delete(*keys)
