"""The ``sngan`` command: run the service, talk to it over HTTP, train a demo locally.

Heavy modules (torch, the web app, the database layer) are imported inside the commands
that need them, so the HTTP client commands start in a fraction of a second.

Output convention: data goes to stdout (an id alone on the last line for the commands that
create something, so ``ID=$(sngan jobs submit ...)`` works; ``--json`` prints the whole
object instead); messages and progress chatter go to stderr.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, NoReturn

import httpx
import typer
from rich.console import Console
from rich.table import Column, Table

from app.core.config import Settings, get_settings

app = typer.Typer(
    name="sngan",
    help="Train Spectral-Normalization GANs as jobs and serve the images they generate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="API keys (needs direct access to the database).", no_args_is_help=True)
datasets_app = typer.Typer(help="Upload and list datasets.", no_args_is_help=True)
jobs_app = typer.Typer(help="Submit, list, watch and cancel training jobs.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(datasets_app, name="datasets")
app.add_typer(jobs_app, name="jobs")

out = Console(highlight=False, soft_wrap=True)
if not out.is_terminal:  # pipes and logs: don't squeeze tables into 80 columns
    out.width = max(out.width, 140)
err = Console(stderr=True, highlight=False, soft_wrap=True)

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled"})
CELERY_APP = "worker.celery_app:celery"
TRAIN_QUEUE = "gpu"


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", markup=True)
    raise typer.Exit(code)


# --------------------------------------------------------------------------------------
# running the service
# --------------------------------------------------------------------------------------


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


@app.command()
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

    class ApiServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # Pass the stop on to the worker at once, so both wind down together.
            stop_signal.append(sig)
            if child is not None:
                child.terminate()
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=5,
        workers=workers,
    )
    server = ApiServer(config)
    worker_died: list[int] = []
    supervisor = None
    if workers > 1:
        from uvicorn.supervisors.multiprocess import Multiprocess

        supervisor = Multiprocess(config, sockets=[config.bind_socket()])
        err.print(f"{workers} API processes")

    def stop_api() -> None:
        if supervisor is not None:
            supervisor.should_exit.set()
        else:
            server.should_exit = True

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
            for sig in (signal.SIGINT, signal.SIGTERM):  # as ApiServer.handle_exit does
                signal.signal(sig, lambda s, f: _stop_all(s, stop_signal, child, stop_api))
            supervisor.run()
            # it also returns when an API process could not start
            api_failed = not stop_signal and not worker_died
        else:
            server.run()
    except SystemExit as exc:  # uvicorn exits 1 when it cannot bind
        api_failed = exc.code not in (0, None)
    finally:
        if child is not None:
            code = child.stop(grace)
            err.print(f"worker stopped (status {code})")
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if api_failed or worker_died or (supervisor is None and not server.started):
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


def _stop_all(
    sig: int, stop_signal: list[int], child: _WorkerChild | None, stop_api: Callable[[], None]
) -> None:
    stop_signal.append(sig)
    if child is not None:
        child.terminate()
    stop_api()


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
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


# --------------------------------------------------------------------------------------
# keys (direct database access)
# --------------------------------------------------------------------------------------


@keys_app.command("create")
def keys_create(
    owner: Annotated[str, typer.Option(help="Who the key belongs to.")],
) -> None:
    """Create an API key; prints it alone on the last line (it is shown only once)."""
    from app.api import deps as auth
    from app.core import db

    db.migrate()
    with db.session_scope() as session:
        try:
            key = auth.create_api_key(session, owner)
        except ValueError as exc:
            fail(str(exc))
    err.print(f"created an API key for owner '{owner}' (store it now: it is shown only once)")
    out.print(key)


# --------------------------------------------------------------------------------------
# HTTP client
# --------------------------------------------------------------------------------------

UrlOpt = Annotated[str, typer.Option("--url", envvar="SNGAN_URL", help="Base URL of the API.")]
KeyOpt = Annotated[
    str | None,
    typer.Option("--key", envvar="SNGAN_API_KEY", help="API key (Bearer).", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the whole JSON object.")]
DEFAULT_URL = "http://127.0.0.1:8000"


class Api:
    """A thin httpx client that turns the API's error bodies into one-line failures."""

    def __init__(self, url: str, key: str | None, timeout: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.url = url.rstrip("/")
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            fail(f"cannot reach the API at {self.url}: {exc}")
        if response.is_error:
            fail(error_message(response))
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()


def error_message(response: httpx.Response) -> str:
    """The message of an API error body ``{"error": {"code", "message", "details"}}``."""
    try:
        body = response.json()
        error = body["error"]
        message = f"{error['message']} ({error['code']}, HTTP {response.status_code})"
        if error.get("details"):
            message += f"\n{json.dumps(error['details'], indent=2)}"
        return message
    except (ValueError, KeyError, TypeError):
        text = response.text.strip()[:500] or response.reason_phrase
        return f"HTTP {response.status_code}: {text}"


def print_json(obj: Any) -> None:
    if out.is_terminal:
        out.print_json(json.dumps(obj))
    else:
        print(json.dumps(obj, indent=2))


def _id_column() -> Column:
    # Ids are for copying: never cut or wrapped, whatever the width.
    return Column("id", no_wrap=True, min_width=32)


def _when(timestamp: str | None) -> str:
    return (timestamp or "")[:19].replace("T", " ")


@datasets_app.command("upload")
def datasets_upload(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help=".npz or .zip")],
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Upload a dataset (.npz with `images`[, `labels`] or a .zip of images)."""
    api = Api(url, key, timeout=600.0)
    with file.open("rb") as fh:
        ds = api.json("POST", "/v1/datasets", files={"file": (file.name, fh)})
    if as_json:
        print_json(ds)
        return
    h, w = ds["image_size"]
    err.print(
        f"uploaded {file.name}: {ds['num_images']} images {h}x{w}, {ds['channels']} channel(s), "
        f"{ds['num_classes']} class(es)"
    )
    out.print(ds["id"])


@datasets_app.command("list")
def datasets_list(url: UrlOpt = DEFAULT_URL, key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """List your datasets."""
    body = Api(url, key).json("GET", "/v1/datasets")
    rows = body["data"] if isinstance(body, dict) else body
    if as_json:
        print_json(body)
        return
    table = Table(_id_column(), "images", "size", "channels", "classes", "created")
    for ds in rows:
        h, w = ds["image_size"]
        table.add_row(
            ds["id"],
            str(ds["num_images"]),
            f"{h}x{w}",
            str(ds["channels"]),
            str(ds["num_classes"]),
            _when(ds["created_at"]),
        )
    out.print(table)


def _load_job_file(path: Path) -> dict[str, Any]:
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        body = yaml.safe_load(text)
    else:
        body = json.loads(text)
    if not isinstance(body, dict):
        fail(f"{path}: expected a JSON/YAML object with the job body")
    return body


def _set(body: dict[str, Any], dotted: str, value: Any) -> None:
    if value is None:
        return
    *parents, leaf = dotted.split(".")
    node = body
    for name in parents:
        node = node.setdefault(name, {})
    node[leaf] = value


@jobs_app.command("submit")
def jobs_submit(
    file: Annotated[
        Path | None,
        typer.Option("--file", "-f", exists=True, help="Job body as .json or .yaml."),
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="Id of an uploaded dataset.")] = None,
    source: Annotated[
        str | None, typer.Option(help="Built-in dataset: cifar10, stl10 or synthetic.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Job name.")] = None,
    arch: Annotated[str | None, typer.Option(help="cnn32, resnet32, cnn48 or resnet48.")] = None,
    z_dim: Annotated[int | None, typer.Option(help="Noise dimension.")] = None,
    g_ch: Annotated[int | None, typer.Option(help="Generator base width.")] = None,
    d_ch: Annotated[int | None, typer.Option(help="Discriminator base width.")] = None,
    conditional: Annotated[
        bool | None,
        typer.Option("--conditional/--unconditional", help="Use the dataset's labels."),
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Generator updates.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size.")] = None,
    n_dis: Annotated[int | None, typer.Option(help="D updates per G update.")] = None,
    loss: Annotated[str | None, typer.Option(help="hinge or ns.")] = None,
    lr_g: Annotated[float | None, typer.Option(help="Generator learning rate.")] = None,
    lr_d: Annotated[float | None, typer.Option(help="Discriminator learning rate.")] = None,
    lr_decay: Annotated[str | None, typer.Option(help="linear or none.")] = None,
    ema_decay: Annotated[float | None, typer.Option(help="EMA of G's weights.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    precision: Annotated[str | None, typer.Option(help="auto, fp32 or bf16.")] = None,
    eval_every: Annotated[int | None, typer.Option(help="Steps between IS/FID; 0=off.")] = None,
    eval_samples: Annotated[int | None, typer.Option(help="Images per evaluation.")] = None,
    checkpoint_every: Annotated[int | None, typer.Option(help="Steps between checkpoints.")] = None,
    sample_every: Annotated[int | None, typer.Option(help="Steps between sample grids.")] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Same key and body return the same job.")
    ] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Then watch it to the end.")] = False,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Submit a training job from flags and/or a job file (flags win)."""
    body: dict[str, Any] = _load_job_file(file) if file else {}
    if dataset and source:
        fail("give either --dataset or --source, not both")
    if dataset:
        body["dataset"] = {"id": dataset}
    elif source:
        body["dataset"] = {"source": source}
    if "dataset" not in body:
        fail("no dataset: give --dataset ID, --source cifar10|stl10|synthetic, or --file")
    for dotted, value in (
        ("name", name),
        ("model.arch", arch),
        ("model.z_dim", z_dim),
        ("model.g_ch", g_ch),
        ("model.d_ch", d_ch),
        ("model.conditional", conditional),
        ("train.steps", steps),
        ("train.batch_size", batch_size),
        ("train.n_dis", n_dis),
        ("train.loss", loss),
        ("train.lr_g", lr_g),
        ("train.lr_d", lr_d),
        ("train.lr_decay", lr_decay),
        ("train.ema_decay", ema_decay),
        ("train.seed", seed),
        ("train.precision", precision),
        ("eval.every", eval_every),
        ("eval.num_samples", eval_samples),
        ("checkpoint_every", checkpoint_every),
        ("sample_every", sample_every),
    ):
        _set(body, dotted, value)

    api = Api(url, key)
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    job = api.json("POST", "/v1/jobs", json=body, headers=headers)
    if as_json:
        print_json(job)
    else:
        err.print(f"submitted job {job['id']} ({job['status']})")
        out.print(job["id"])
    if watch:
        raise typer.Exit(_watch(api, job["id"], interval=1.0))


@jobs_app.command("list")
def jobs_list(
    status: Annotated[str | None, typer.Option(help="Only jobs with this status.")] = None,
    limit: Annotated[int, typer.Option(help="How many (newest first).")] = 20,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List your jobs, newest first."""
    params: dict[str, Any] = {"limit": limit}
    if status:
        params["status"] = status
    body = Api(url, key).json("GET", "/v1/jobs", params=params)
    if as_json:
        print_json(body)
        return
    table = Table(_id_column(), "name", "status", "step", "created")
    for job in body["data"]:
        p = job.get("progress") or {}
        table.add_row(
            job["id"],
            job.get("name") or "",
            job["status"],
            f"{p.get('step', 0)}/{p.get('total_steps', '?')}",
            _when(job["created_at"]),
        )
    out.print(table)


@jobs_app.command("show")
def jobs_show(job_id: str, url: UrlOpt = DEFAULT_URL, key: KeyOpt = None) -> None:
    """Print a job object as JSON."""
    print_json(Api(url, key).json("GET", f"/v1/jobs/{job_id}"))


@jobs_app.command("cancel")
def jobs_cancel(job_id: str, url: UrlOpt = DEFAULT_URL, key: KeyOpt = None) -> None:
    """Ask a queued or running job to stop (it keeps a final checkpoint)."""
    api = Api(url, key)
    api.request("POST", f"/v1/jobs/{job_id}/cancel")
    job = api.json("GET", f"/v1/jobs/{job_id}")
    err.print(f"cancel requested for job {job_id}")
    out.print(job["status"])


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _losses(job: dict[str, Any]) -> str:
    metrics = job.get("latest_metrics") or {}
    parts = [
        f"{name}={metrics[name]:.4f}"
        for name in ("loss_d", "loss_g", "is_mean", "fid")
        if isinstance(metrics.get(name), int | float)
    ]
    return " ".join(parts)


def _progress_line(job: dict[str, Any]) -> str:
    p = job.get("progress") or {}
    step, total = p.get("step") or 0, p.get("total_steps") or 0
    fraction = (
        p.get("fraction") if p.get("fraction") is not None else (step / total if total else 0)
    )
    sps = p.get("steps_per_s")
    line = f"{job['status']} step {step}/{total} ({fraction:.0%})"
    line += f" {sps:.2f} steps/s" if sps else " - steps/s"
    line += f" eta {_fmt_eta(p.get('eta_s'))}"
    losses = _losses(job)
    return f"{line} {losses}" if losses else line


def _get_job_retrying(api: Api, job_id: str, patience_s: float = 30.0) -> dict[str, Any]:
    """GET the job; ride out a server restart for up to ``patience_s``."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            response = api.client.get(f"/v1/jobs/{job_id}")
        except httpx.TransportError as exc:
            if time.monotonic() > deadline:
                fail(f"lost the API at {api.url}: {exc}")
            time.sleep(1.0)
            continue
        if response.is_error:
            fail(error_message(response))
        job: dict[str, Any] = response.json()
        return job


def _final(job: dict[str, Any]) -> int:
    step = (job.get("progress") or {}).get("step")
    if job["status"] == "succeeded":
        err.print(f"job {job['id']} succeeded at step {step}")
        return 0
    error = job.get("error") or {}
    reason = f": {error.get('message')} ({error.get('code')})" if error else ""
    err.print(f"job {job['id']} {job['status']} at step {step}{reason}")
    return 1


def _watch(api: Api, job_id: str, interval: float) -> int:
    job = _get_job_retrying(api, job_id)
    if not out.is_terminal:
        # Plain lines, one per change, for logs and pipes.
        last = None
        while True:
            line = _progress_line(job)
            if line != last:
                print(line, flush=True)
                last = line
            if job["status"] in TERMINAL_STATUSES:
                return _final(job)
            time.sleep(interval)
            job = _get_job_retrying(api, job_id)

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
    )

    columns = (
        TextColumn("[bold]{task.fields[status]:<9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[speed]} steps/s"),
        TextColumn("eta {task.fields[eta]}"),
        TextColumn("{task.fields[losses]}"),
    )
    with Progress(*columns, console=out, transient=False) as progress:
        task = progress.add_task(job_id, total=None, status="", speed="-", eta="-", losses="")
        while True:
            p = job.get("progress") or {}
            sps = p.get("steps_per_s")
            progress.update(
                task,
                total=p.get("total_steps") or None,
                completed=p.get("step") or 0,
                status=job["status"],
                speed=f"{sps:.2f}" if sps else "-",
                eta=_fmt_eta(p.get("eta_s")),
                losses=_losses(job),
            )
            if job["status"] in TERMINAL_STATUSES:
                break
            time.sleep(interval)
            job = _get_job_retrying(api, job_id)
    return _final(job)


@jobs_app.command("watch")
def jobs_watch(
    job_id: str,
    interval: Annotated[float, typer.Option(help="Seconds between polls.")] = 1.0,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = None,
) -> None:
    """Follow a job to its end; exit 0 if it succeeded, 1 otherwise."""
    raise typer.Exit(_watch(Api(url, key), job_id, interval))


# --------------------------------------------------------------------------------------
# samples
# --------------------------------------------------------------------------------------

SAMPLE_SUFFIX = {"grid": ".png", "png": ".png", "zip": ".zip", "npy": ".npy"}


@app.command()
def samples(
    job_id: str,
    n: Annotated[int, typer.Option("-n", help="How many images.")] = 64,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="File to write (default by format).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Noise seed (same seed, same images).")] = 0,
    fmt: Annotated[str, typer.Option("--format", help="grid, png, zip or npy.")] = "grid",
    checkpoint: Annotated[str, typer.Option(help="Checkpoint step or 'latest'.")] = "latest",
    labels: Annotated[
        str | None, typer.Option(help="Class labels, comma separated (conditional models).")
    ] = None,
    ema: Annotated[bool, typer.Option("--ema/--no-ema", help="Use EMA weights if any.")] = True,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = None,
) -> None:
    """Generate images now from a job's checkpoint and write them to a file."""
    if fmt not in SAMPLE_SUFFIX:
        fail(f"--format must be one of {', '.join(SAMPLE_SUFFIX)}")
    params: dict[str, Any] = {
        "n": n,
        "seed": seed,
        "format": fmt,
        "checkpoint": checkpoint,
        "ema": str(ema).lower(),
    }
    if labels:
        params["labels"] = labels
    response = Api(url, key, timeout=300.0).request(
        "GET", f"/v1/jobs/{job_id}/samples", params=params
    )
    path = output or Path(f"samples-{job_id}{SAMPLE_SUFFIX[fmt]}")
    path.write_bytes(response.content)
    err.print(f"wrote {n} image(s) ({fmt}, {len(response.content)} bytes)")
    out.print(str(path))


# --------------------------------------------------------------------------------------
# demo: train locally, no server
# --------------------------------------------------------------------------------------


@app.command()
def demo(
    steps: Annotated[int, typer.Option(help="Generator updates.")] = 1000,
    out_dir: Annotated[Path, typer.Option("--out", help="Where to write the run.")] = Path(
        "demo-run"
    ),
    arch: Annotated[str, typer.Option(help="cnn32, resnet32, cnn48 or resnet48.")] = "cnn32",
    ch: Annotated[int, typer.Option(help="Base width of G and D (small for CPU).")] = 32,
    z_dim: Annotated[int, typer.Option(help="Noise dimension.")] = 64,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 32,
    n_dis: Annotated[int, typer.Option(help="D updates per G update.")] = 1,
    conditional: Annotated[
        bool,
        typer.Option("--conditional/--unconditional", help="One shape class per grid row pair."),
    ] = True,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
) -> None:
    """Train a small SN-GAN on the synthetic shapes, no server, and write a sample grid.

    The defaults are a CPU-sized variant of the paper's CNN (Adam betas 0.5/0.999, constant
    learning rate): coloured discs, squares, triangles and crosses appear within minutes.
    """
    from models import (
        ARCHS,
        DataSpec,
        RunConfig,
        Trainer,
        TrainerSinks,
        generate_images,
        image_grid,
        load_dataset,
        load_generator,
        save_png,
    )

    if arch not in ARCHS:
        fail(f"--arch must be one of {', '.join(ARCHS)}")
    dataset = load_dataset(DataSpec(source="synthetic"), ARCHS[arch])
    config = RunConfig.from_dict(
        {
            "model": {
                "arch": arch,
                "g_ch": ch,
                "d_ch": ch,
                "z_dim": z_dim,
                "conditional": conditional,
                "channels": dataset.channels,
                "num_classes": dataset.num_classes,
            },
            "train": {
                "steps": steps,
                "batch_size": batch_size,
                "n_dis": n_dis,
                "betas": [0.5, 0.999],
                "lr_decay": "none",
                "seed": seed,
            },
            "eval": {"every": 0},
            "data": {"source": "synthetic"},
            "checkpoint_every": steps,
            "sample_every": max(steps // 5, 1),
            "keep_last": 1,
        }
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    err.print(
        f"training {arch} (width {ch}, {'conditional' if conditional else 'unconditional'}) "
        f"on {len(dataset)} synthetic images for {steps} steps, batch {batch_size}, "
        f"n_dis {n_dis}, on {device}"
    )

    class Printer(TrainerSinks):
        def __init__(self) -> None:
            self.last = 0.0

        def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
            now = time.monotonic()
            if now - self.last < 2.0 and step != steps:
                return
            self.last = now
            sps = metrics.get("steps_per_s") or 0.0
            eta = _fmt_eta((steps - step) / sps) if sps else "-"
            err.print(
                f"step {step}/{steps} loss_d={metrics.get('loss_d', float('nan')):.4f} "
                f"loss_g={metrics.get('loss_g', float('nan')):.4f} {sps:.1f} steps/s eta {eta}"
            )

        def on_sample_grid(self, step: int, path: Path) -> None:
            err.print(f"training samples at step {step}: {path}")

    trainer = Trainer(config, out_dir, sinks=Printer(), device=device, dataset=dataset)
    result = trainer.fit()
    if result.checkpoint is None:
        fail("training ended without a checkpoint")
    netG, cfg = load_generator(result.checkpoint)
    n = 64
    # Two rows of 8 per class, in class order, when the model is conditional.
    labels = [i * cfg.model.num_classes // n for i in range(n)] if conditional else None
    images = generate_images(netG, cfg, n, seed=seed, labels=labels)
    grid_path = out_dir / "grid.png"
    save_png(image_grid(images, nrow=8), str(grid_path))
    err.print(f"checkpoint: {result.checkpoint}")
    out.print(f"sample grid: {grid_path}")


# --------------------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------------------


def _shown_default(default: Any) -> str:
    if default is None:
        return "—"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, Path) and not default.is_absolute():
        return f"`./{default}`"
    if default == "":
        return '`""`'
    return f"`{default}`"


def settings_table() -> str:
    """The Markdown table of every SNGAN_ setting, from the Settings class itself."""
    lines = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        shown = _shown_default(field.default)
        meaning = (field.description or "").replace("|", "\\|")
        meaning = meaning.replace("<", "&lt;").replace(">", "&gt;")
        lines.append(f"| `SNGAN_{name.upper()}` | {shown} | {meaning} |")
    return "\n".join(lines)


README_BEGIN = "<!-- settings-table:begin (generated by `sngan config --readme README.md`) -->"
README_END = "<!-- settings-table:end -->"


def readme_with_settings(text: str) -> str:
    """``text`` with the part between the settings-table markers replaced by the table."""
    try:
        head, rest = text.split(README_BEGIN, 1)
        _, tail = rest.split(README_END, 1)
    except ValueError:
        fail("README has no settings-table markers")
    return f"{head}{README_BEGIN}\n{settings_table()}\n{README_END}{tail}"


@app.command("config")
def config_cmd(
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Print the Markdown table of every setting.")
    ] = False,
    readme: Annotated[
        Path | None,
        typer.Option(help="Rewrite the settings table between the markers of this README."),
    ] = None,
) -> None:
    """Show the effective settings (from SNGAN_ variables and .env)."""
    if markdown:
        print(settings_table())
        return
    if readme is not None:
        readme.write_text(readme_with_settings(readme.read_text()))
        err.print(f"updated the settings table in {readme}")
        return
    settings = get_settings()
    table = Table("setting", "value")
    for name in Settings.model_fields:
        table.add_row(f"SNGAN_{name.upper()}", str(getattr(settings, name)))
    out.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
