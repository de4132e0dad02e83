"""What a job produced, as the routes read it: its metric points (a page, or every `every`-th
step of a long run), its checkpoints (``latest`` and ``best`` resolved, each verified), its
training grids, and where a stored file lies."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Row, TextClause, func, select, text
from sqlalchemy.orm import Session

from app.api.errors import ApiError, invalid, not_found
from app.api.fields import STEP_MAX
from app.core.config import get_settings
from app.core.tables import Checkpoint, Job, Metric, SampleGrid
from models.checkpoint import CheckpointError, newest_verified, verify_checkpoint_cached

log = logging.getLogger(__name__)


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
