"""How a leased run ends: a cancel answered 202 wins over a run that completes before the
worker sees it (the worker learns of a cancel only at its next flush)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select, update

from app.api.services import jobs
from app.core import leases
from app.core.status import JobStatus
from app.core.tables import Event, Job
from tests.builders import insert_job
from tests.stacks import Stack


def _leased(stack: Stack, owner: str) -> leases.Lease:
    job_id = insert_job(stack, owner, status="queued", steps=50, enqueued_at=datetime.now(UTC))
    with stack.sessions()() as session:
        lease = leases.claim(session, job_id, "test-worker:1", 60.0)
    assert lease is not None
    return lease


def _status_events(stack: Stack, job_id: str) -> list[str]:
    with stack.sessions()() as session:
        rows = session.scalars(
            select(Event.data).where(Event.job_id == job_id, Event.type == "status")
        )
        return [row["status"] for row in rows]


def test_a_run_that_completes_while_a_cancel_is_pending_ends_canceled(
    stack: Stack, owner: str
) -> None:
    lease = _leased(stack, owner)
    with stack.sessions()() as session:  # the API's cancel, answered 202: running -> canceling
        jobs.cancel(session, owner, lease.job_id)
    with stack.sessions()() as session:  # the worker finishes its last step before it learns
        assert leases.finish(session, lease, JobStatus.SUCCEEDED)
    with stack.sessions()() as session:
        job = session.get(Job, lease.job_id)
        assert job is not None
        assert (job.status, job.lease_owner, job.finished_at is not None) == (
            "canceled",
            None,
            True,
        )
    assert _status_events(stack, lease.job_id)[-1] == "canceled"


def test_a_run_without_a_cancel_succeeds_and_a_lost_lease_writes_nothing(
    stack: Stack, owner: str
) -> None:
    lease = _leased(stack, owner)
    with stack.sessions()() as session:
        assert leases.finish(session, lease, JobStatus.SUCCEEDED)
        job = session.get(Job, lease.job_id)
        assert job is not None and job.status == "succeeded"

    stale = _leased(stack, owner)
    with stack.sessions()() as session:  # another worker took the job over: the token moved on
        session.execute(
            update(Job).where(Job.id == stale.job_id).values(lease_token=stale.token + 1)
        )
        session.commit()
    with stack.sessions()() as session:
        assert not leases.finish(session, stale, JobStatus.SUCCEEDED)
        job = session.get(Job, stale.job_id)
        assert job is not None and job.status == "running"
