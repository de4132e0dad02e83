"""Following a job to its end: a live progress bar on a terminal, plain lines in pipes."""

from __future__ import annotations

import time
from typing import Any

import httpx

from app.cli.client import Api, error_message
from app.cli.console import err, fail, out
from app.core.status import FINISHED_STATUSES, JobStatus


def fmt_eta(seconds: float | None) -> str:
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
    line += f" eta {fmt_eta(p.get('eta_s'))}"
    losses = _losses(job)
    return f"{line} {losses}" if losses else line


class JobPoller:
    """GETs one job, sending the ETag of the answer it has in If-None-Match: while the job is
    unchanged the API answers 304 with no body, and the answer it has stands."""

    def __init__(self, api: Api, job_id: str) -> None:
        self.api, self.job_id = api, job_id
        self.job: dict[str, Any] | None = None
        self.etag: str | None = None
        self.not_modified = 0  # 304s received

    def get(self, patience_s: float = 30.0) -> dict[str, Any]:
        """The job now; a server restart is ridden out for up to ``patience_s``."""
        deadline = time.monotonic() + patience_s
        headers = {"If-None-Match": self.etag} if self.etag and self.job else {}
        while True:
            try:
                response = self.api.client.get(f"/v1/jobs/{self.job_id}", headers=headers)
            except httpx.TransportError as exc:
                if time.monotonic() > deadline:
                    fail(f"lost the API at {self.api.url}: {exc}")
                time.sleep(1.0)
                continue
            if response.status_code == 304 and self.job is not None:
                self.not_modified += 1
                return self.job
            if response.is_error:
                fail(error_message(response))
            self.job, self.etag = response.json(), response.headers.get("ETag")
            return self.job


def _final(job: dict[str, Any]) -> int:
    step = (job.get("progress") or {}).get("step")
    if job["status"] == JobStatus.SUCCEEDED:
        err.print(f"job {job['id']} succeeded at step {step}")
        return 0
    error = job.get("error") or {}
    reason = f": {error.get('message')} ({error.get('code')})" if error else ""
    err.print(f"job {job['id']} {job['status']} at step {step}{reason}")
    return 1


def watch_job(api: Api, job_id: str, interval: float) -> int:
    """Poll the job until it is finished; 0 if it succeeded, 1 otherwise."""
    poller = JobPoller(api, job_id)
    job = poller.get()
    if not out.is_terminal:
        # Plain lines, one per change, for logs and pipes.
        last = None
        while True:
            line = _progress_line(job)
            if line != last:
                print(line, flush=True)
                last = line
            if job["status"] in FINISHED_STATUSES:
                return _final(job)
            time.sleep(interval)
            job = poller.get()

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
                eta=fmt_eta(p.get("eta_s")),
                losses=_losses(job),
            )
            if job["status"] in FINISHED_STATUSES:
                break
            time.sleep(interval)
            job = poller.get()
    return _final(job)
