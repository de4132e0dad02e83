"""The service as the benchmarks run it: the `sngan serve` and `sngan worker` commands as
processes (each in its own process group, its output in a log file), on a PostgreSQL database
and Redis key prefix made for the run and removed after it, or on an embedded data directory.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    import psycopg
    from sqlalchemy.orm import Session, sessionmaker

REPO = Path(__file__).resolve().parents[1]
SNGAN = Path(sys.executable).with_name("sngan")  # the console script scripts/setup installs
POSTGRES_URL = os.environ.get(
    "SNGAN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("SNGAN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(probe: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.2)


def service_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """This process's environment without its SNGAN_ settings, with `settings` instead."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNGAN_")}
    env.update(
        SNGAN_DATA_DIR=str(data_dir),
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        PYTHONUNBUFFERED="1",
    )
    env.update(settings)
    return env


def admin_connect(postgres_url: str = POSTGRES_URL) -> psycopg.Connection[Any]:
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


def add_postgres_option(parser: argparse.ArgumentParser) -> None:
    """``--postgres [URL]``: run on PostgreSQL (a scratch database made under URL, see
    `scratch_services`) instead of the embedded SQLite stack."""
    parser.add_argument(
        "--postgres",
        nargs="?",
        const=POSTGRES_URL,
        help=f"run on PostgreSQL: a database made under this URL (default {POSTGRES_URL})",
    )


@contextlib.contextmanager
def scratch_services(
    postgres_url: str = POSTGRES_URL, redis_url: str = REDIS_URL
) -> Iterator[dict[str, str]]:
    """The settings of a database made for this run on `postgres_url` and a Redis key prefix
    of its own; the database is dropped and the keys deleted afterwards."""
    import redis
    from sqlalchemy.engine import make_url

    from app.core.db import get_engine

    name = f"sngan_bench_{secrets.token_hex(4)}"
    prefix = f"sngan-bench-{secrets.token_hex(4)}:"
    with admin_connect(postgres_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    database_url = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield {
            "SNGAN_DATABASE_URL": database_url,
            "SNGAN_BROKER_URL": redis_url,
            "SNGAN_BROKER_KEY_PREFIX": prefix,
        }
    finally:
        get_engine(database_url).dispose()
        with admin_connect(postgres_url) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        client = redis.Redis.from_url(redis_url)
        stale = list(client.scan_iter(match=prefix + "*"))
        if stale:
            client.delete(*stale)


@dataclass
class Service:
    """`sngan serve` (and any `sngan worker`) on one data directory and database."""

    env: dict[str, str]
    workdir: Path
    url: str = ""
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        with (self.workdir / f"{name}.log").open("ab") as log:  # the child keeps its own fd
            proc = subprocess.Popen(
                [str(SNGAN), *args],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: its children stop with it
            )
        self.procs[name] = proc
        return proc

    def serve(self, workers: int = 1, timeout: float = 120) -> str:
        """The API on a free loopback port, up (every one of its `workers` processes
        answering) when this returns; its URL."""
        port = free_port()
        proc = self.start("api", ["serve", "--port", str(port), "--workers", str(workers)])
        self.url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"sngan serve exited:\n{self.log_tail('api')}")
            try:
                text = httpx.get(f"{self.url}/metrics", timeout=5).text
            except httpx.HTTPError:
                return False
            found = re.search(r"^sngan_api_processes (\S+)$", text, re.MULTILINE)
            return found is not None and float(found.group(1)) >= workers

        wait_until(up, timeout, "the API")
        return self.url

    def worker(self) -> None:
        """One Celery worker (`sngan worker`), without the cluster chatter of several."""
        self.start(
            "worker", ["worker", "--without-gossip", "--without-mingle", "--without-heartbeat"]
        )

    def client(self, timeout: float = 60, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def sessions(self) -> sessionmaker[Session]:
        from app.core.db import session_factory

        return session_factory(self.env.get("SNGAN_DATABASE_URL"))

    def log_tail(self, name: str, lines: int = 60) -> str:
        path = self.workdir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


@contextlib.contextmanager
def running(env: dict[str, str], workdir: Path) -> Iterator[Service]:
    """A `Service` whose processes are stopped on the way out, whatever happens."""
    service = Service(env, workdir)
    try:
        yield service
    finally:
        service.stop()


def insert_finished_job(
    database_url: str, data_dir: Path, job_id: str, checkpoint: Path, sha: str, name: str
) -> None:
    """A succeeded job of owner `local` (every request's owner with auth off) whose one
    checkpoint is `checkpoint`, recorded as the worker's sinks record it."""
    from app.core.db import session_factory
    from app.core.status import JobStatus
    from app.core.tables import Checkpoint, Job, utcnow

    now = utcnow()
    with session_factory(database_url)() as session:
        session.add(
            Job(
                id=job_id,
                owner="local",
                name=name,
                status=JobStatus.SUCCEEDED,
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
