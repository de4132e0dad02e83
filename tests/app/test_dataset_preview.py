"""Previews of real training images: a job's (/v1/jobs/{id}/dataset-preview) and an uploaded
dataset's (/v1/datasets/{id}/preview), as PNG grids at a model's resolution."""

from __future__ import annotations

import io
import math
from typing import Any

import httpx
import numpy as np
from PIL import Image

from tests.builders import insert_job, npz_bytes, shapes, tiny_job
from tests.clients import cancel_all, upload, wait_for_status
from tests.stacks import Stack

PAD = 2  # models.generate.image_grid's border between tiles


def decode(response: Any) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(response.content)) as im:
        assert im.format == "PNG"
        return np.asarray(im)


def grid_side(count: int, tile: int) -> tuple[int, int]:
    """(height, width) of image_grid's grid of `count` square tiles."""
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    return rows * (tile + PAD) + PAD, cols * (tile + PAD) + PAD


def tiles(grid: np.ndarray, count: int, tile: int) -> list[np.ndarray]:
    cols = math.ceil(math.sqrt(count))
    found = []
    for i in range(count):
        r, c = divmod(i, cols)
        top, left = PAD + r * (tile + PAD), PAD + c * (tile + PAD)
        found.append(grid[top : top + tile, left : left + tile])
    return found


def assert_rejected_n(response: Any, limit: str) -> None:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["details"][0]["field"] == "n", error
    assert limit in error["message"], error


def test_job_preview_shows_its_training_images(stack: Stack, owner: str, api: httpx.Client) -> None:
    from models.data import synthetic_shapes

    job_id = insert_job(stack, owner, status="succeeded")  # synthetic, 64 images, cnn32
    url = f"/v1/jobs/{job_id}/dataset-preview"

    first = api.get(url, params={"n": 16})
    grid = decode(first)
    assert grid.shape == (*grid_side(16, 32), 3)
    # each tile is one of the images the worker trains this job on, and no image twice
    dataset, _ = synthetic_shapes(64, 32, seed=0)  # as the worker loads a synthetic source
    training = {img.transpose(1, 2, 0).tobytes() for img in dataset}
    shown = [t.tobytes() for t in tiles(grid, 16, 32)]
    assert all(t in training for t in shown)
    assert len(set(shown)) == 16

    assert api.get(url, params={"n": 16}).content == first.content  # same n, same bytes
    assert decode(api.get(url)).shape == (*grid_side(64, 32), 3)  # n defaults to 64
    nine = decode(api.get(url, params={"n": 9}))
    assert nine.shape == (*grid_side(9, 32), 3)
    assert (stack.data_dir / "jobs" / job_id / "previews" / "grid-32px-16.png").is_file()

    assert_rejected_n(api.get(url, params={"n": 0}), "1")
    assert_rejected_n(api.get(url, params={"n": 257}), "256")

    with stack.client(stack.new_key()) as stranger:  # another owner: as if it did not exist
        hidden = stranger.get(url, params={"n": 16})
        assert hidden.status_code == 404, hidden.text
        assert hidden.json()["error"]["code"] == "not_found"
    with stack.client() as anonymous:
        assert anonymous.get(url).status_code == 401


def test_uploaded_dataset_preview_and_its_jobs(stack: Stack, api: httpx.Client) -> None:
    images, labels = shapes(40, size=32, channels=1, seed=3)
    created = upload(api, "grey.npz", npz_bytes(images[..., 0], labels))
    assert created.status_code == 201, created.text
    dataset_id = created.json()["id"]
    url = f"/v1/datasets/{dataset_id}/preview"

    # n above the dataset's size shows all of it; 32x32 images at 32 px are shown unchanged
    grid = decode(api.get(url, params={"n": 64}))
    assert grid.shape == grid_side(40, 32)  # greyscale: one channel
    uploaded = {img.tobytes() for img in images[..., 0]}
    shown = [t.tobytes() for t in tiles(grid, 40, 32)]
    assert set(shown) == uploaded
    assert api.get(url, params={"n": 64}).content == api.get(url, params={"n": 64}).content

    at_48 = api.get(url, params={"n": 8, "resolution": 48})
    assert decode(at_48).shape == grid_side(8, 48)
    odd = api.get(url, params={"resolution": 40})
    assert odd.status_code == 422, odd.text
    assert odd.json()["error"]["details"][0]["field"] == "resolution"
    assert "32, 48" in odd.json()["error"]["message"]
    assert_rejected_n(api.get(url, params={"n": 1000}), "256")
    with stack.client(stack.new_key()) as stranger:
        assert stranger.get(url).status_code == 404

    # a job on this dataset previews the same images at its own model's resolution
    body = tiny_job({"id": dataset_id}, model={"arch": "cnn48"})
    job = api.post("/v1/jobs", json=body)
    assert job.status_code == 201, job.text
    job_id = job.json()["id"]
    cancel_all(api)  # the preview needs no training
    job_preview = api.get(f"/v1/jobs/{job_id}/dataset-preview", params={"n": 8})
    assert job_preview.content == at_48.content

    wait_for_status(api, job_id, "canceled")
    assert api.delete(f"/v1/datasets/{dataset_id}").status_code == 204
    gone = api.get(f"/v1/jobs/{job_id}/dataset-preview", params={"n": 8})
    assert gone.status_code == 409, gone.text
    assert gone.json()["error"]["code"] == "dataset_deleted"


def test_builtin_source_without_its_files(stack: Stack, owner: str, api: httpx.Client) -> None:
    from app.core.tables import Job

    job_id = insert_job(stack, owner, status="failed")
    with stack.sessions()() as session:  # a CIFAR-10 job whose files were removed since
        job = session.get(Job, job_id)
        assert job is not None
        job.config = {**job.config, "dataset": {"source": "cifar10"}}
        session.commit()
    response = api.get(f"/v1/jobs/{job_id}/dataset-preview")
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == "dataset_unavailable"
    assert "data_batch_1" in error["message"]  # says where it looked
