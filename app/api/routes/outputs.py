"""What a job produces: metrics, the event stream, checkpoints, samples, training grids."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import Future
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import FileResponse
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy.orm import Session
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from app.api import job_answers
from app.api.conditional import NOT_MODIFIED, IfNoneMatch, json_or_not_modified
from app.api.deps import (
    BearerDep,
    Principal,
    PrincipalDep,
    SessionDep,
    authenticate,
    authorized,
    known_principal,
)
from app.api.errors import ApiError, invalid
from app.api.fields import INT32_MAX, INT64_MAX, STEP_MAX
from app.api.routes.generate import Ema, Truncation, class_sheet_labels, is_class_sheet, use_ema
from app.api.schemas import (
    CheckpointPublic,
    CheckpointsPublic,
    MetricPoint,
    MetricsColumns,
    MetricsFormat,
    MetricsPublic,
    TrainingSamplePublic,
    TrainingSamplesPublic,
    error_responses,
)
from app.api.services import jobs, outputs
from app.api.services.event_hub import EventHub, hub_of
from app.core.config import get_settings
from app.core.db import session_scope
from app.core.formats import MEDIA_TYPES, SAMPLE_SUFFIX, SampleFormat
from app.core.tables import Checkpoint as CheckpointRow
from app.core.tables import Job

if TYPE_CHECKING:
    from app.api.services.generation import Announcement, Generated

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/jobs", tags=["outputs"])


@router.get(
    "/{job_id}/metrics",
    response_model=MetricsPublic | MetricsColumns,
    responses={**NOT_MODIFIED, **error_responses(401, 404)},
)
async def job_metrics(
    job_id: str,
    credentials: BearerDep,
    if_none_match: IfNoneMatch = None,
    names: Annotated[
        str | None, Query(description="Comma-separated names, e.g. loss_d,loss_g.")
    ] = None,
    after_step: Annotated[int | None, Query(ge=0, le=STEP_MAX)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000, description="Most steps returned.")] = 1000,
    every: Annotated[
        int | None,
        Query(ge=1, le=STEP_MAX, description="Keep only steps divisible by this (downsampling)."),
    ] = None,
    format: Annotated[
        MetricsFormat,
        Query(
            description="points: a list of {step, name, value, time}; columns: the steps and "
            "a list of values per name (MetricsColumns, no time)."
        ),
    ] = "points",
) -> Response:
    """Metric points in step order; page with ``after_step=next_after_step``; send the ETag
    back in If-None-Match for a 304 while nothing changed."""
    wanted = [n.strip() for n in names.split(",") if n.strip()] if names else None
    columns = format == "columns"

    def read(session: Session, who: Principal) -> MetricsPublic | MetricsColumns:
        job = jobs.get(session, who.owner, job_id)
        rows, next_after = outputs.metrics(
            session, job.id, wanted, after_step, limit, every, with_time=not columns
        )
        if columns:
            return MetricsColumns.from_rows(rows, next_after)
        points = [MetricPoint(step=r.step, name=r.name, value=r.value, time=r.time) for r in rows]
        return MetricsPublic(data=points, next_after_step=next_after)

    # serialized in the thread pool too: a page of 10,000 points is no event-loop time
    return await authorized(
        credentials, lambda session, who: json_or_not_modified(read(session, who), if_none_match)
    )


@router.get(
    "/{job_id}/events",
    response_class=EventSourceResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "Server-Sent Events: status, progress, metrics, sample, checkpoint, "
            "done. Each event's id can be sent back as Last-Event-ID to resume.",
        },
        **error_responses(401, 404, 422),
    },
)
async def job_events(
    job_id: str,
    request: Request,
    credentials: BearerDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    after: Annotated[
        int | None,
        Query(
            ge=0, le=INT64_MAX, description="Like Last-Event-ID, for clients that cannot set it."
        ),
    ] = None,
) -> EventSourceResponse:
    """Follow a job live; the stream ends after the ``done`` event."""
    # Whether the job is the caller's: from the job's kept answer (no database, no thread
    # pool) when this process read it lately for a key it verified lately, else key and job
    # in one trip to the thread pool, no connection kept (a team's dashboards reconnecting
    # at once open hundreds of streams, and every other request waits behind their opening).
    who = known_principal(credentials)
    if who is None or job_answers.fresh(job_id, who.owner) is None:
        await authorized(
            credentials, lambda session, who: job_answers.read(session, who.owner, job_id)
        )
    start = after or 0
    if last_event_id:
        try:
            start = int(last_event_id)
            if not 0 <= start <= INT64_MAX:
                raise ValueError(last_event_id)
        except ValueError:
            raise invalid("Last-Event-ID", "must be an event id (an integer)") from None
    return EventSourceResponse(_follow(hub_of(request.app), job_id, start), ping=15)


async def _follow(hub: EventHub, job_id: str, after_id: int) -> AsyncIterator[ServerSentEvent]:
    """The job's events after `after_id`, then the new ones, from the process's one reader of
    the job (`app.api.services.event_hub`); sse_starlette ends this when the client goes."""
    async for event_id, type_, data in hub.follow(job_id, after_id):
        yield ServerSentEvent(data=data, event=type_, id=str(event_id))


@router.get(
    "/{job_id}/checkpoints", response_model=CheckpointsPublic, responses=error_responses(401, 404)
)
def list_checkpoints(
    job_id: str, principal: PrincipalDep, session: SessionDep
) -> CheckpointsPublic:
    job = jobs.get(session, principal.owner, job_id)
    return CheckpointsPublic(
        data=[
            CheckpointPublic(
                step=c.step, size_bytes=c.size_bytes, sha256=c.sha256, created_at=c.created_at
            )
            for c in outputs.checkpoints(session, job.id)
        ]
    )


@router.get(
    "/{job_id}/checkpoints/{step}",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The checkpoint file"},
        **error_responses(401, 404, 409),
    },
)
def download_checkpoint(
    job_id: str, step: str, principal: PrincipalDep, session: SessionDep
) -> FileResponse:
    """The checkpoint file at ``step`` (or ``latest``, or ``best``: the lowest FID); its
    sha256 is in the X-Checksum-Sha256 header and in the checkpoint list."""
    job = jobs.get(session, principal.owner, job_id)
    row = outputs.checkpoint(session, job.id, step)
    path = outputs.data_path(row.path)
    if not path.is_file():
        raise ApiError(404, "not_found", f"checkpoint {row.step} of job {job_id} was removed")
    return FileResponse(
        path,
        media_type="application/octet-stream",
        filename=f"{job.id}-step_{row.step:08d}.pt",
        headers={"X-Checksum-Sha256": row.sha256, "X-Checkpoint-Step": str(row.step)},
    )


@router.get(
    "/{job_id}/samples",
    response_class=Response,
    responses={
        200: {
            "content": {
                "image/png": {},
                "application/zip": {},
                "application/octet-stream": {},
            },
            "description": "grid/png: a PNG; zip: one PNG per image; npy: uint8 N×H×W×C.",
        },
        **error_responses(401, 404, 409, 413, 422),
    },
)
async def job_samples(
    job_id: str,
    request: Request,
    credentials: BearerDep,
    n: Annotated[int, Query(ge=1, description="Images to generate (capped by the server).")] = 64,
    seed: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    labels: Annotated[
        str | None,
        Query(
            description="Comma-separated class labels: n of them, or one for all; 'all': a "
            "class sheet, n images of each class (one grid row per class)."
        ),
    ] = None,
    checkpoint: Annotated[
        str, Query(description="A step, 'latest', or 'best' (the lowest FID so far).")
    ] = "latest",
    fmt: Annotated[
        SampleFormat,
        Query(alias="format", description="grid (one PNG), png (n=1), zip (PNGs) or npy."),
    ] = "grid",
    ema: Ema = None,
    truncation: Truncation = None,
) -> Response:
    """Generate images now from a checkpoint; the same inputs give byte-identical output.

    Concurrent requests to one generator are batched (SNGAN_BATCHING); the output does not
    depend on the batch a request shared."""
    from app.api.services import generation  # torch is loaded on the first request that needs it

    # announced at once (batches being formed wait for it until it is queued or refused);
    # the key, job, checkpoint and queueing in one trip off the event loop, which each trip
    # costs time at the high rates this route is called at
    with generation.expecting() as announcement:
        job, row, future = await run_in_threadpool(
            _queue_samples,
            credentials,
            job_id,
            n,
            seed,
            labels,
            checkpoint,
            fmt,
            ema,
            announcement,
            truncation,
        )
    started = time.perf_counter()
    try:
        generated = await asyncio.wrap_future(future)
    except ValueError as e:
        raise invalid("labels", str(e).removeprefix("labels: ")) from None
    body = await asyncio.get_running_loop().run_in_executor(
        generation.encoder_pool(),
        generation.encode,
        generated.images,
        fmt,
        n if is_class_sheet(labels) else None,  # a class sheet: one row per class
    )
    telemetry = request.app.state.telemetry
    if generated.leader:  # one observation per call to the generator
        telemetry.generation_batch.observe(generated.batch_images)
    telemetry.generation_seconds.observe(time.perf_counter() - started)
    filename = f"{job.id}-{row.step}-{seed}{SAMPLE_SUFFIX[fmt]}"
    return Response(
        body,
        media_type=MEDIA_TYPES[fmt],
        headers={
            "X-Checkpoint-Step": str(row.step),
            "X-Generation-Batch": str(generated.batch_requests),
            "Content-Disposition": f'inline; filename="{filename}"',
        },
    )


def _queue_samples(
    credentials: HTTPAuthorizationCredentials | None,
    job_id: str,
    n: int,
    seed: int,
    labels: str | None,
    checkpoint: str,
    fmt: str,
    ema: bool | None,
    announcement: Announcement,
    truncation: float | None = None,
) -> tuple[Job, CheckpointRow, Future[Generated]]:
    """401/429, 404, then the request's own limits, then the checkpoint (409s); the request
    queued for its batch (the generator is loaded on a cache miss). No connection is held
    once this returns: generating may take a while."""
    from app.api.services import generation

    with session_scope() as session:
        principal = authenticate(session, credentials)
        job = jobs.get(session, principal.owner, job_id)
        _check_sample_request(n, fmt)  # a class sheet's n x classes: once the classes are known
        wanted = None if is_class_sheet(labels) else _parse_labels(labels, n)
        ema = use_ema(job, ema)
        row = outputs.checkpoint(session, job.id, checkpoint)
    path = outputs.data_path(row.path)
    if not path.is_file():
        raise ApiError(409, "checkpoint_removed", f"checkpoint {row.step} was removed; retry")
    try:
        if is_class_sheet(labels):
            wanted = class_sheet_labels(path, row.sha256, ema, n)
            _check_sample_request(len(wanted), fmt)
        future = generation.submit(
            path,
            row.sha256,
            len(wanted) if wanted else n,
            seed,
            wanted,
            ema,
            announcement,
            truncation,
        )
    except generation.UnusableCheckpoint as e:
        log.error("job %s: checkpoint %d unusable: %s", job.id, row.step, e)
        raise ApiError(
            409, "checkpoint_corrupt", f"checkpoint {row.step} is unusable: {e}"
        ) from None
    except ValueError as e:
        raise invalid("labels", str(e).removeprefix("labels: ")) from None
    return job, row, future


def _check_sample_request(n: int, fmt: str) -> None:
    cap = get_settings().max_samples_per_request
    if n > cap:
        raise ApiError(
            413,
            "too_many_samples",
            f"n: {n} images exceed the cap of {cap} per request (SNGAN_MAX_SAMPLES_PER_REQUEST)",
            details={"field": "n", "limit": cap},
        )
    if fmt == "png" and n != 1:
        raise invalid("n", "format=png returns a single image; send n=1 (or format=grid/zip)")


def _parse_labels(labels: str | None, n: int) -> list[int] | None:
    if labels is None or not labels.strip():
        return None
    try:
        values = [int(v) for v in labels.split(",")]
    except ValueError:
        raise invalid("labels", "must be comma-separated integers, e.g. 3,3,7") from None
    if any(not 0 <= v <= INT32_MAX for v in values):
        raise invalid("labels", f"must lie in [0, {INT32_MAX}] (and below the job's classes)")
    if len(values) == 1:
        values = values * n
    if len(values) != n:
        raise invalid("labels", f"has {len(values)} entries; send n={n} labels or a single one")
    return values


@router.get(
    "/{job_id}/training-samples",
    response_model=TrainingSamplesPublic,
    responses=error_responses(401, 404),
)
def list_training_samples(
    job_id: str, principal: PrincipalDep, session: SessionDep
) -> TrainingSamplesPublic:
    """The fixed-noise grids saved during training."""
    job = jobs.get(session, principal.owner, job_id)
    return TrainingSamplesPublic(
        data=[
            TrainingSamplePublic(
                step=s.step,
                url=f"/v1/jobs/{job.id}/training-samples/{s.step}",
                created_at=s.created_at,
            )
            for s in outputs.training_samples(session, job.id)
        ]
    )


@router.get(
    "/{job_id}/training-samples/{step}",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}}}, **error_responses(401, 404)},
)
def training_sample(
    job_id: str,
    step: Annotated[int, Path(ge=0, le=STEP_MAX)],
    principal: PrincipalDep,
    session: SessionDep,
) -> FileResponse:
    """The fixed-noise grid saved at ``step`` during training."""
    job = jobs.get(session, principal.owner, job_id)
    row = outputs.training_sample(session, job.id, step)
    path = outputs.data_path(row.path)
    if not path.is_file():
        raise ApiError(404, "not_found", f"the grid of step {step} was removed")
    return FileResponse(path, media_type="image/png")
