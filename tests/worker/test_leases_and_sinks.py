"""The worker's database side against the real database: claims, fencing, batched metric
writes that never duplicate, checkpoint rows, cancellation, and surviving a database outage."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select, text, update

from app.api.services import jobs
from app.core import leases
from app.core.config import Settings
from app.core.leases import Lease, LeaseLost
from app.core.status import JobStatus
from app.core.tables import Checkpoint, Event, Job, Metric
from tests.builders import insert_job
from tests.stacks import Stack, postgres_admin
from worker.sinks import DatabaseSinks


@pytest.fixture
def settings(stack: Stack) -> Settings:
    return stack.settings().model_copy(update={"metrics_flush_every_s": 3600.0})


@pytest.fixture
def leased(stack: Stack, owner: str, settings: Settings) -> Iterator[Lease]:
    """A queued job (no message sent) claimed by this test as its worker."""
    job_id = insert_job(stack, owner, status="queued", steps=50, enqueued_at=datetime.now(UTC))
    with stack.sessions()() as session:
        lease = leases.claim(session, job_id, "test-worker:1", settings.lease_timeout_s)
    assert lease is not None
    yield lease
    with stack.sessions()() as session:  # end it, so the reaper leaves it alone
        session.execute(update(Job).where(Job.id == job_id).values(status=JobStatus.FAILED))
        session.commit()


def metric_rows(stack: Stack, job_id: str) -> list[tuple[str, int, float]]:
    with stack.sessions()() as session:
        rows = session.execute(
            select(Metric.name, Metric.step, Metric.value)
            .where(Metric.job_id == job_id)
            .order_by(Metric.step, Metric.name)
        )
        return [(name, step, value) for name, step, value in rows]


def job_row(stack: Stack, job_id: str) -> Job:
    with stack.sessions()() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def feed(sinks: DatabaseSinks, steps: range, offset: float = 0.0) -> None:
    for step in steps:
        sinks.on_metrics(step, {"loss_d": step + offset, "loss_g": -step - offset})


def test_claim_is_exclusive_and_counts_attempts(
    stack: Stack, owner: str, settings: Settings, leased: Lease
) -> None:
    job = job_row(stack, leased.job_id)
    assert (job.status, job.attempts, job.lease_token, job.lease_owner) == (
        "running",
        1,
        leased.token,
        "test-worker:1",
    )
    with stack.sessions()() as session:  # a duplicate delivery while the lease is fresh
        assert leases.claim(session, leased.job_id, "other:2", settings.lease_timeout_s) is None
        session.execute(
            update(Job)
            .where(Job.id == leased.job_id)
            .values(heartbeat_at=datetime.now(UTC) - timedelta(hours=1))
        )
        session.commit()
        taken = leases.claim(session, leased.job_id, "other:2", settings.lease_timeout_s)
    assert taken is not None and taken.token == leased.token + 1
    assert job_row(stack, leased.job_id).attempts == 2
    with stack.sessions()() as session:
        with pytest.raises(LeaseLost):
            leases.heartbeat(session, leased)  # the first worker is fenced off
        assert leases.heartbeat(session, taken) == "running"
        assert not leases.finish(session, leased, JobStatus.SUCCEEDED)
        assert leases.finish(session, taken, JobStatus.SUCCEEDED)
    assert job_row(stack, leased.job_id).status == "succeeded"


def test_metrics_are_written_in_one_batch_and_never_duplicated(
    stack: Stack, settings: Settings, leased: Lease
) -> None:
    sinks = DatabaseSinks(leased, stack.sessions(), settings, total_steps=50)
    feed(sinks, range(1, 26))
    assert metric_rows(stack, leased.job_id) == []  # buffered: the flush period is an hour

    inserts: list[str] = []
    engine = stack.sessions()().get_bind()

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO METRICS"):
            inserts.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        assert sinks.flush()
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(inserts) == 1
    rows = metric_rows(stack, leased.job_id)
    assert len(rows) == 50
    job = job_row(stack, leased.job_id)
    assert job.step == 25 and job.latest_metrics == {"loss_d": 25.0, "loss_g": -25.0}

    replay = DatabaseSinks(leased, stack.sessions(), settings, total_steps=50)
    feed(replay, range(20, 31), offset=1000.0)  # steps 20..25 again, with other values
    assert replay.flush()
    after = metric_rows(stack, leased.job_id)
    assert len(after) == 60
    assert len({(n, s) for n, s, _ in after}) == 60
    values = {(n, s): v for n, s, v in after}
    assert values[("loss_d", 20)] == 20.0  # the first write of a point stands
    assert values[("loss_d", 30)] == 1030.0


def test_a_stale_worker_writes_nothing(stack: Stack, settings: Settings, leased: Lease) -> None:
    sinks = DatabaseSinks(leased, stack.sessions(), settings, total_steps=50)
    feed(sinks, range(1, 6))
    assert sinks.flush()
    with stack.sessions()() as session:
        session.execute(
            update(Job)
            .where(Job.id == leased.job_id)
            .values(heartbeat_at=datetime.now(UTC) - timedelta(hours=1))
        )
        session.commit()
        assert leases.claim(session, leased.job_id, "new-owner:9", settings.lease_timeout_s)
    feed(sinks, range(6, 11))
    with pytest.raises(LeaseLost):
        sinks.flush()
    with pytest.raises(LeaseLost):
        sinks.should_stop()
    assert len(metric_rows(stack, leased.job_id)) == 10  # steps 1..5 only


def test_checkpoints_are_recorded_and_removed(
    stack: Stack, settings: Settings, leased: Lease, tmp_path: Path
) -> None:
    sinks = DatabaseSinks(leased, stack.sessions(), settings, total_steps=50)
    folder = stack.data_dir / "jobs" / leased.job_id / "checkpoints"
    folder.mkdir(parents=True)
    paths = {}
    for step in (10, 20):
        paths[step] = folder / f"step_{step:08d}.pt"
        paths[step].write_bytes(f"checkpoint {step}".encode())
        digest = hashlib.sha256(paths[step].read_bytes()).hexdigest()
        sinks.on_checkpoint(step, paths[step], digest, paths[step].stat().st_size)
    sinks.on_checkpoint_removed(10, paths[10])
    assert sinks.flush()
    with stack.sessions()() as session:
        rows = session.scalars(select(Checkpoint).where(Checkpoint.job_id == leased.job_id)).all()
        kinds = session.scalars(
            select(Event.type).where(Event.job_id == leased.job_id).order_by(Event.id)
        ).all()
    assert [(r.step, r.path) for r in rows] == [
        (20, f"jobs/{leased.job_id}/checkpoints/step_00000020.pt")
    ]
    assert rows[0].sha256 == hashlib.sha256(b"checkpoint 20").hexdigest()
    assert kinds.count("checkpoint") == 2


def test_cancel_reaches_should_stop(
    stack: Stack, owner: str, settings: Settings, leased: Lease
) -> None:
    sinks = DatabaseSinks(leased, stack.sessions(), settings, total_steps=50)
    feed(sinks, range(1, 3))
    assert sinks.flush() and not sinks.should_stop()
    with stack.sessions()() as session:
        assert jobs.cancel(session, owner, leased.job_id).status == "canceling"
    feed(sinks, range(3, 5))
    assert sinks.flush()
    assert sinks.should_stop()
    with stack.sessions()() as session:
        assert leases.finish(session, leased, JobStatus.CANCELED)
    assert job_row(stack, leased.job_id).status == "canceled"


def test_metrics_survive_a_database_outage(stack: Stack, settings: Settings, leased: Lease) -> None:
    if stack.kind != "services":
        pytest.skip("takes PostgreSQL down for a moment; SQLite has no server to refuse")
    sinks = DatabaseSinks(leased, stack.sessions(), settings, total_steps=50)
    feed(sinks, range(1, 11))
    name = stack.database_url.rsplit("/", 1)[1]
    with postgres_admin() as admin:
        admin.exec_driver_sql(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        admin.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :name AND pid <> pg_backend_pid()"
            ),
            {"name": name},
        )
        try:
            assert sinks.flush() is False  # refused: the points stay buffered
            feed(sinks, range(11, 16))
            assert sinks.flush() is False
        finally:
            admin.exec_driver_sql(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
    assert sinks.flush()
    rows = metric_rows(stack, leased.job_id)
    assert [(n, s) for n, s, _ in rows] == [
        (n, s) for s in range(1, 16) for n in ("loss_d", "loss_g")
    ]
    with stack.sessions()() as session:
        assert session.execute(text("SELECT 1")).scalar() == 1
        total = session.scalar(select(func.count()).select_from(Metric))
    assert total is not None and total >= 30


def test_expired_progress_events_are_pruned_and_the_others_kept(
    stack: Stack, settings: Settings, leased: Lease
) -> None:
    """Two events a second while training: a flush drops the job's progress and metrics
    events older than SNGAN_PROGRESS_EVENTS_KEEP_S (at most once a minute); status, sample
    and checkpoint events stay, and so do recent ones."""
    from app.core.tables import utcnow

    def types() -> list[str]:
        with stack.sessions()() as session:
            rows = session.scalars(
                select(Event.type).where(Event.job_id == leased.job_id).order_by(Event.id)
            )
            return list(rows)

    old = utcnow() - timedelta(seconds=settings.progress_events_keep_s + 60)
    with stack.sessions()() as session:
        for type_ in ("progress", "metrics", "sample", "checkpoint"):
            session.add(Event(job_id=leased.job_id, type=type_, data={"step": 1}, created_at=old))
        session.commit()
    before = types()
    assert before.count("progress") == 1 and before[0] == "status"

    now = [0.0]
    sinks = DatabaseSinks(leased, stack.sessions(), settings, total_steps=50, clock=lambda: now[0])
    feed(sinks, range(1, 3))
    assert sinks.flush()
    assert types() == before + ["progress", "metrics"]  # not a minute yet: nothing pruned

    now[0] = 61.0
    feed(sinks, range(3, 5))
    assert sinks.flush()
    assert types() == [
        "status",  # running, from the claim
        "sample",
        "checkpoint",
        "progress",
        "metrics",
        "progress",
        "metrics",
    ]
