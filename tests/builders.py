"""Data for the tests: tiny job bodies, images and archives made on the fly, and rows written
straight to a stack's database for states the API cannot be asked to produce."""

from __future__ import annotations

import io
import uuid
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

# Small enough to train a few dozen steps a second on one CPU core.
TINY_MODEL = {"arch": "cnn32", "z_dim": 16, "g_ch": 8, "d_ch": 8}
TINY_TRAIN = {"batch_size": 4, "n_dis": 1}
METRIC_NAMES = ("loss_d", "loss_g", "d_real", "d_fake", "lr", "steps_per_s")


def tiny_job(dataset: dict[str, Any], steps: int = 30, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "dataset": dataset,
        "model": dict(TINY_MODEL),
        "train": {**TINY_TRAIN, "steps": steps},
        "checkpoint_every": 10,
        "sample_every": 10,
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(body.get(key), dict):
            body[key] = {**body[key], **value}
        else:
            body[key] = value
    return body


def shapes(
    n: int, size: int = 32, channels: int = 3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, size, size, C) images of bright squares on noise, and labels 0..3."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, (n, size, size, channels), dtype=np.uint8)
    labels = rng.integers(0, 4, n)
    for i, label in enumerate(labels):
        top, left = rng.integers(0, size // 2, 2)
        side = size // 4 + int(label) * 2
        images[i, top : top + side, left : left + side] = 200 + 10 * int(label)
    return images, labels.astype(np.int64)


def npz_bytes(images: np.ndarray, labels: np.ndarray | None = None, **arrays: Any) -> bytes:
    buf = io.BytesIO()
    if labels is not None:
        arrays["labels"] = labels
    np.savez(buf, images=images, **arrays)
    return buf.getvalue()


def png_bytes(width: int, height: int, mode: str = "RGB", value: int = 128) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    colour: Any = value if mode == "L" else (value,) * len(mode)
    Image.new(mode, (width, height), colour).save(buf, format="PNG")
    return buf.getvalue()


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


class Database(Protocol):
    """Where rows are written: a stack (tests.stacks.Stack) or anything like it."""

    data_dir: Path

    def sessions(self) -> sessionmaker[Session]: ...


def insert_job(
    stack: Database,
    owner: str,
    status: str = "failed",
    steps: int = 20,
    spec: dict[str, Any] | None = None,
    **values: Any,
) -> str:
    """A job row written straight to the database (no message is sent for it): for states
    the API cannot be asked to produce on demand, like a crashed worker's job. Its spec is a
    tiny synthetic job's, with `spec`'s sections merged in; `values` are columns."""
    from app.api.schemas import JobCreate
    from app.core.tables import Job, utcnow

    body = tiny_job({"source": "synthetic", "num_images": 64}, steps=steps, **(spec or {}))
    config = JobCreate.model_validate(body).model_dump(mode="json")
    job_id = uuid.uuid4().hex
    now = utcnow()
    with stack.sessions()() as session:
        session.add(
            Job(
                id=job_id,
                owner=owner,
                name=f"inserted-{job_id[:8]}",
                status=status,
                config=config,
                created_at=now,
                updated_at=now,
                total_steps=steps,
                latest_metrics={},
                **values,
            )
        )
        session.commit()
    return job_id


def insert_checkpoint(stack: Database, job_id: str, step: int, path: Path, sha256: str) -> None:
    """`path` (under the stack's data directory) recorded as the job's checkpoint of `step`,
    as the worker's sinks record one."""
    from app.core.tables import Checkpoint

    with stack.sessions()() as session:
        session.add(
            Checkpoint(
                job_id=job_id,
                step=step,
                path=str(path.relative_to(stack.data_dir)),
                size_bytes=path.stat().st_size,
                sha256=sha256,
            )
        )
        session.commit()
