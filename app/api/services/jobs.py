"""What the job routes do: create (idempotently), list, read, cancel, resume, delete.

Routes stay thin; every state change here is a conditional UPDATE on the job row (the source of
truth), so it cannot race the worker's claim or another request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import shutil
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.api.errors import ApiError, invalid, not_found
from app.api.schemas import JobCreate
from app.api.services.webhooks import check_url as check_webhook_url
from app.core import events, leases, webhooks
from app.core.config import Settings, get_settings
from app.core.queue import enqueue_training
from app.core.status import ACTIVE_STATUSES, FINISHED_STATUSES, RESUMABLE_STATUSES, JobStatus
from app.core.tables import Dataset, Job, utcnow
from models.sources import BUILTIN_LAYOUTS, builtin_candidates, find_builtin


def request_hash(spec: JobCreate) -> str:
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def create(
    session: Session, owner: str, spec: JobCreate, idempotency_key: str | None = None
) -> tuple[Job, bool]:
    """Queue a job; returns (job, created). The same Idempotency-Key and body return the
    existing job, the same key with another body is a 409."""
    settings = get_settings()
    digest = request_hash(spec)
    if idempotency_key is not None:
        existing = _by_idempotency_key(session, owner, idempotency_key, digest)
        if existing is not None:
            return existing, False

    _check_eval(settings, spec)
    if spec.webhook is not None:  # before any lock: this resolves the URL's host
        check_webhook_url("webhook.url", spec.webhook.url)
    # the checks below and the insert hold the owner's lock: N concurrent requests cannot all
    # count the same N-1 active jobs, nor a dataset be deleted between its check and the insert
    lock_owner(session, owner)
    dataset = _check_dataset(session, settings, owner, spec)
    active = session.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.owner == owner, Job.status.in_(ACTIVE_STATUSES))
    )
    if (active or 0) >= settings.max_concurrent_jobs_per_key:
        session.rollback()  # releases the lock
        raise ApiError(
            429,
            "too_many_jobs",
            f"this key already has {active} queued or running jobs; the limit is "
            f"{settings.max_concurrent_jobs_per_key} (SNGAN_MAX_CONCURRENT_JOBS_PER_KEY)",
        )

    job_id = uuid.uuid4().hex
    now = utcnow()
    job = Job(
        id=job_id,
        owner=owner,
        name=spec.name or f"{spec.model.arch}-{spec.dataset.source or 'upload'}-{job_id[:8]}",
        status=JobStatus.QUEUED,
        config=spec.model_dump(mode="json", exclude={"webhook"}),  # a webhook endpoint row
        dataset_id=dataset.id if dataset is not None else None,
        created_at=now,
        updated_at=now,
        total_steps=spec.train.steps,
        latest_metrics={},
        idempotency_key=idempotency_key,
        request_hash=digest,
    )
    session.add(job)
    try:
        session.flush()  # the job row before its first event (events.job_id references it)
        if spec.webhook is not None:  # before the first event, which it may want
            webhooks.subscribe(session, owner, spec.webhook.url, spec.webhook.events, job_id)
        events.status_events(session, job_id, JobStatus.QUEUED, None)
        session.commit()
    except IntegrityError:
        # a concurrent request with the same Idempotency-Key won the insert
        session.rollback()
        if idempotency_key is None:
            raise
        existing = _by_idempotency_key(session, owner, idempotency_key, digest)
        if existing is None:
            raise
        return existing, False
    leases.publish(session, job_id, enqueue_training)
    return job, True


def lock_owner(session: Session, owner: str) -> None:
    """Serialize, until this transaction ends, the check-then-write sequences of one owner
    (job creation against the active-job limit and against dataset deletion).

    PostgreSQL: a transaction-scoped advisory lock keyed by the owner (other owners never
    wait). SQLite: the database's write lock, taken now with BEGIN IMMEDIATE rather than at
    the first INSERT (pysqlite starts its transaction only there, so the counts before it
    would read without any lock); SQLite writes are serialized anyway, so this costs little.
    """
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(owner.encode()).digest()[:8], "big", signed=True)
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
    elif connection.dialect.name == "sqlite":
        raw = connection.connection.dbapi_connection
        if raw is not None and not raw.in_transaction:  # else a write already holds the lock
            connection.exec_driver_sql("BEGIN IMMEDIATE")


def _by_idempotency_key(session: Session, owner: str, key: str, digest: str) -> Job | None:
    job = session.scalar(select(Job).where(Job.owner == owner, Job.idempotency_key == key))
    if job is not None and job.request_hash != digest:
        raise ApiError(
            409,
            "idempotency_conflict",
            "Idempotency-Key was already used with a different request body",
            details={"job_id": job.id},
        )
    return job


def _check_dataset(
    session: Session, settings: Settings, owner: str, spec: JobCreate
) -> Dataset | None:
    ref = spec.dataset
    if ref.id is not None:
        dataset = session.get(Dataset, ref.id)
        if dataset is None or dataset.owner != owner:
            raise invalid("dataset.id", f"no dataset {ref.id!r}", code="dataset_not_found")
        if spec.model.conditional and dataset.num_classes < 1:
            raise invalid(
                "model.conditional",
                f"dataset {dataset.id} has no labels; upload class folders or 'labels'",
            )
        return dataset
    assert ref.source is not None
    if ref.source in BUILTIN_LAYOUTS and find_builtin(ref.source, settings.data_dir) is None:
        looked = builtin_candidates(ref.source, settings.data_dir)
        raise invalid(
            "dataset.source",
            f"{ref.source} files not found; looked for: " + ", ".join(map(str, looked)),
            code="dataset_unavailable",
        )
    return None


def _check_eval(settings: Settings, spec: JobCreate) -> None:
    if spec.eval.every == 0:
        return
    weights = settings.inception_weights
    if weights is None or not Path(weights).is_file():
        where = f" ({weights} does not exist)" if weights is not None else ""
        raise invalid(
            "eval.every",
            "evaluation needs the Inception weights: set SNGAN_INCEPTION_WEIGHTS to the local "
            f"file{where}, or send eval.every = 0",
            code="eval_unavailable",
        )


def get(session: Session, owner: str, job_id: str) -> Job:
    """The job, or a 404 (also for another owner's job, so ids cannot be probed)."""
    job = session.get(Job, job_id)
    if job is None or job.owner != owner:
        raise not_found("job", job_id)
    return job


def encode_cursor(job: Job) -> str:
    raw = f"{job.created_at.isoformat()}|{job.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (created_at, id) a cursor holds; only what encode_cursor makes is accepted (an aware
    time and a hex id), so a forged one is a 422, never a query the database refuses."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at_text, job_id = raw.split("|", 1)
        at = datetime.fromisoformat(at_text)
        if at.tzinfo is None or not job_id.isascii() or not job_id.isalnum() or len(job_id) > 64:
            raise ValueError(raw)
        return at, job_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise invalid("cursor", "malformed cursor; pass next_cursor back unchanged") from None


def list_(
    session: Session, owner: str, status: str | None, limit: int, cursor: str | None
) -> tuple[list[Job], str | None]:
    """A page of jobs, newest first, and the cursor of the next page."""
    query = select(Job).where(Job.owner == owner)
    if status is not None:
        query = query.where(Job.status == status)
    if cursor is not None:
        at, job_id = decode_cursor(cursor)
        query = query.where(or_(Job.created_at < at, (Job.created_at == at) & (Job.id < job_id)))
    rows = list(
        session.scalars(query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1))
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (encode_cursor(rows[-1]) if more and rows else None)


def cancel(session: Session, owner: str, job_id: str) -> Job:
    """Queued jobs end ``canceled`` at once; running ones become ``canceling`` and the worker
    writes a final checkpoint before ending them ``canceled``."""
    for _ in range(5):  # a claim may move the job under us; retry on the new status
        job = get(session, owner, job_id)
        if job.status == JobStatus.CANCELING:
            return job
        if job.status in FINISHED_STATUSES:
            raise ApiError(409, "job_finished", f"job {job_id} is already {job.status}")
        now = utcnow()
        if job.status == JobStatus.QUEUED:
            values: dict[str, Any] = {
                "status": JobStatus.CANCELED,
                "finished_at": now,
                "updated_at": now,
            }
        else:
            values = {"status": JobStatus.CANCELING, "updated_at": now}
        result = session.execute(
            update(Job).where(Job.id == job_id, Job.status == job.status).values(**values)
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            events.status_events(session, job_id, values["status"], None)
            session.commit()
            session.refresh(job)
            return job
        session.rollback()
        session.expire_all()
    raise ApiError(409, "conflict", f"job {job_id} is changing state; try again")


def resume(session: Session, owner: str, job_id: str) -> Job:
    """Queue a failed or canceled job again; it continues from its latest good checkpoint."""
    job = get(session, owner, job_id)
    if job.status not in RESUMABLE_STATUSES:
        raise ApiError(
            409,
            "not_resumable",
            f"job {job_id} is {job.status}; only failed or canceled jobs resume",
        )
    if job.config["dataset"].get("id") and job.dataset_id is None:
        raise ApiError(409, "dataset_deleted", f"the dataset of job {job_id} has been deleted")
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == job.status)
        .values(
            status=JobStatus.QUEUED,
            finished_at=None,
            error_code=None,
            error_message=None,
            lease_owner=None,
            heartbeat_at=None,
            enqueued_at=None,
            updated_at=now,
        )
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        raise ApiError(409, "conflict", f"job {job_id} is changing state; try again")
    events.status_events(session, job_id, JobStatus.QUEUED, None)
    session.commit()
    leases.publish(session, job_id, enqueue_training)
    session.refresh(job)
    return job


def delete_(session: Session, owner: str, job_id: str) -> None:
    """Remove a finished job's rows and files."""
    settings = get_settings()
    job = get(session, owner, job_id)
    if job.status not in FINISHED_STATUSES:
        raise ApiError(409, "job_active", f"job {job_id} is {job.status}; cancel it first")
    result = session.execute(delete(Job).where(Job.id == job_id, Job.status.in_(FINISHED_STATUSES)))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        raise ApiError(409, "conflict", f"job {job_id} is changing state; try again")
    session.commit()
    shutil.rmtree(settings.job_dir(job_id), ignore_errors=True)


def counts_by_status(session: Session) -> dict[str, int]:
    rows = session.execute(select(Job.status, func.count()).group_by(Job.status))
    return {status: int(n) for status, n in rows}
