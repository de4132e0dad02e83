"""/v1/jobs: create (idempotently), list, read, cancel, resume, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.api import job_answers
from app.api.conditional import NOT_MODIFIED, IfNoneMatch
from app.api.deps import (
    BearerDep,
    Principal,
    PrincipalDep,
    SessionDep,
    authorized,
    known_principal,
)
from app.api.schemas import JobCreate, JobPublic, JobsPublic, error_responses
from app.api.services import jobs, previews
from app.core.config import get_settings
from app.core.status import JobStatus

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.post(
    "",
    status_code=201,
    response_model=JobPublic,
    responses={
        200: {"model": JobPublic, "description": "An earlier request with this Idempotency-Key"},
        **error_responses(400, 401, 409, 422, 429),
    },
)
def create_job(
    job_in: JobCreate,
    principal: PrincipalDep,
    session: SessionDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            max_length=255,
            description="Repeat a request safely: the same key and body return the same job.",
        ),
    ] = None,
) -> JSONResponse:
    """Queue a training job."""
    job, created = jobs.create(session, principal.owner, job_in, idempotency_key)
    body = JobPublic.from_row(job).model_dump(mode="json")
    return JSONResponse(
        body, status_code=201 if created else 200, headers={"Location": f"/v1/jobs/{job.id}"}
    )


@router.get("", response_model=JobsPublic, responses=error_responses(401, 422))
def list_jobs(
    principal: PrincipalDep,
    session: SessionDep,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> JobsPublic:
    """This key's jobs, newest first; pass ``next_cursor`` back for the next page."""
    rows, next_cursor = jobs.list_(session, principal.owner, status, limit, cursor)
    return JobsPublic(data=[JobPublic.from_row(j) for j in rows], next_cursor=next_cursor)


@router.get(
    "/{job_id}",
    response_model=JobPublic,
    responses={**NOT_MODIFIED, **error_responses(401, 404)},
)
async def get_job(
    job_id: str, credentials: BearerDep, if_none_match: IfNoneMatch = None
) -> Response:
    """The job's status, progress and latest losses: cheap enough to poll every second; send
    the ETag back in If-None-Match for a 304 while nothing changed. At most SNGAN_JOB_CACHE_S
    behind the worker."""
    who = known_principal(credentials)
    if who is not None and (answer := job_answers.fresh(job_id, who.owner)) is not None:
        return answer.response(if_none_match)

    def read(session: Session, who: Principal) -> Response:
        return job_answers.read(session, who.owner, job_id).response(if_none_match)

    return await authorized(credentials, read)


@router.post(
    "/{job_id}/cancel",
    status_code=202,
    response_model=JobPublic,
    responses=error_responses(401, 404, 409),
)
def cancel_job(job_id: str, principal: PrincipalDep, session: SessionDep) -> JobPublic:
    """Stop a job: the worker writes a final checkpoint and the job ends ``canceled``."""
    job = JobPublic.from_row(jobs.cancel(session, principal.owner, job_id))
    job_answers.drop(job_id)
    return job


@router.post(
    "/{job_id}/resume",
    status_code=202,
    response_model=JobPublic,
    responses=error_responses(401, 404, 409),
)
def resume_job(job_id: str, principal: PrincipalDep, session: SessionDep) -> JobPublic:
    """Continue a failed or canceled job from its latest good checkpoint (same id)."""
    job = JobPublic.from_row(jobs.resume(session, principal.owner, job_id))
    job_answers.drop(job_id)
    return job


@router.delete(
    "/{job_id}", status_code=204, response_class=Response, responses=error_responses(401, 404, 409)
)
def delete_job(job_id: str, principal: PrincipalDep, session: SessionDep) -> Response:
    """Remove a finished job's rows and files."""
    jobs.delete_(session, principal.owner, job_id)
    job_answers.drop(job_id)
    return Response(status_code=204)


@router.get(
    "/{job_id}/dataset-preview",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "A grid of n training images"},
        **error_responses(401, 404, 409, 422),
    },
)
async def job_dataset_preview(
    job_id: str,
    credentials: BearerDep,
    n: Annotated[int, Query(ge=1, le=previews.MAX_IMAGES, description="Images in the grid.")] = 64,
) -> Response:
    """Real images of the job's dataset at its model's resolution, to set beside its samples;
    the same n gives the same bytes."""
    source = await authorized(
        credentials,
        lambda session, who: previews.for_job(
            session, get_settings(), jobs.get(session, who.owner, job_id)
        ),
    )
    body = await run_in_threadpool(previews.grid_png, source, n)
    return Response(body, media_type="image/png", headers=previews.HEADERS)
