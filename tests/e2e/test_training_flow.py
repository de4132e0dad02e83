"""The whole path: upload a dataset, train a tiny conditional job, follow it live, read its
metrics and checkpoints, generate images from it, delete it."""

from __future__ import annotations

import hashlib
import io
import threading
import zipfile
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from app.core.tables import Metric
from tests.builders import METRIC_NAMES, npz_bytes, shapes, tiny_job
from tests.clients import SSEEvent, read_events, upload, wait_for_status
from tests.stacks import Stack

STEPS = 30
N_CLASSES = 4


# the dataset, the finished job and the events streamed while it trained
Trained = tuple[dict[str, Any], dict[str, Any], list[SSEEvent]]


@pytest.fixture(scope="module")
def client(worker: Stack) -> Iterator[httpx.Client]:
    """A client of the stack's app, served for the whole module, with a worker to train."""
    with worker.serving(), worker.client(worker.new_key()) as api:
        yield api


@pytest.fixture(scope="module")
def trained(stack: Stack, client: httpx.Client) -> Trained:
    """One job trained for the whole module (per stack): its dataset, final state, events."""
    api = client
    images, labels = shapes(96, size=32)
    response = upload(api, "shapes.npz", npz_bytes(images, labels))
    assert response.status_code == 201, response.text
    dataset = response.json()

    body = tiny_job({"id": dataset["id"]}, steps=STEPS, model={"conditional": True})
    created = api.post("/v1/jobs", json=body)
    assert created.status_code == 201, created.text
    job = created.json()
    assert created.headers["location"] == f"/v1/jobs/{job['id']}"

    streamed: list[SSEEvent] = []
    follower = threading.Thread(
        target=lambda: streamed.extend(read_events(api, job["id"], timeout=180)), daemon=True
    )
    follower.start()
    try:
        finished = wait_for_status(api, job["id"], "succeeded", timeout=180)
    except AssertionError as e:
        raise AssertionError(f"{e}\nworker log:\n{stack.log_tail('worker')}") from None
    follower.join(timeout=30)
    assert not follower.is_alive(), "the event stream did not end after the job finished"
    return dataset, finished, streamed


def test_dataset_is_described(trained: Trained) -> None:
    dataset, _, _ = trained
    assert dataset["num_images"] == 96
    assert dataset["image_size"] == [32, 32]
    assert dataset["channels"] == 3
    assert dataset["num_classes"] == N_CLASSES


def test_job_reaches_the_last_step(trained: Trained) -> None:
    _, job, _ = trained
    assert job["progress"]["step"] == STEPS
    assert job["progress"]["total_steps"] == STEPS
    assert job["progress"]["fraction"] == 1.0
    assert job["attempts"] == 1
    assert job["error"] is None
    assert job["started_at"] and job["finished_at"]
    assert set(METRIC_NAMES) <= set(job["latest_metrics"])


def test_one_metric_point_per_name_and_step(
    stack: Stack, client: httpx.Client, trained: Trained
) -> None:
    api = client
    _, job, _ = trained
    response = api.get(f"/v1/jobs/{job['id']}/metrics", params={"limit": 10_000})
    assert response.status_code == 200
    points = response.json()["data"]
    assert response.json()["next_after_step"] is None
    seen = [(p["name"], p["step"]) for p in points]
    assert len(seen) == len(set(seen))
    assert set(seen) == {(name, step) for name in METRIC_NAMES for step in range(1, STEPS + 1)}
    with stack.sessions()() as session:  # and the table itself holds no more than that
        rows = session.scalar(
            select(func.count()).select_from(Metric).where(Metric.job_id == job["id"])
        )
    assert rows == len(METRIC_NAMES) * STEPS


def test_metrics_filter_page_and_downsample(client: httpx.Client, trained: Trained) -> None:
    api = client
    _, job, _ = trained
    url = f"/v1/jobs/{job['id']}/metrics"
    every = api.get(url, params={"names": "loss_d,loss_g", "every": 10}).json()["data"]
    assert {(p["name"], p["step"]) for p in every} == {
        (n, s) for n in ("loss_d", "loss_g") for s in (10, 20, 30)
    }
    first = api.get(url, params={"names": "loss_g", "limit": 12}).json()
    assert [p["step"] for p in first["data"]] == list(range(1, 13))
    assert first["next_after_step"] == 12
    rest = api.get(url, params={"names": "loss_g", "after_step": 12, "limit": 100}).json()
    assert [p["step"] for p in rest["data"]] == list(range(13, STEPS + 1))
    assert rest["next_after_step"] is None
    assert all(np.isfinite(p["value"]) for p in first["data"] + rest["data"])


def test_checkpoints_download_with_their_sha256(client: httpx.Client, trained: Trained) -> None:
    api = client
    _, job, _ = trained
    listed = api.get(f"/v1/jobs/{job['id']}/checkpoints").json()["data"]
    assert [c["step"] for c in listed] == [10, 20, 30]
    for checkpoint in listed:
        got = api.get(f"/v1/jobs/{job['id']}/checkpoints/{checkpoint['step']}")
        assert got.status_code == 200
        assert len(got.content) == checkpoint["size_bytes"]
        assert hashlib.sha256(got.content).hexdigest() == checkpoint["sha256"]
    latest = api.get(f"/v1/jobs/{job['id']}/checkpoints/latest")
    assert hashlib.sha256(latest.content).hexdigest() == listed[-1]["sha256"]
    assert api.get(f"/v1/jobs/{job['id']}/checkpoints/25").status_code == 404


def test_samples_are_reproducible(client: httpx.Client, trained: Trained) -> None:
    api = client
    _, job, _ = trained
    url = f"/v1/jobs/{job['id']}/samples"
    grid = api.get(url, params={"n": 16, "seed": 7})
    assert grid.status_code == 200, grid.text
    assert grid.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(grid.content))
    image.load()
    side = 4 * (32 + 2) + 2  # 4x4 images of 32 px, 2 px padding (models.image_grid)
    assert image.size == (side, side)
    assert api.get(url, params={"n": 16, "seed": 7}).content == grid.content
    assert api.get(url, params={"n": 16, "seed": 8}).content != grid.content
    older = api.get(url, params={"n": 16, "seed": 7, "checkpoint": 10})
    assert older.status_code == 200 and older.content != grid.content


def test_sample_formats_and_labels(client: httpx.Client, trained: Trained) -> None:
    api = client
    _, job, _ = trained
    url = f"/v1/jobs/{job['id']}/samples"
    npy = api.get(url, params={"n": 4, "seed": 1, "format": "npy", "labels": "0,1,2,3"})
    assert npy.status_code == 200, npy.text
    array = np.load(io.BytesIO(npy.content), allow_pickle=False)
    assert array.shape == (4, 32, 32, 3) and array.dtype == np.uint8
    same_label = api.get(url, params={"n": 4, "seed": 1, "format": "npy", "labels": "2"})
    other = np.load(io.BytesIO(same_label.content), allow_pickle=False)
    assert np.array_equal(other[2], array[2])  # same noise and label: the same image
    assert not np.array_equal(other[0], array[0])  # same noise, another label

    archive = api.get(url, params={"n": 3, "seed": 1, "format": "zip"})
    with zipfile.ZipFile(io.BytesIO(archive.content)) as zf:
        names = zf.namelist()
        assert len(names) == 3
        assert Image.open(io.BytesIO(zf.read(names[0]))).size == (32, 32)
    single = api.get(url, params={"n": 1, "seed": 1, "format": "png"})
    assert Image.open(io.BytesIO(single.content)).size == (32, 32)

    bad_label = api.get(url, params={"n": 2, "labels": f"0,{N_CLASSES}"})
    assert bad_label.status_code == 422
    assert "labels" in bad_label.json()["error"]["message"]
    png_many = api.get(url, params={"n": 2, "format": "png"})
    assert png_many.status_code == 422 and "n" in png_many.json()["error"]["message"]


def test_training_sample_grids(client: httpx.Client, trained: Trained) -> None:
    api = client
    _, job, _ = trained
    listed = api.get(f"/v1/jobs/{job['id']}/training-samples").json()["data"]
    assert [s["step"] for s in listed] == [10, 20, 30]
    grid = api.get(listed[-1]["url"])
    assert grid.status_code == 200 and grid.headers["content-type"] == "image/png"
    Image.open(io.BytesIO(grid.content)).load()
    assert api.get(f"/v1/jobs/{job['id']}/training-samples/11").status_code == 404


def test_events_stream_and_resume_from_last_event_id(
    client: httpx.Client, trained: Trained
) -> None:
    api = client
    _, job, streamed = trained
    types = [e.event for e in streamed]
    assert {"status", "progress", "metrics", "checkpoint", "sample", "done"} <= set(types)
    assert types[-1] == "done" and streamed[-1].data["status"] == "succeeded"
    ids = [e.id for e in streamed if e.id is not None]
    assert len(ids) == len(streamed) and ids == sorted(set(ids))
    progress = [e.data["step"] for e in streamed if e.event == "progress"]
    assert progress == sorted(progress) and progress[-1] == STEPS
    statuses = [e.data["status"] for e in streamed if e.event == "status"]
    assert statuses[0] == "queued" and statuses[-1] == "succeeded" and "running" in statuses

    middle = ids[len(ids) // 2]
    replay = read_events(api, job["id"], last_event_id=middle, timeout=30)
    assert [e.id for e in replay] == [i for i in ids if i > middle]
    assert read_events(api, job["id"], last_event_id=ids[-1], timeout=30) == []


def test_delete_removes_rows_and_files(
    stack: Stack, client: httpx.Client, trained: Trained
) -> None:
    api = client
    _, job, _ = trained
    job_dir = stack.data_dir / "jobs" / job["id"]
    assert (job_dir / "checkpoints").is_dir()
    assert api.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert api.get(f"/v1/jobs/{job['id']}").status_code == 404
    assert not job_dir.exists()
    with stack.sessions()() as session:
        left = session.scalar(
            select(func.count()).select_from(Metric).where(Metric.job_id == job["id"])
        )
    assert left == 0
