"""Running one training job: claim its lease, build its config, train, record the outcome.

Imported only inside the task (in the pool's child process), so the worker's parent process
never loads torch or touches CUDA.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from app.core import leases
from app.core.config import Settings, get_settings
from app.core.db import session_factory
from app.core.job_data import DatasetDeleted, job_data
from app.core.leases import Lease, LeaseLost
from app.core.status import JobStatus
from app.core.tables import Checkpoint, Job, Metric, SampleGrid, utcnow
from models import (
    ARCHS,
    CheckpointError,
    DatasetError,
    DivergedError,
    EvaluationUnavailable,
    ImageDataset,
    ModelConfig,
    RunConfig,
    Trainer,
    list_checkpoints,
    load_dataset,
    newest_verified,
)
from worker import shutdown
from worker.sinks import DatabaseSinks, Heartbeat, retry_while_db_down

log = logging.getLogger(__name__)

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def run_claimed(lease: Lease, settings: Settings | None = None) -> None:
    """Train a job whose lease this worker holds, and record how it ended (or hand it back
    if the worker is told to stop meanwhile)."""
    with shutdown.handing_back_on_signals():
        _run_claimed(lease, settings or get_settings())


def _run_claimed(lease: Lease, settings: Settings) -> None:
    sessions = session_factory()
    job_id = lease.job_id
    with sessions() as session:
        total_steps = session.scalars(select(Job.total_steps).where(Job.id == job_id)).one()

    log.info("job %s: training (attempt lease %d, owner %s)", job_id, lease.token, lease.owner)
    sinks = DatabaseSinks(lease, sessions, settings, total_steps)
    try:
        with Heartbeat(lease, sessions, settings, sinks):
            cfg, dataset = build_run_config(sessions, job_id, settings)
            resume_from, resume_step = choose_resume_point(sessions, lease, settings)
            sinks.step = resume_step
            trainer = Trainer(
                cfg,
                settings.job_dir(job_id),
                sinks,
                device=settings.train_device,
                dataset=dataset,
                inception_weights=settings.inception_weights,
            )
            result = trainer.fit(resume_from)
            sinks.flush(final=True)
        if result.stopped and not sinks.cancel_requested and shutdown.requested():
            _hand_back(sessions, lease, result.step)
            return
        status = JobStatus.CANCELED if result.stopped else JobStatus.SUCCEEDED
        log.info("job %s: %s at step %d", job_id, status, result.step)
        _finish(sessions, lease, settings, status)
    except LeaseLost as e:
        log.warning("job %s: lease lost, leaving the job to its new owner (%s)", job_id, e)
    except DivergedError as e:
        _best_effort_flush(sinks)
        losses = ", ".join(f"{k}={v:.4g}" for k, v in e.metrics.items())
        message = (
            f"training diverged at step {e.step}: non-finite losses ({losses}); "
            "the last good checkpoint is kept"
        )
        _finish(sessions, lease, settings, JobStatus.FAILED, "diverged", message)
    except (DatasetError, EvaluationUnavailable) as e:
        code = "dataset_error" if isinstance(e, DatasetError) else "eval_unavailable"
        _finish(sessions, lease, settings, JobStatus.FAILED, code, str(e))
    except OSError as e:
        if e.errno not in _DISK_FULL:
            _internal_error(sessions, lease, settings, sinks, e)
            return
        # the atomic writes removed their temp file; the checkpoints written before are intact
        log.error("job %s: out of disk space: %s", job_id, e)
        _best_effort_flush(sinks)
        message = (
            f"out of disk space at step {sinks.step} writing {e.filename or 'the job directory'} "
            f"({e.strerror}); the previous checkpoints are kept: free space, then resume the job"
        )
        _finish(sessions, lease, settings, JobStatus.FAILED, "disk_full", message)
    except Exception as e:
        _internal_error(sessions, lease, settings, sinks, e)


def _internal_error(
    sessions: sessionmaker[Session],
    lease: Lease,
    settings: Settings,
    sinks: DatabaseSinks,
    error: Exception,
) -> None:
    """A failure the job's spec did not cause: logged with its traceback, and recorded."""
    log.exception("job %s failed", lease.job_id)
    _best_effort_flush(sinks)
    message = f"{type(error).__name__}: {error}"
    _finish(sessions, lease, settings, JobStatus.FAILED, "internal_error", message)


def _hand_back(sessions: sessionmaker[Session], lease: Lease, step: int) -> None:
    """The worker is shutting down: the job, checkpointed at `step`, goes back to the queue.
    Its task is not published from here: a worker winding down may still take messages, and
    one it took would die with it. The API's reaper publishes it within a round."""
    with sessions() as session:
        if leases.requeue(session, lease, f"worker shut down at step {step}"):
            log.info("job %s: handed back at step %d (worker shutting down)", lease.job_id, step)
        else:
            log.warning("job %s: lease lost before handing the job back", lease.job_id)


def build_run_config(
    sessions: sessionmaker[Session], job_id: str, settings: Settings
) -> tuple[RunConfig, ImageDataset]:
    """The job's run spec (its body less `name` and `dataset`) as a `models.RunConfig`, on
    the data the job names, with the model's channels and classes read from that data."""
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        spec = job.run_spec()
        try:
            data, _ = job_data(session, settings, job)
        except DatasetDeleted as e:
            raise DatasetError(str(e)) from None
    # the model config is built once its channels and classes are known (a conditional model
    # without classes does not construct), so the data is read first
    model = dict(spec.get("model") or {})
    dataset = load_dataset(data, ARCHS[model.get("arch") or ModelConfig().arch])
    if model.get("conditional") and dataset.num_classes < 1:
        raise DatasetError("model.conditional needs a labelled dataset; this one has no labels")
    model.update(channels=dataset.channels, num_classes=dataset.num_classes)
    cfg = RunConfig.from_dict({**spec, "model": model})
    return replace(cfg, data=data, keep_last=settings.keep_checkpoints), dataset


def choose_resume_point(
    sessions: sessionmaker[Session], lease: Lease, settings: Settings
) -> tuple[Path | None, int]:
    """The newest checkpoint whose sha256 verifies (older ones tried in turn), and the
    database brought in line with it: rows of bad checkpoints dropped, and metric points and
    grids past it (from a run that was lost) removed, since training replays those steps."""
    job_id = lease.job_id
    with sessions() as session:
        rows = {
            c.step: c
            for c in session.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id))
        }
        stored_up_to = session.scalar(select(func.max(Metric.step)).where(Metric.job_id == job_id))
    on_disk = dict(list_checkpoints(settings.job_dir(job_id) / "checkpoints"))

    def candidates() -> Iterator[tuple[int, Path, str | None]]:
        for step in sorted(set(rows) | set(on_disk), reverse=True):
            row = rows.get(step)
            if row is None and (stored_up_to or 0) < step:
                # written, but the worker died before recording it with the metric points up
                # to its step: resuming there would leave those steps without points
                log.info(
                    "job %s: checkpoint %d was never recorded; not resuming from it", job_id, step
                )
                continue
            if row is None:
                yield step, on_disk[step], None  # its sidecar's sha256
            else:
                yield step, settings.data_dir / row.path, row.sha256

    bad: list[int] = []

    def set_aside(step: int, path: Path, error: CheckpointError) -> None:
        log.warning("job %s: skipping checkpoint %d: %s", job_id, step, error)
        bad.append(step)
        _set_aside(path)

    chosen = newest_verified(candidates(), on_bad=set_aside)
    resume_step = chosen[0] if chosen else 0

    def reconcile(session: Session) -> None:
        if bad:
            session.execute(
                delete(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.step.in_(bad))
            )
        if chosen is not None and chosen[0] not in rows:  # written, but not yet recorded
            sha = chosen[1].with_name(chosen[1].name + ".sha256").read_text().split()[0]
            session.add(
                Checkpoint(
                    job_id=job_id,
                    step=chosen[0],
                    path=str(chosen[1].relative_to(settings.data_dir)),
                    size_bytes=chosen[1].stat().st_size,
                    sha256=sha,
                    created_at=utcnow(),
                )
            )
        session.execute(delete(Metric).where(Metric.job_id == job_id, Metric.step > resume_step))
        session.execute(
            delete(SampleGrid).where(SampleGrid.job_id == job_id, SampleGrid.step > resume_step)
        )
        session.execute(update(Job).where(Job.id == job_id).values(step=resume_step))
        # a best checkpoint past the resume point is gone with its run; the checkpoint resumed
        # from carries the best up to it, and the trainer reports that once loaded
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.best_step > resume_step)
            .values(best_fid=None, best_step=None)
        )

    with sessions() as session:
        leases.fenced(session, lease, reconcile)
    if chosen is not None:
        log.info("job %s: continuing from checkpoint %d", job_id, resume_step)
    return (chosen[1] if chosen else None), resume_step


def _set_aside(path: Path) -> None:
    """Rename a checkpoint that does not verify, so nothing loads it and it can be examined."""
    for p in (path, path.with_name(path.name + ".sha256")):
        if p.exists():
            p.replace(p.with_name(p.name + ".corrupt"))


def _best_effort_flush(sinks: DatabaseSinks) -> None:
    try:
        sinks.flush()
    except Exception as e:  # the outcome matters more than the last few points
        log.warning("job %s: could not write the last metrics: %s", sinks.lease.job_id, e)


def _finish(
    sessions: sessionmaker[Session],
    lease: Lease,
    settings: Settings,
    status: JobStatus,
    code: str | None = None,
    message: str | None = None,
) -> None:
    """Record the outcome, retrying while the database is down (up to the lease timeout: past
    it the reaper re-queues the job and a worker finds its final checkpoint)."""

    def record() -> None:
        with sessions() as session:
            if not leases.finish(session, lease, status, code, message):
                log.warning("job %s: lease lost before recording %s", lease.job_id, status)

    try:
        retry_while_db_down(record, settings.lease_timeout_s, f"job {lease.job_id}: {status}")
    except SQLAlchemyError as e:
        log.error("job %s: could not record %s: %s", lease.job_id, status, e)
        raise
