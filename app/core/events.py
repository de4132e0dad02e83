"""The per-job event log behind ``GET /v1/jobs/{id}/events``.

The API and the worker append rows in the same transaction as the change they describe; the
stream replays rows after ``Last-Event-ID`` and then follows new ones.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.core import webhooks
from app.core.status import FINISHED_STATUSES, JobStatus
from app.core.tables import Event, utcnow

EVENT_TYPES = ("status", "progress", "metrics", "sample", "checkpoint", "done")
SUPERSEDED_TYPES = ("progress", "metrics")  # each one's latest tells all the earlier ones did


def append(session: Session, job_id: str, type_: str, data: dict[str, Any]) -> None:
    """Add an event to the session; it is written by the caller's commit, with the webhook
    messages it causes (the outbox: no committed event without its messages, nor the reverse)."""
    assert type_ in EVENT_TYPES, type_
    session.add(Event(job_id=job_id, type=type_, data=data, created_at=utcnow()))
    webhooks.on_event(session, job_id, type_, data)


def status_events(
    session: Session, job_id: str, status: JobStatus, error: dict[str, Any] | None
) -> None:
    """A ``status`` event, followed by ``done`` when the status is final."""
    append(session, job_id, "status", {"status": status, "error": error})
    if status in FINISHED_STATUSES:
        append(session, job_id, "done", {"status": status, "error": error})


def after(session: Session, job_id: str, after_id: int, limit: int = 500) -> list[Event]:
    rows = session.scalars(
        select(Event)
        .where(Event.job_id == job_id, Event.id > after_id)
        .order_by(Event.id)
        .limit(limit)
    )
    return list(rows)


def prune_progress(session: Session, job_id: str, keep_s: float) -> int:
    """Delete the job's progress and metrics events older than `keep_s` (two a second while
    it trains); the caller commits. A client resuming from an older Last-Event-ID gets
    every later event, status changes included. Returns how many were deleted."""
    result = session.execute(
        delete(Event).where(
            Event.job_id == job_id,
            Event.type.in_(SUPERSEDED_TYPES),
            Event.created_at < utcnow() - timedelta(seconds=keep_s),
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
