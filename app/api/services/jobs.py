"""What the job routes do: create (idempotently), list, read, cancel, resume, delete.

Routes stay thin; every state change here is a conditional UPDATE on the job row (the source of
truth), so it cannot race the worker's claim or another request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import shutil
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Row, TextClause, delete, func, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.api.errors import ApiError, invalid, not_found
from app.api.schemas import STEP_MAX, JobCreate
from app.api.services.webhooks import check_url as check_webhook_url
from app.core import events, leases, webhooks
from app.core.config import Settings, get_settings
from app.core.queue import enqueue_training
from app.core.status import ACTIVE_STATUSES, FINISHED_STATUSES, RESUMABLE_STATUSES, JobStatus
from app.core.tables import Checkpoint, Dataset, Job, Metric, SampleGrid, utcnow
from models.checkpoint import CheckpointError, newest_verified, verify_checkpoint_cached
from models.sources import BUILTIN_LAYOUTS, builtin_candidates, find_builtin

log = logging.getLogger(__name__)


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


# --- metrics, checkpoints, training grids ---------------------------------------------------


def metrics(
    session: Session,
    job_id: str,
    names: list[str] | None,
    after_step: int | None,
    limit: int,
    every: int | None,
    *,
    with_time: bool = True,
) -> tuple[Sequence[Row[*tuple[Any, ...]]], int | None]:
    """Points of up to `limit` steps after `after_step`, every `every`-th step when given: rows
    of (step, name, value, time), or of (step, name, value) without `with_time`."""
    cond = [Metric.job_id == job_id]
    if after_step is not None:
        cond.append(Metric.step > after_step)
    of_names = [Metric.name.in_(names)] if names else []
    # Plain columns, not ORM objects; the time only when asked for (on SQLite each is a
    # string parsed into a datetime).
    columns = [Metric.step, Metric.name, Metric.value, *([Metric.time] if with_time else [])]

    def points(steps: Sequence[int]) -> list[Row[*tuple[Any, ...]]]:
        # by the steps alone: with `step > after_step` beside them SQLite scans the (job,
        # step) index from there to the run's end (a zoom into the first half of 1,000,000
        # steps read millions of entries) instead of looking each step up
        query = select(*columns).where(Metric.job_id == job_id, *of_names, _step_in(steps))
        return list(session.execute(query.order_by(Metric.step, Metric.name)))

    if every is not None and every > 1:
        # Read the points of the next limit + 1 multiples of `every` through the (job, step)
        # index first: on a run logged every step that is the whole page (1,000 look-ups for
        # 1,000 steps, whatever the run's length), where filtering `step % every` would scan
        # `every` times as many index entries. Only what that window misses (a series logged
        # sparsely) is found by a scan, from the window's end on.
        first = 0 if after_step is None else (after_step // every + 1) * every
        # The window ends at the job's last step (one look at the index's end): a page asked
        # with limit=10000 of a run that has 1,000 such steps looks up 1,000, not 10,001. A
        # step is a 32-bit column, so the window and the scan after it ask the database
        # nothing it cannot hold, whatever `every` and `after_step` are.
        last = session.scalar(select(func.max(Metric.step)).where(Metric.job_id == job_id))
        if last is None:
            return [], None
        stop = min(first + every * (limit + 1), last + 1)
        window = range(first, stop, every)
        rows = points(window) if window else []
        steps = list(dict.fromkeys(row[0] for row in rows))  # those that have a point
        cond.append(Metric.step % every == 0)
        if len(steps) <= limit and stop <= last:
            rest = _first_steps(
                session, [*cond, Metric.step >= stop], names, limit + 1 - len(steps)
            )
            if rest[: limit - len(steps)]:
                rows += points(rest[: limit - len(steps)])
            steps += rest
    else:
        steps = _first_steps(session, cond, names, limit + 1)
        rows = points(steps[:limit]) if steps else []
    if len(steps) <= limit:
        return rows, None
    end = steps[limit - 1]  # one step more was found: the next page starts after this one
    return [row for row in rows if row[0] <= end], end


# Up to this many names are looked up one by one (see _first_steps); more, all at once.
_NAMES_ONE_BY_ONE = 16


def _first_steps(
    session: Session, cond: list[Any], names: list[str] | None, limit: int
) -> list[int]:
    """The first `limit` steps where `cond` holds, with a point of one of `names` when given.
    A few names are looked up one by one in the (job, name, step) key: filtered on the (job,
    step) index, a series logged sparsely (the evaluations) read every point of the job on
    the way (0.4 s for none at all on a run of 200,000 steps)."""
    if not names:
        return _distinct_steps(session, cond, limit)
    if len(set(names)) > _NAMES_ONE_BY_ONE:
        return _distinct_steps(session, [*cond, Metric.name.in_(names)], limit)
    found: set[int] = set()
    for name in set(names):
        found.update(_distinct_steps(session, [*cond, Metric.name == name], limit))
    return sorted(found)[:limit]


def _distinct_steps(session: Session, cond: list[Any], limit: int) -> list[int]:
    query = select(Metric.step).where(*cond).distinct().order_by(Metric.step).limit(limit)
    return list(session.scalars(query))


def _step_in(steps: Sequence[int]) -> TextClause:
    """``step IN (...)`` with the steps written into the SQL: as a thousand bound parameters
    (or SQLAlchemy's literal rendering) they cost more to process than the index look-ups
    they select. They are ints: nothing to escape."""
    return text(f"{Metric.__tablename__}.step IN ({','.join(str(int(s)) for s in steps)})")


def checkpoints(session: Session, job_id: str) -> list[Checkpoint]:
    return list(
        session.scalars(
            select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step)
        )
    )


def checkpoint(session: Session, job_id: str, step: str) -> Checkpoint:
    """The checkpoint at `step` (an integer, ``latest`` or ``best``), or 404 / 409."""
    if step == "best":
        job = session.get(Job, job_id)
        if job is None or job.best_step is None:
            raise ApiError(
                409, "no_best_checkpoint", f"job {job_id} has no best checkpoint: FID not evaluated"
            )
        step = str(job.best_step)
    if step == "latest":
        rows = session.scalars(
            select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step.desc())
        ).all()
        if not rows:
            raise ApiError(409, "no_checkpoint", f"job {job_id} has no checkpoint yet")

        # A truncated or corrupted newest file (a crash mid-copy, a bad disk) falls back to
        # the newest one whose sha256 still matches its row.
        def fails(step: int, path: Path, error: CheckpointError) -> None:
            log.error("job %s: checkpoint %d fails its sha256; trying an older one", job_id, step)

        candidates = ((row.step, data_path(row.path), row.sha256) for row in rows)
        found = newest_verified(candidates, verify_checkpoint_cached, fails)
        if found is None:
            return rows[0]  # none verifies: the caller reports the newest as unusable
        return next(row for row in rows if row.step == found[0])
    try:
        number = int(step)
        if not 0 <= number <= STEP_MAX:
            raise ValueError(step)
    except ValueError:
        shown = step if len(step) <= 40 else step[:40] + "…"
        raise invalid(
            "checkpoint", f"expected a step (an integer >= 0), 'latest' or 'best', got {shown!r}"
        ) from None
    row = session.get(Checkpoint, (job_id, number))
    if row is None:
        raise not_found("checkpoint", f"{number} of job {job_id}")
    return row


def training_samples(session: Session, job_id: str) -> list[SampleGrid]:
    return list(
        session.scalars(
            select(SampleGrid).where(SampleGrid.job_id == job_id).order_by(SampleGrid.step)
        )
    )


def training_sample(session: Session, job_id: str, step: int) -> SampleGrid:
    row = session.get(SampleGrid, (job_id, step))
    if row is None:
        raise not_found("training sample", f"at step {step} of job {job_id}")
    return row


def data_path(relative: str) -> Path:
    """A stored path (relative to the data directory) as an absolute path."""
    return get_settings().data_dir / relative


def counts_by_status(session: Session) -> dict[str, int]:
    rows = session.execute(select(Job.status, func.count()).group_by(Job.status))
    return {status: int(n) for status, n in rows}
