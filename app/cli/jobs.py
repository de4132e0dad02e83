"""`sngan jobs`: submit, list, show, cancel and watch training jobs over HTTP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from app.cli.client import DEFAULT_URL, Api, JsonOpt, KeyOpt, UrlOpt, id_column, when
from app.cli.console import err, fail, out, print_json
from app.cli.spec_flags import with_spec_flags
from app.cli.watch import watch_job

jobs_app = typer.Typer(help="Submit, list, watch and cancel training jobs.", no_args_is_help=True)


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
@with_spec_flags
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
    idempotency_key: Annotated[
        str | None, typer.Option(help="Same key and body return the same job.")
    ] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Then watch it to the end.")] = False,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = None,
    as_json: JsonOpt = False,
    spec: dict[str, Any] | None = None,  # the job spec's flags (spec_flags), by dotted path
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
    for dotted, value in {"name": name, **(spec or {})}.items():
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
        raise typer.Exit(watch_job(api, job["id"], interval=1.0))


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
    table = Table(id_column(), "name", "status", "step", "created")
    for job in body["data"]:
        p = job.get("progress") or {}
        table.add_row(
            job["id"],
            job.get("name") or "",
            job["status"],
            f"{p.get('step', 0)}/{p.get('total_steps', '?')}",
            when(job["created_at"]),
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


@jobs_app.command("watch")
def jobs_watch(
    job_id: str,
    interval: Annotated[float, typer.Option(help="Seconds between polls.")] = 1.0,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = None,
) -> None:
    """Follow a job to its end; exit 0 if it succeeded, 1 otherwise."""
    raise typer.Exit(watch_job(Api(url, key), job_id, interval))
