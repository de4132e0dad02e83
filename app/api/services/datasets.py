"""Dataset uploads: streamed to a temp file under a size limit, checked from headers before
anything is decoded, and renamed into ``datasets/<id>/`` only when valid.

What is accepted, and the checks of an archive's headers: app.api.services.archives.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

from python_multipart.multipart import MultipartParser, parse_options_header
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.api.errors import ApiError, invalid, not_found
from app.api.services.archives import inspect_archive, too_large
from app.api.services.jobs import lock_owner
from app.core.config import Settings, get_settings
from app.core.status import ACTIVE_STATUSES
from app.core.tables import Dataset, Job, utcnow

log = logging.getLogger(__name__)

MULTIPART_OVERHEAD = 64 * 1024  # headers and boundaries around the file part


# --- streaming the multipart body ----------------------------------------------------------


# An upload in progress writes its temp file continuously; one untouched this long was left
# by a crashed process (or a client that stalled as long) and is removed.
INCOMING_STALE_S = 3600.0


def sweep_incoming(settings: Settings, older_than_s: float = INCOMING_STALE_S) -> Path:
    """Remove temp uploads under ``datasets/.incoming`` untouched for `older_than_s`; the
    directory. Run by every upload and at startup, so a crash's leftovers do not stay."""
    incoming = settings.datasets_dir / ".incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - older_than_s
    for entry in incoming.iterdir():
        try:
            if entry.is_file() and entry.stat().st_mtime < cutoff:
                entry.unlink()
                log.info("removed a stale temp upload %s", entry.name)
        except FileNotFoundError:  # another process swept it first
            pass
    return incoming


async def receive_upload(
    headers: dict[str, str], body: AsyncIterator[bytes], settings: Settings
) -> tuple[Path, str]:
    """Stream the ``file`` part of a multipart body to a temp file; (path, client filename).

    The size limit applies while streaming, so an oversized upload never lands on disk whole.
    """
    content_type, params = parse_options_header(headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise ApiError(
            415,
            "unsupported_media_type",
            "file: send multipart/form-data with the dataset in a field named 'file'",
        )
    limit = settings.max_upload_bytes
    declared = headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + MULTIPART_OVERHEAD:
        raise too_large(f"upload of {declared} bytes", limit, "max_upload_bytes")

    incoming = sweep_incoming(settings)
    state: dict[str, Any] = {"headers": {}, "field": b"", "value": b"", "out": None, "size": 0}
    found: dict[str, Any] = {}

    def on_part_begin() -> None:
        state["headers"] = {}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["field"].lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_headers_finished() -> None:
        _, disp = parse_options_header(state["headers"].get(b"content-disposition", b""))
        if disp.get(b"name") == b"file" and "path" not in found:
            handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed in on_part_end)
                dir=incoming, delete=False, suffix=".upload"
            )
            state["out"] = handle
            found["path"] = Path(handle.name)
            found["filename"] = disp.get(b"filename", b"").decode("utf-8", "replace")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        out: IO[bytes] | None = state["out"]
        if out is None:
            return
        state["size"] += end - start
        if state["size"] > limit:
            raise too_large("upload", limit, "max_upload_bytes")
        out.write(data[start:end])

    def on_part_end() -> None:
        if state["out"] is not None:
            state["out"].close()
            state["out"] = None

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
        },
    )
    try:
        async for chunk in body:
            parser.write(chunk)
        parser.finalize()
    except ApiError:
        _discard(state, found)
        raise
    except Exception as e:  # a malformed body
        _discard(state, found)
        raise ApiError(400, "bad_request", f"file: malformed multipart body ({e})") from None
    if state["out"] is not None:  # the body ended inside the file part
        _discard(state, found)
        raise ApiError(400, "bad_request", "file: the multipart body ended early")
    if "path" not in found:
        raise invalid("file", "missing: send the dataset in a multipart field named 'file'")
    return found["path"], found["filename"]


def _discard(state: dict[str, Any], found: dict[str, Any]) -> None:
    if state["out"] is not None:
        state["out"].close()
    if "path" in found:
        found["path"].unlink(missing_ok=True)


# --- storing -------------------------------------------------------------------------------


def store(session: Session, owner: str, upload: Path, filename: str) -> Dataset:
    """Validate the uploaded file and move it into place; nothing partial is ever left."""
    settings = get_settings()
    staging: Path | None = None
    try:
        info = inspect_archive(upload, filename, settings)
        dataset_id = uuid.uuid4().hex
        staging = Path(tempfile.mkdtemp(prefix=f".tmp-{dataset_id}-", dir=settings.datasets_dir))
        data_file = staging / f"data.{info.format}"
        shutil.move(upload, data_file)
        size = data_file.stat().st_size
        final = settings.datasets_dir / dataset_id
        os.rename(staging, final)  # atomic: the dataset appears complete or not at all
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        upload.unlink(missing_ok=True)
    try:
        dataset = Dataset(
            id=dataset_id,
            owner=owner,
            filename=(filename or f"data.{info.format}")[:255],
            format=info.format,
            path=str(final.relative_to(settings.data_dir) / data_file.name),
            num_images=info.num_images,
            height=info.height,
            width=info.width,
            channels=info.channels,
            num_classes=info.num_classes,
            size_bytes=size,
            created_at=utcnow(),
        )
        session.add(dataset)
        session.commit()
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)
        raise
    log.info(
        "dataset %s: %d images of %dx%d (%s)",
        dataset_id,
        info.num_images,
        info.height,
        info.width,
        info.format,
    )
    return dataset


def get(session: Session, owner: str, dataset_id: str) -> Dataset:
    dataset = session.get(Dataset, dataset_id)
    if dataset is None or dataset.owner != owner:
        raise not_found("dataset", dataset_id)
    return dataset


def list_(session: Session, owner: str) -> list[Dataset]:
    query = select(Dataset).where(Dataset.owner == owner)
    return list(session.scalars(query.order_by(Dataset.created_at.desc(), Dataset.id.desc())))


def delete_(session: Session, owner: str, dataset_id: str) -> None:
    lock_owner(session, owner)  # job creation takes it too: no job is made on a deleted dataset
    dataset = get(session, owner, dataset_id)
    users = session.scalars(
        select(Job.id).where(Job.dataset_id == dataset_id, Job.status.in_(ACTIVE_STATUSES))
    ).all()
    if users:
        raise ApiError(
            409,
            "dataset_in_use",
            f"dataset {dataset_id} is used by {len(users)} active job(s); cancel them first",
            details={"jobs": list(users)},
        )
    session.delete(dataset)
    session.commit()
    shutil.rmtree(get_settings().datasets_dir / dataset_id, ignore_errors=True)
