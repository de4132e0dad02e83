"""Generation beyond one seed: latent walks between seeds, and the generator exported to run
anywhere (ONNX, torch.export). Samples of one seed are in routes/outputs.py."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.api.deps import BearerDep, authenticate, authorized
from app.api.errors import ApiError, invalid
from app.api.fields import INT32_MAX, INT64_MAX
from app.api.schemas import error_responses
from app.api.services import jobs, outputs
from app.core.config import get_settings
from app.core.db import session_scope
from app.core.formats import (
    EXPORT_MEDIA_TYPES,
    EXPORT_SUFFIX,
    WALK_MEDIA_TYPES,
    ExportFormat,
    WalkFormat,
)
from app.core.tables import Checkpoint as CheckpointRow
from app.core.tables import Job

if TYPE_CHECKING:
    from app.api.services.generation import Announcement, Generated, WalkRequest

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/jobs", tags=["generation"])

MAX_SEEDS = 256  # keyframes of one walk (the frames are capped by the samples cap)
# t >= 0.01: components are drawn again until they fall inside [-t, t], and the smaller t the
# more rounds (about ln(components) / P(|z| < t): ~1,500 at 0.01 for the largest request)
MIN_TRUNCATION = 0.01
Truncation = Annotated[
    float | None,
    Query(
        ge=MIN_TRUNCATION,
        allow_inf_nan=False,
        description="Draw z from the normal truncated to [-t, t], t >= 0.01 (absent: none).",
    ),
]

Ema = Annotated[
    bool | None,
    Query(
        description="The EMA generator: absent = when the job trains one; true = it "
        "(422 for a job trained without EMA); false = the plain generator."
    ),
]


def use_ema(job: Job, ema: bool | None) -> bool:
    """Whether to serve `job`'s EMA generator; asking for one it never trained is a 422
    (it used to fall back to the plain generator without a word)."""
    trained = job.config.get("train", {}).get("ema_decay") is not None
    if ema and not trained:
        raise invalid(
            "ema", "this job trains no EMA generator (train.ema_decay is null); leave ema out"
        )
    return trained if ema is None else ema


@router.get(
    "/{job_id}/interpolations",
    response_class=Response,
    responses={
        200: {
            "content": {
                "image/gif": {},
                "image/webp": {},
                "image/png": {},
                "application/octet-stream": {},
            },
            "description": "gif/webp: an animation (WebP lossless); png: the frames in one row; "
            "npy: uint8 F×H×W×C.",
        },
        **error_responses(401, 404, 409, 413, 422),
    },
)
async def job_interpolations(
    job_id: str,
    request: Request,
    credentials: BearerDep,
    seeds: Annotated[
        str, Query(description="Comma-separated keyframe seeds (at least 2), e.g. 3,17,42.")
    ],
    frames: Annotated[int, Query(ge=1, le=INT32_MAX, description="Frames per segment.")] = 16,
    loop: Annotated[bool, Query(description="Walk back from the last seed to the first.")] = False,
    labels: Annotated[
        str | None,
        Query(description="Conditional jobs: one class for the walk, or one per seed."),
    ] = None,
    truncation: Truncation = None,
    checkpoint: Annotated[str, Query(description="A step, or 'latest'.")] = "latest",
    fmt: Annotated[
        WalkFormat, Query(alias="format", description="gif, webp, png (a strip) or npy.")
    ] = "gif",
    fps: Annotated[float, Query(gt=0, le=100, description="Frames a second (gif/webp).")] = 12.0,
    ema: Ema = None,
) -> Response:
    """A latent walk: z slerped between the seeds' latents (for conditional jobs, the
    class-conditional BN parameters blended between the keyframes' classes). Keyframe i is
    the image ``/samples?n=1&seed=<seeds[i]>`` gives; the same parameters give the same bytes."""
    from app.api.services import generation

    with generation.expecting() as announcement:
        job, row, walk, future = await run_in_threadpool(
            _queue_walk,
            credentials,
            job_id,
            (seeds, frames, loop, labels, truncation),
            checkpoint,
            ema,
            announcement,
        )
    try:
        generated = await asyncio.wrap_future(future)
    except ValueError as e:
        raise invalid("labels", str(e).removeprefix("labels: ")) from None
    body = await asyncio.get_running_loop().run_in_executor(
        generation.encoder_pool(), generation.encode_walk, generated.images, fmt, fps
    )
    if generated.leader:
        request.app.state.telemetry.generation_batch.observe(generated.batch_images)
    suffix = "png" if fmt == "png" else fmt
    filename = f"{job.id}-{row.step}-walk.{suffix}"
    keyframes = [i * walk.frames for i in range(len(walk.seeds))]
    return Response(
        body,
        media_type=WALK_MEDIA_TYPES[fmt],
        headers={
            "X-Checkpoint-Step": str(row.step),
            "X-Walk-Frames": str(len(generated.images)),
            "X-Walk-Keyframes": ",".join(map(str, keyframes)),
            "Content-Disposition": f'inline; filename="{filename}"',
        },
    )


def _queue_walk(
    credentials: HTTPAuthorizationCredentials | None,
    job_id: str,
    params: tuple[str, int, bool, str | None, float | None],
    checkpoint: str,
    ema: bool | None,
    announcement: Announcement,
) -> tuple[Job, CheckpointRow, WalkRequest, Future[Generated]]:
    """401/429, 404, the walk's own checks (422, 413), the checkpoint (409s), then the walk
    queued for its batch, as /samples does (routes/outputs.py)."""
    from app.api.services import generation

    with session_scope() as session:
        principal = authenticate(session, credentials)
        job = jobs.get(session, principal.owner, job_id)
        walk = _parse_walk(*params)
        wants_ema = use_ema(job, ema)
        row = outputs.checkpoint(session, job.id, checkpoint)
    path = _checkpoint_file(row)
    try:
        future = generation.submit_walk(path, row.sha256, walk, wants_ema, announcement)
    except generation.UnusableCheckpoint as e:
        raise _corrupt(job.id, row, e) from None
    except ValueError as e:
        raise invalid("labels", str(e).removeprefix("labels: ")) from None
    return job, row, walk, future


def _parse_walk(
    seeds: str, frames: int, loop: bool, labels: str | None, truncation: float | None
) -> WalkRequest:
    from app.api.services.generation import WalkRequest
    from models.latents import walk_length

    keys = _integers("seeds", seeds, INT64_MAX, "e.g. 3,17,42")
    if len(keys) < 2:
        raise invalid("seeds", "a walk needs at least 2 seeds, e.g. 3,17")
    if len(keys) > MAX_SEEDS:
        raise invalid("seeds", f"at most {MAX_SEEDS} seeds a walk, got {len(keys)}")
    wanted = None
    if labels is not None and labels.strip():
        wanted = _integers("labels", labels, INT32_MAX, "one class, or one per seed")
        if len(wanted) not in (1, len(keys)):
            raise invalid("labels", f"has {len(wanted)} entries; send {len(keys)} or 1")
    cap = get_settings().max_samples_per_request
    total = walk_length(len(keys), frames, loop)
    if total > cap:
        raise ApiError(
            413,
            "too_many_samples",
            f"seeds x frames: this walk has {total} frames, past the cap of {cap} images a "
            "request (SNGAN_MAX_SAMPLES_PER_REQUEST)",
            details={"field": "frames", "limit": cap, "frames": total},
        )
    return WalkRequest(keys, frames, loop, wanted, truncation)


def _integers(field: str, text: str, high: int, example: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise invalid(field, f"must be comma-separated integers, {example}") from None
    if any(not 0 <= v <= high for v in values):
        raise invalid(field, f"must lie in [0, {high}]")
    return values


def _checkpoint_file(row: CheckpointRow) -> Path:
    path = outputs.data_path(row.path)
    if not path.is_file():
        raise ApiError(409, "checkpoint_removed", f"checkpoint {row.step} was removed; retry")
    return path


def _corrupt(job_id: str, row: CheckpointRow, error: Exception) -> ApiError:
    log.error("job %s: checkpoint %d unusable: %s", job_id, row.step, error)
    return ApiError(409, "checkpoint_corrupt", f"checkpoint {row.step} is unusable: {error}")


@router.get(
    "/{job_id}/export",
    response_class=FileResponse,
    responses={
        200: {
            "content": {"application/onnx": {}, "application/zip": {}},
            "description": "The generator alone: inputs z (B, z_dim) float32 and, for "
            "conditional jobs, y (B,) int64; output images (B, C, H, W) in [-1, 1]; metadata "
            "inside the file and in the X-Generator-* headers.",
        },
        **error_responses(401, 404, 409, 422, 501),
    },
)
async def job_export(
    job_id: str,
    credentials: BearerDep,
    fmt: Annotated[
        ExportFormat,
        Query(alias="format", description="onnx, or pt2 (torch.export; TorchScript's successor)."),
    ] = "onnx",
    checkpoint: Annotated[str, Query(description="A step, or 'latest'.")] = "latest",
    ema: Ema = None,
) -> FileResponse:
    """The checkpoint's generator as a standalone file, built on the first request for it
    (ONNX: seconds to a minute) and kept beside the checkpoint."""
    from app.api.services import generation

    job, row = await authorized(
        credentials,
        lambda session, who: _job_checkpoint(session, who.owner, job_id, checkpoint),
    )
    path = _checkpoint_file(row)
    try:
        built, meta = await run_in_threadpool(
            generation.export, path, row.sha256, fmt, use_ema(job, ema)
        )
    except generation.UnusableCheckpoint as e:
        raise _corrupt(job.id, row, e) from None
    except generation.ExportUnavailable as e:
        raise ApiError(501, "export_unavailable", str(e)) from None
    headers = {f"X-Generator-{k.replace('_', '-').title()}": v for k, v in meta.items()}
    headers["X-Checkpoint-Step"] = str(row.step)
    return FileResponse(
        built,
        media_type=EXPORT_MEDIA_TYPES[fmt],
        filename=f"{job.id}-step_{row.step:08d}-G{EXPORT_SUFFIX[fmt]}",
        headers=headers,
    )


def _job_checkpoint(
    session: Session, owner: str, job_id: str, step: str
) -> tuple[Job, CheckpointRow]:
    job = jobs.get(session, owner, job_id)
    return job, outputs.checkpoint(session, job.id, step)


def is_class_sheet(labels: str | None) -> bool:
    """``labels=all`` on /samples: a class sheet."""
    return labels is not None and labels.strip().lower() == "all"


def class_sheet_labels(checkpoint: Path, sha256: str, ema: bool, n: int) -> list[int]:
    """The labels of a class sheet: `n` of each of the generator's classes in order (422 for
    an unconditional generator); the caller caps the sheet's size like any request's n."""
    from app.api.services import generation

    classes = generation.class_count(checkpoint, sha256, ema)
    if not classes:
        raise invalid("labels", "labels=all needs a class-conditional job")
    return [c for c in range(classes) for _ in range(n)]
