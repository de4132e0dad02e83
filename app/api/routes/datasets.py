"""/v1/datasets: upload, list, read, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from app.api.deps import BearerDep, PrincipalDep, SessionDep, authorized
from app.api.errors import invalid
from app.api.schemas import DatasetPublic, DatasetsPublic, error_responses
from app.api.services import datasets, previews
from app.core.config import get_settings

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])
_RESOLUTIONS = ", ".join(map(str, previews.RESOLUTIONS))

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "A .npz with 'images' (N,H,W[,C] uint8) and optional "
                            "'labels' (N ints), or a .zip of PNG/JPEG images (class = "
                            "top-level folder).",
                        }
                    },
                }
            }
        },
    }
}


@router.post(
    "",
    status_code=201,
    response_model=DatasetPublic,
    openapi_extra=_UPLOAD_BODY,
    responses=error_responses(400, 401, 413, 415, 422),
)
async def upload_dataset(
    request: Request, principal: PrincipalDep, session: SessionDep
) -> DatasetPublic:
    """Upload a dataset (multipart field ``file``); it is checked before anything is decoded."""
    settings = get_settings()
    await run_in_threadpool(session.close)  # no connection held while the body streams in
    path, filename = await datasets.receive_upload(
        dict(request.headers), request.stream(), settings
    )
    dataset = await run_in_threadpool(datasets.store, session, principal.owner, path, filename)
    return DatasetPublic.from_row(dataset)


@router.get("", response_model=DatasetsPublic, responses=error_responses(401))
def list_datasets(principal: PrincipalDep, session: SessionDep) -> DatasetsPublic:
    """This key's datasets, newest first."""
    rows = datasets.list_(session, principal.owner)
    return DatasetsPublic(data=[DatasetPublic.from_row(d) for d in rows])


@router.get("/{dataset_id}", response_model=DatasetPublic, responses=error_responses(401, 404))
def get_dataset(dataset_id: str, principal: PrincipalDep, session: SessionDep) -> DatasetPublic:
    return DatasetPublic.from_row(datasets.get(session, principal.owner, dataset_id))


@router.get(
    "/{dataset_id}/preview",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "A grid of n of its images"},
        **error_responses(401, 404, 409, 422),
    },
)
async def dataset_preview(
    dataset_id: str,
    credentials: BearerDep,
    n: Annotated[int, Query(ge=1, le=previews.MAX_IMAGES, description="Images in the grid.")] = 64,
    resolution: Annotated[
        int, Query(description=f"The side a model would see them at: one of {_RESOLUTIONS}.")
    ] = previews.RESOLUTIONS[0],
) -> Response:
    """Images of the dataset as a model trains on them; the same n gives the same bytes."""
    if resolution not in previews.RESOLUTIONS:
        raise invalid("resolution", f"must be one of {_RESOLUTIONS} (a model's resolution)")
    source = await authorized(
        credentials,
        lambda session, who: previews.for_dataset(
            get_settings(), datasets.get(session, who.owner, dataset_id), resolution
        ),
    )
    body = await run_in_threadpool(previews.grid_png, source, n)
    return Response(body, media_type="image/png", headers=previews.HEADERS)


@router.delete(
    "/{dataset_id}",
    status_code=204,
    response_class=Response,
    responses=error_responses(401, 404, 409),
)
def delete_dataset(dataset_id: str, principal: PrincipalDep, session: SessionDep) -> Response:
    """Delete a dataset and its files (409 while an active job uses it)."""
    datasets.delete_(session, principal.owner, dataset_id)
    return Response(status_code=204)
