"""Job leases: one worker owns a running job; stale owners are fenced off and reaped.

A claim moves a job ``queued`` -> ``running`` and increments ``lease_token``. Every later write
by that worker is an UPDATE conditioned on the token it claimed with, so a worker that lost its
lease (its heartbeat went stale and the reaper re-queued the job, or another worker claimed it)
finds no row to update and stops with `LeaseLost` instead of overwriting the new owner's state.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Dialect, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from app.core import events
from app.core.config import Settings
from app.core.status import LEASED_STATUSES, JobStatus
from app.core.tables import Job, Metric, utcnow

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """This worker no longer owns the job; it must stop writing."""


@dataclass(frozen=True)
class Lease:
    job_id: str
    token: int
    owner: str


def worker_name() -> str:
    """This process as a lease owner: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def worth_running(session: Session, job_id: str, lease_timeout_s: float) -> bool:
    """Whether a message for `job_id` could lead `claim` anywhere: the job is queued, or
    leased (running or canceling) under a stale heartbeat. A read only, for the worker to drop
    stale messages (a cancel, a resume or a duplicate left them behind) before they cost
    anything."""
    job = session.get(Job, job_id)
    if job is None or job.status == JobStatus.QUEUED:
        return job is not None
    stale = job.heartbeat_at is None or job.heartbeat_at < utcnow() - timedelta(
        seconds=lease_timeout_s
    )
    return job.status in (JobStatus.RUNNING, JobStatus.CANCELING) and stale


def claim(session: Session, job_id: str, worker: str, lease_timeout_s: float) -> Lease | None:
    """Take the job if it is queued (or running under a stale lease); None if it is not ours
    to run: finished, canceled, missing, or leased by a live worker (a duplicate delivery)."""
    job = session.get(Job, job_id)
    if job is None:
        log.warning("job %s does not exist; dropping the message", job_id)
        return None
    now = utcnow()
    stale = job.heartbeat_at is None or job.heartbeat_at < now - timedelta(seconds=lease_timeout_s)
    if job.status == JobStatus.CANCELING and stale:
        finish(session, Lease(job_id, job.lease_token, job.lease_owner or ""), JobStatus.CANCELED)
        return None
    if not (job.status == JobStatus.QUEUED or (job.status == JobStatus.RUNNING and stale)):
        log.info("job %s is %s (lease %s); not claiming", job_id, job.status, job.lease_owner)
        return None
    token = job.lease_token + 1
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == job.status, Job.lease_token == job.lease_token)
        .values(
            status=JobStatus.RUNNING,
            lease_owner=worker,
            lease_token=token,
            heartbeat_at=now,
            attempts=Job.attempts + 1,
            started_at=func.coalesce(Job.started_at, now),
            updated_at=now,
        )
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        return None  # another worker claimed it first
    events.status_events(session, job_id, JobStatus.RUNNING, None)
    session.commit()
    return Lease(job_id, token, worker)


def _fence(session: Session, lease: Lease, **values: Any) -> JobStatus:
    """UPDATE the leased row (taking its row lock until commit); the job's status, or
    `LeaseLost` when the token no longer matches."""
    result = session.execute(
        update(Job)
        .where(
            Job.id == lease.job_id,
            Job.lease_token == lease.token,
            Job.status.in_(LEASED_STATUSES),
        )
        .values(heartbeat_at=utcnow(), **values)
        .returning(Job.status)
    )
    status = result.scalar_one_or_none()
    if status is None:
        session.rollback()
        raise LeaseLost(f"job {lease.job_id}: lease {lease.token} of {lease.owner} is gone")
    return JobStatus(status)


def heartbeat(session: Session, lease: Lease) -> JobStatus:
    """Renew the lease; returns the job's status (``canceling`` asks the worker to stop)."""
    status = _fence(session, lease)
    session.commit()
    return status


_INSERT_CHUNK = 1000  # rows per statement, under every backend's bound-parameter limit


def insert_metrics(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """One INSERT of many points; a (job_id, name, step) already stored is left as it is."""
    dialect: Dialect = session.get_bind().dialect
    insert: Any = postgresql.insert if dialect.name == "postgresql" else sqlite.insert
    for start in range(0, len(rows), _INSERT_CHUNK):
        chunk = list(rows[start : start + _INSERT_CHUNK])
        session.execute(insert(Metric).values(chunk).on_conflict_do_nothing())


@dataclass
class ProgressUpdate:
    step: int
    steps_per_s: float | None
    eta_s: float | None
    latest_metrics: dict[str, float]
    metric_rows: list[dict[str, Any]] = field(default_factory=list)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def write_progress(
    session: Session, lease: Lease, update_: ProgressUpdate, commit: bool = True
) -> JobStatus:
    """Progress, a batch of metric points and events in one fenced transaction (left open
    for the caller to add to when `commit` is false)."""
    status = _fence(
        session,
        lease,
        step=update_.step,
        steps_per_s=update_.steps_per_s,
        eta_s=update_.eta_s,
        latest_metrics=update_.latest_metrics,
        updated_at=utcnow(),
    )
    insert_metrics(session, update_.metric_rows)
    for type_, data in update_.events:
        events.append(session, lease.job_id, type_, data)
    if commit:
        session.commit()
    return status


def fenced(session: Session, lease: Lease, write: Callable[[Session], None]) -> None:
    """Run `write` in a transaction that holds the lease (checkpoint and grid rows)."""
    _fence(session, lease)
    write(session)
    session.commit()


def finish(
    session: Session,
    lease: Lease,
    status: JobStatus,
    error_code: str | None = None,
    error_message: str | None = None,
) -> bool:
    """End the leased run with a final status; False when the lease was lost meanwhile.

    A run that completes while a cancel is pending ends `canceled`, not `succeeded`: the
    cancel was answered 202 before the worker saw it (it learns of it at its next flush),
    and the user was told the job would stop (its checkpoints are kept either way)."""
    endings: list[tuple[JobStatus, tuple[JobStatus, ...]]]
    if status == JobStatus.CANCELED:
        endings = [(status, (JobStatus.CANCELING,))]
    elif status == JobStatus.SUCCEEDED:
        endings = [(status, (JobStatus.RUNNING,)), (JobStatus.CANCELED, (JobStatus.CANCELING,))]
    else:
        endings = [(status, LEASED_STATUSES)]
    for final, allowed in endings:
        now = utcnow()
        result = session.execute(
            update(Job)
            .where(Job.id == lease.job_id, Job.lease_token == lease.token, Job.status.in_(allowed))
            .values(
                status=final,
                finished_at=now,
                updated_at=now,
                lease_owner=None,
                heartbeat_at=None,
                eta_s=0.0 if final == JobStatus.SUCCEEDED else None,
                error_code=error_code,
                error_message=error_message,
            )
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            error = {"code": error_code, "message": error_message} if error_code else None
            events.status_events(session, lease.job_id, final, error)
            session.commit()
            return True
    session.rollback()
    return False


def requeue(session: Session, lease: Lease, reason: str) -> bool:
    """Put a running job back in the queue (its worker is shutting down, or its lease
    expired), fencing the old lease off at once; False when the lease was lost or the job
    is being canceled meanwhile. The reaper publishes its task (enqueued_at is cleared)."""
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(
            Job.id == lease.job_id, Job.lease_token == lease.token, Job.status == JobStatus.RUNNING
        )
        .values(
            status=JobStatus.QUEUED,
            lease_owner=None,
            lease_token=Job.lease_token + 1,
            heartbeat_at=None,
            enqueued_at=None,
            updated_at=now,
        )
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        return False
    events.append(
        session,
        lease.job_id,
        "status",
        {"status": JobStatus.QUEUED, "error": None, "reason": reason},
    )
    session.commit()
    return True


@dataclass
class ReapReport:
    requeued: list[str] = field(default_factory=list)
    canceled: list[str] = field(default_factory=list)
    enqueued: list[str] = field(default_factory=list)


def reap(
    sessions: sessionmaker[Session], settings: Settings, enqueue: Callable[[str], bool]
) -> ReapReport:
    """Re-queue running jobs whose heartbeat is older than the lease timeout, end canceling
    ones whose worker is gone, and enqueue again queued jobs whose message may be lost."""
    report = ReapReport()
    now = utcnow()
    stale = now - timedelta(seconds=settings.lease_timeout_s)
    with sessions() as session:
        stale_jobs = session.scalars(
            select(Job).where(
                Job.status.in_(LEASED_STATUSES),
                or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < stale),
            )
        ).all()
        for job in stale_jobs:
            lease = Lease(job.id, job.lease_token, job.lease_owner or "")
            if job.status == JobStatus.CANCELING:
                if finish(session, lease, JobStatus.CANCELED):
                    report.canceled.append(job.id)
                continue
            if requeue(session, lease, "lease expired"):
                log.warning(
                    "job %s: heartbeat older than %.0fs; re-queued",
                    job.id,
                    settings.lease_timeout_s,
                )
                report.requeued.append(job.id)

        lost = now - timedelta(seconds=settings.requeue_queued_after_s)
        queued = session.scalars(
            select(Job.id).where(
                Job.status == JobStatus.QUEUED,
                or_(Job.enqueued_at.is_(None), Job.enqueued_at < lost),
            )
        ).all()
        for job_id in queued:
            if publish(session, job_id, enqueue):
                report.enqueued.append(job_id)
    return report


def publish(session: Session, job_id: str, enqueue: Callable[[str], bool]) -> bool:
    """Publish a queued job's task and record when (``enqueued_at``), so the reaper does not
    publish it again before ``requeue_queued_after_s``; False (nothing recorded) when the
    broker is unreachable: the reaper then publishes it on a later round."""
    if not enqueue(job_id):
        return False
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
        .values(enqueued_at=utcnow())
    )
    session.commit()
    return True
