"""Trainer sinks that write to the database, fenced by the job's lease.

Metric points are buffered and written in batches (one multi-row INSERT ... ON CONFLICT DO
NOTHING per flush) together with the job's progress and events, in one transaction that first
re-checks the lease. When the database is unreachable the buffer is kept and the next flush
retries. The periodic flushes run on a short-lived thread of their own, so the training loop
never waits on the database for its metrics; checkpoints and sample grids are recorded before
the trainer goes on.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import delete, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from app.core import events, leases, webhooks
from app.core.config import Settings
from app.core.leases import Lease, LeaseLost, ProgressUpdate
from app.core.status import JobStatus
from app.core.tables import Checkpoint, Job, SampleGrid, utcnow
from models import TrainerSinks
from models.sinks import EMA_SUFFIX, EVALUATION_METRICS
from worker import shutdown

log = logging.getLogger(__name__)
T = TypeVar("T")

Write = Callable[[Session], None]


PRUNE_EVERY_S = 60.0  # how often a flush also drops the job's expired progress events
# what an evaluation reports, for G and the EMA generator: a step that has them is an
# evaluation (a webhook event)
EVALUATED = frozenset(EVALUATION_METRICS) | {name + EMA_SUFFIX for name in EVALUATION_METRICS}


class DatabaseSinks(TrainerSinks):
    def __init__(
        self,
        lease: Lease,
        sessions: sessionmaker[Session],
        settings: Settings,
        total_steps: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lease = lease
        self.sessions = sessions
        self.settings = settings
        self.total_steps = total_steps
        self.clock = clock
        self.step = 0
        self.steps_per_s: float | None = None
        self.latest: dict[str, float] = {}
        self._points: list[dict[str, Any]] = []
        self._writes: list[tuple[Write, tuple[str, dict[str, Any]] | None]] = []
        self._evaluations: list[dict[str, Any]] = []  # webhook events, written with the points
        self._last_flush = clock()
        self._last_prune = clock()
        self._lock = threading.Lock()  # the heartbeat thread reads and sets the flags below
        self._flush_lock = threading.Lock()  # one flush at a time, in buffer order
        self._flusher: threading.Thread | None = None
        self._cancel_requested = False
        self._lost: LeaseLost | None = None

    # --- flags set by the heartbeat -------------------------------------------------------

    def request_cancel(self) -> None:
        with self._lock:
            self._cancel_requested = True

    def lease_lost(self, error: LeaseLost) -> None:
        with self._lock:
            self._lost = error

    def _raise_if_lost(self) -> None:
        with self._lock:
            if self._lost is not None:
                raise self._lost

    # --- TrainerSinks ---------------------------------------------------------------------

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self._raise_if_lost()
        now = utcnow()
        for name, value in metrics.items():
            self._points.append(
                {
                    "job_id": self.lease.job_id,
                    "name": name,
                    "step": step,
                    "value": float(value),
                    "time": now,
                }
            )
        self.latest.update({k: float(v) for k, v in metrics.items() if math.isfinite(v)})
        evaluated = {k: float(v) for k, v in metrics.items() if k in EVALUATED and math.isfinite(v)}
        if evaluated:
            self._evaluations.append({"step": step, "metrics": evaluated})
        self.step = max(self.step, step)
        if "steps_per_s" in metrics and math.isfinite(metrics["steps_per_s"]):
            self.steps_per_s = float(metrics["steps_per_s"])
        if self.clock() - self._last_flush >= self.settings.metrics_flush_every_s:
            self._flush_in_background()

    def on_sample_grid(self, step: int, path: Path) -> None:
        rel = self._relative(path)
        job_id = self.lease.job_id

        def write(session: Session) -> None:
            session.merge(SampleGrid(job_id=job_id, step=step, path=rel, created_at=utcnow()))

        url = f"/v1/jobs/{job_id}/training-samples/{step}"
        self._writes.append((write, ("sample", {"step": step, "url": url})))
        self.flush()

    def on_checkpoint(self, step: int, path: Path, sha256: str, size_bytes: int) -> None:
        rel = self._relative(path)
        job_id = self.lease.job_id

        def write(session: Session) -> None:
            session.merge(
                Checkpoint(
                    job_id=job_id,
                    step=step,
                    path=rel,
                    size_bytes=size_bytes,
                    sha256=sha256,
                    created_at=utcnow(),
                )
            )

        event = {"step": step, "sha256": sha256, "size_bytes": size_bytes}
        self._writes.append((write, ("checkpoint", event)))
        self.flush()

    def on_checkpoint_removed(self, step: int, path: Path) -> None:
        job_id = self.lease.job_id

        def write(session: Session) -> None:
            session.execute(
                delete(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.step == step)
            )

        self._writes.append((write, None))

    def on_best(self, step: int, fid: float) -> None:
        job_id = self.lease.job_id

        def write(session: Session) -> None:
            session.execute(
                update(Job).where(Job.id == job_id).values(best_fid=fid, best_step=step)
            )

        self._writes.append((write, None))
        self.flush()

    @property
    def cancel_requested(self) -> bool:
        with self._lock:
            return self._cancel_requested

    def should_stop(self) -> bool:
        """Canceled, or the worker is shutting down (the job is then handed back)."""
        self._raise_if_lost()
        return self.cancel_requested or shutdown.requested()

    # --- writing --------------------------------------------------------------------------

    def _flush_in_background(self) -> None:
        """Start a flush on its own thread unless one is still running (a write takes
        milliseconds to seconds; a training step should not wait for it)."""
        if self._flusher is not None and self._flusher.is_alive():
            return
        self._last_flush = self.clock()  # due again one period from now, not every step
        self._flusher = threading.Thread(
            target=self._background_flush, name=f"flush-{self.lease.job_id[:8]}", daemon=True
        )
        self._flusher.start()

    def _background_flush(self) -> None:
        try:
            with self._flush_lock:
                if self._points or self._writes:  # else a later flush wrote them meanwhile
                    self._flush(final=False)
        except LeaseLost:
            pass  # recorded: the training thread raises it at its next call
        except Exception:
            log.exception(
                "job %s: metric flush failed; the points stay buffered", self.lease.job_id
            )

    def flush(self, final: bool = False) -> bool:
        """Write what is buffered; False (buffer kept) when the database is unreachable.

        With `final`, retry until `settings.lease_timeout_s` has passed, then raise.
        """
        with self._flush_lock:
            return self._flush(final)

    def _flush(self, final: bool) -> bool:
        try:
            if final:
                what = f"job {self.lease.job_id}: writing {len(self._points)} buffered points"
                retry_while_db_down(
                    self._write_once, self.settings.lease_timeout_s, what, self.clock
                )
            else:
                self._write_once()
            return True
        except LeaseLost as e:
            self.lease_lost(e)
            raise
        except SQLAlchemyError as e:
            if final:
                raise
            log.warning(
                "job %s: database unavailable, keeping %d points buffered: %s",
                self.lease.job_id,
                len(self._points),
                _first_line(e),
            )
            self._last_flush = self.clock()  # try again after the next period
            return False

    def _write_once(self) -> None:
        points = list(self._points)
        writes = list(self._writes)
        evaluations = list(self._evaluations)
        eta = (
            (self.total_steps - self.step) / self.steps_per_s
            if self.steps_per_s and self.steps_per_s > 0
            else None
        )
        update = ProgressUpdate(
            step=self.step,
            steps_per_s=self.steps_per_s,
            eta_s=eta,
            latest_metrics=dict(self.latest),
            metric_rows=points,
        )
        if points:
            update.events.append(
                (
                    "progress",
                    {
                        "step": self.step,
                        "total_steps": self.total_steps,
                        "fraction": round(self.step / self.total_steps, 6),
                        "steps_per_s": self.steps_per_s,
                        "eta_s": eta,
                    },
                )
            )
            update.events.append(("metrics", {"step": self.step, "metrics": dict(self.latest)}))
        prune = self.clock() - self._last_prune >= PRUNE_EVERY_S
        with self.sessions() as session:
            # one transaction: the lease check, progress, metrics, side rows and events
            status = leases.write_progress(session, self.lease, update, commit=False)
            for write, event in writes:
                write(session)
                if event is not None:
                    events.append(session, self.lease.job_id, *event)
            for evaluation in evaluations:  # with its metric points: one transaction
                webhooks.on_event(session, self.lease.job_id, "evaluation", evaluation)
            if prune:
                events.prune_progress(
                    session, self.lease.job_id, self.settings.progress_events_keep_s
                )
            session.commit()
        if prune:
            self._last_prune = self.clock()
        del self._points[: len(points)]
        del self._writes[: len(writes)]
        del self._evaluations[: len(evaluations)]
        self._last_flush = self.clock()
        if status == JobStatus.CANCELING:
            self.request_cancel()

    def _relative(self, path: Path) -> str:
        path = Path(path).resolve()
        try:
            return str(path.relative_to(self.settings.data_dir))
        except ValueError:
            return str(path)


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def retry_while_db_down(
    write: Callable[[], T],
    timeout_s: float,
    what: str,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Call `write` until the database answers: a failure (SQLAlchemyError) is tried again
    after 0.5 s, doubling up to 5 s, until `timeout_s` has passed, and then raised. Workers
    wait up to the lease timeout: past it the reaper re-queues the job, and its next run
    continues from the last checkpoint."""
    deadline = clock() + timeout_s
    delay = 0.5
    while True:
        try:
            return write()
        except SQLAlchemyError as e:
            if clock() > deadline:
                raise
            log.warning(
                "%s: database unavailable, again in %.1f s: %s", what, delay, _first_line(e)
            )
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


class Heartbeat:
    """Renews the lease every `settings.heartbeat_interval_s` from a thread, independently of
    how long a training step takes; tells the sinks about cancellation and a lost lease."""

    def __init__(
        self,
        lease: Lease,
        sessions: sessionmaker[Session],
        settings: Settings,
        sinks: DatabaseSinks,
    ) -> None:
        self.lease = lease
        self.sessions = sessions
        self.interval = settings.heartbeat_interval_s
        self.sinks = sinks
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"heartbeat-{lease.job_id[:8]}", daemon=True
        )

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                with self.sessions() as session:
                    status = leases.heartbeat(session, self.lease)
            except LeaseLost as e:
                log.error("job %s: %s; stopping", self.lease.job_id, e)
                self.sinks.lease_lost(e)
                return
            except SQLAlchemyError as e:
                log.warning("job %s: heartbeat failed: %s", self.lease.job_id, _first_line(e))
                continue
            if status == JobStatus.CANCELING:
                self.sinks.request_cancel()
