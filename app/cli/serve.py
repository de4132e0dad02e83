"""`sngan serve` and `sngan worker`: run the service. `serve` supervises its children: the API
(one uvicorn process, or several under uvicorn's supervisor) and, with the embedded broker or
``--worker``, one Celery worker; a signal stops them all, the worker warm first.

The database layer, the broker client and uvicorn are imported inside the commands, so that
the HTTP client commands do not pay for them.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from app.cli.console import err
from app.core.config import Settings, get_settings

if TYPE_CHECKING:
    from uvicorn.supervisors.multiprocess import Multiprocess

CELERY_APP = "worker.celery_app:celery"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _embedded(settings: Settings) -> bool:
    """No database or broker server configured: SQLite and the filesystem broker."""
    return settings.embedded_broker and str(settings.database_url).startswith("sqlite")


def _celery_argv(
    concurrency: int, hostname: str | None, loglevel: str, extra: list[str]
) -> list[str]:
    from app.core.queue import TRAIN_QUEUE

    argv = [sys.executable, "-m", "celery", "-A", CELERY_APP, "worker", "-Q", TRAIN_QUEUE]
    argv += ["--concurrency", str(concurrency), "--loglevel", loglevel]
    if hostname:
        argv += ["--hostname", hostname]
    return argv + extra


class _WorkerChild:
    """One Celery worker as a child process, in our process group (it dies with the group)."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(argv, env=env)
        self.stopping = False

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self) -> None:
        """Ask for a warm shutdown, once (a repeated SIGTERM only repeats celery's message)."""
        if not self.stopping and self.alive():
            self.proc.send_signal(signal.SIGTERM)
        self.stopping = True

    def stop(self, grace_s: float) -> int | None:
        """Warm shutdown (SIGTERM), then cold (SIGQUIT) after ``grace_s``, then SIGKILL.

        A warm shutdown hands a running job back: it stops at its next step, is checkpointed
        there and goes back to the queue (worker/shutdown.py), usually within seconds. A
        worker still busy past the grace period is stopped cold; its job is then re-queued
        when its lease runs out and continues from its latest checkpoint.
        """
        self.terminate()
        for escalate, wait_s in ((None, grace_s), (signal.SIGQUIT, 10.0)):
            if escalate is not None and self.alive():
                err.print("worker still busy: cold shutdown (its job resumes after its lease)")
                self.proc.send_signal(escalate)
            try:
                return self.proc.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                pass
        if self.alive():
            self.proc.kill()
        return self.proc.wait()


def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    worker: Annotated[
        bool,
        typer.Option(
            "--worker/--no-worker",
            help="Also run one Celery worker (always on with the embedded broker).",
        ),
    ] = False,
    grace: Annotated[
        float, typer.Option(help="Seconds the worker may take to stop before it is forced.")
    ] = 10.0,
    workers: Annotated[
        int | None,
        typer.Option(min=1, max=64, help="API processes (default SNGAN_API_WORKERS)."),
    ] = None,
) -> None:
    """Run migrations, then the API (and one worker as a child process).

    Ctrl-C or SIGTERM stops both: the signal is passed on to the worker, both are waited
    for, and the command exits 0. Nothing is deleted: a restart finds every job again.
    """
    settings = get_settings()
    workers = workers or settings.api_workers
    embedded = _embedded(settings)
    if embedded and "auth" not in settings.model_fields_set:
        if _is_loopback(host):
            os.environ["SNGAN_AUTH"] = "off"
            get_settings.cache_clear()
            settings = get_settings()
            err.print(
                "embedded mode (SQLite + filesystem broker, no SNGAN_DATABASE_URL/"
                "SNGAN_BROKER_URL): exported SNGAN_AUTH=off, every request acts as owner "
                "'local'. Set SNGAN_AUTH=on to require API keys."
            )
        else:
            err.print(f"embedded mode on {host}: API keys required (SNGAN_AUTH=on).")

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # Children read the same settings; pin the resolved data directory for them.
    os.environ["SNGAN_DATA_DIR"] = str(settings.data_dir)
    err.print(f"data directory: {settings.data_dir}")

    from app.core.db import migrate
    from app.core.queue import TRAIN_QUEUE

    migrate()
    if workers > 1:
        _prepare_api_processes(settings, workers)

    import uvicorn

    child: _WorkerChild | None = None
    if worker or settings.embedded_broker:
        extra = ["--without-gossip", "--without-mingle"] if settings.embedded_broker else []
        argv = _celery_argv(1, None, settings.log_level.lower(), extra)
        child = _WorkerChild(argv, dict(os.environ))
        err.print(f"started worker (pid {child.proc.pid}) on queue '{TRAIN_QUEUE}'")

    stop_signal: list[int] = []
    worker_died: list[int] = []

    def on_stop_signal(sig: int) -> None:
        # Pass the stop on to the worker at once, so both wind down together.
        stop_signal.append(sig)
        if child is not None:
            child.terminate()

    config = uvicorn.Config(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=5,
        workers=workers,
    )
    server: uvicorn.Server | None = None
    supervisor: Multiprocess | None = None
    if workers > 1:
        from uvicorn.supervisors.multiprocess import Multiprocess

        supervisor = Multiprocess(config, sockets=[config.bind_socket()])
        err.print(f"{workers} API processes")
    else:

        class ApiServer(uvicorn.Server):
            def handle_exit(self, sig: int, frame: FrameType | None) -> None:
                on_stop_signal(sig)
                super().handle_exit(sig, frame)

        server = ApiServer(config)

    def stop_api() -> None:
        if supervisor is not None:
            supervisor.should_exit.set()
        elif server is not None:
            server.should_exit = True

    def stop_all(sig: int, frame: FrameType | None) -> None:
        on_stop_signal(sig)
        stop_api()

    def watch_worker() -> None:
        assert child is not None
        code = child.proc.wait()
        if not stop_signal and not child.stopping:
            worker_died.append(code)
            err.print(f"[bold red]worker exited unexpectedly (status {code}); stopping[/]")
            stop_api()

    if child is not None:
        threading.Thread(target=watch_worker, name="worker-watch", daemon=True).start()

    # uvicorn re-raises the signal that stopped it once it is done: note it, don't die of it.
    previous = {
        sig: signal.signal(sig, lambda s, f: stop_signal.append(s))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    api_failed = False
    try:
        if supervisor is not None:
            # Replaces the handlers the supervisor set when it was built (they stop only the
            # API), as ApiServer.handle_exit extends uvicorn's.
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, stop_all)
            supervisor.run()
            # it also returns when an API process could not start
            api_failed = not stop_signal and not worker_died
        elif server is not None:
            server.run()
    except SystemExit as exc:  # uvicorn exits 1 when it cannot bind
        api_failed = exc.code not in (0, None)
    finally:
        if child is not None:
            code = child.stop(grace)
            err.print(f"worker stopped (status {code})")
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if api_failed or worker_died or (server is not None and not server.started):
        raise typer.Exit(1)
    err.print("stopped")


def _prepare_api_processes(settings: Settings, workers: int) -> None:
    """Before several API processes start: the parent has migrated, so they need not; they
    know how many they are (to share the CPU cores); their Prometheus metrics go to files in
    a fresh folder that /metrics of any of them sums."""
    os.environ["SNGAN_MIGRATE_ON_STARTUP"] = "false"
    os.environ["SNGAN_API_WORKERS"] = str(workers)
    metrics_dir = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or settings.data_dir / "metrics")
    shutil.rmtree(metrics_dir, ignore_errors=True)  # the counts of an earlier run
    metrics_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)


def worker(
    ctx: typer.Context,
    concurrency: Annotated[int, typer.Option(help="Tasks at once (one per GPU).")] = 1,
    hostname: Annotated[str | None, typer.Option(help="Celery node name, e.g. gpu0@%h.")] = None,
) -> None:
    """Run one Celery worker on the training queue (extra options go to celery)."""
    settings = get_settings()
    argv = _celery_argv(concurrency, hostname, settings.log_level.lower(), list(ctx.args))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)
