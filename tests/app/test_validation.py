"""Every bad request is a 4xx with the error body of API.md, naming the field and the limit."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.builders import insert_job, tiny_job
from tests.stacks import Stack

SYNTHETIC = {"source": "synthetic", "num_images": 64}


def assert_error(response: Any, status: int, *mentions: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    for text in mentions:
        assert text in body["error"]["message"], body["error"]["message"]
    return body["error"]


@pytest.mark.parametrize(
    ("change", "mentions"),
    [
        ({"model": {"arch": "vgg16"}}, ["model.arch", "cnn32"]),
        ({"train": {"batch_size": 0}}, ["train.batch_size", "1"]),
        ({"train": {"steps": 1_000_000}}, ["train.steps", "5000", "SNGAN_MAX_STEPS"]),
        ({"train": {"steps": 0}}, ["train.steps"]),
        ({"model": {"g_ch": 4096}}, ["model.g_ch", "1024", "SNGAN_MAX_CHANNELS"]),
        ({"model": {"d_ch": 1025}}, ["model.d_ch", "1024", "SNGAN_MAX_CHANNELS"]),
        ({"model": {"z_dim": 2048}}, ["model.z_dim", "1024", "SNGAN_MAX_Z_DIM"]),
        ({"train": {"batch_size": 1025}}, ["train.batch_size", "1024", "SNGAN_MAX_BATCH_SIZE"]),
        ({"train": {"n_dis": 11}}, ["train.n_dis", "10", "SNGAN_MAX_N_DIS"]),
        ({"train": {"lr_d": 0}}, ["train.lr_d"]),
        (
            {"eval": {"num_samples": 50_001}},
            ["eval.num_samples", "50000", "SNGAN_MAX_EVAL_SAMPLES"],
        ),
        (
            {"dataset": {"source": "synthetic", "num_images": 501}},
            ["dataset.num_images", "500", "SNGAN_MAX_DATASET_IMAGES"],
        ),
        ({"train": {"loss": "wasserstein"}}, ["train.loss"]),
        ({"train": {"betas": [0.5]}}, ["train.betas"]),
        ({"train": {"lr_g": -1}}, ["train.lr_g"]),
        ({"train": {"learning_rate": 0.1}}, ["train.learning_rate", "not permitted"]),
        ({"checkpoint_every": 0}, ["checkpoint_every"]),
        ({"dataset": {"id": "no-such-dataset"}}, ["dataset.id", "no-such-dataset"]),
        ({"dataset": {"source": "imagenet"}}, ["dataset.source"]),
        ({"dataset": {}}, ["dataset", "exactly one"]),
        ({"dataset": {"source": "cifar10"}}, ["dataset.source", "looked for", "data_batch_1"]),
        ({"eval": {"every": 100}}, ["eval.every", "SNGAN_INCEPTION_WEIGHTS"]),
    ],
)
def test_bad_job_bodies(api: httpx.Client, change: dict[str, Any], mentions: list[str]) -> None:
    body = tiny_job(change.get("dataset", SYNTHETIC), steps=5)
    for key, value in change.items():
        body[key] = {**body.get(key, {}), **value} if key in ("model", "train", "eval") else value
    assert_error(api.post("/v1/jobs", json=body), 422, *mentions)


def test_missing_dataset_and_malformed_json(api: httpx.Client) -> None:
    assert_error(api.post("/v1/jobs", json={"train": {"steps": 5}}), 422, "dataset")
    malformed = api.post(
        "/v1/jobs", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_error(malformed, 422)


def test_bad_query_parameters(api: httpx.Client) -> None:
    assert_error(api.get("/v1/jobs", params={"limit": 0}), 422, "limit")
    assert_error(api.get("/v1/jobs", params={"status": "paused"}), 422, "status")
    assert_error(api.get("/v1/jobs", params={"cursor": "!!"}), 422, "cursor")


def test_samples_limits_and_no_checkpoint(stack: Stack, owner: str, api: httpx.Client) -> None:
    job_id = insert_job(stack, owner, status="failed")  # it never wrote a checkpoint
    url = f"/v1/jobs/{job_id}/samples"
    over = assert_error(api.get(url, params={"n": 17}), 413, "n", "16")
    assert over["details"]["limit"] == 16
    assert_error(api.get(url, params={"n": 0}), 422, "n")
    assert_error(api.get(url, params={"format": "gif"}), 422, "format")
    assert_error(api.get(url, params={"labels": "a,b", "n": 2}), 422, "labels")
    assert_error(api.get(url, params={"n": 4}), 409, "no checkpoint")
    assert_error(api.get(f"/v1/jobs/{job_id}/checkpoints/latest"), 409, "no checkpoint")
    assert_error(api.get(f"/v1/jobs/{job_id}/checkpoints/abc"), 422, "step")


def test_unknown_routes_and_methods_use_the_error_body(api: httpx.Client) -> None:
    assert_error(api.get("/v1/nothing-here"), 404)
    assert_error(api.put("/v1/jobs"), 405)
    assert_error(api.get("/v1/jobs/not-a-job"), 404, "not-a-job")


def test_too_many_active_jobs(stack: Stack, owner: str, api: httpx.Client) -> None:
    from datetime import UTC, datetime, timedelta

    future = datetime.now(UTC) + timedelta(days=1)  # leases no reaper will touch
    for _ in range(8):
        insert_job(stack, owner, status="running", heartbeat_at=future, lease_token=1)
    response = api.post("/v1/jobs", json=tiny_job(SYNTHETIC, steps=5))
    assert_error(response, 429, "8", "SNGAN_MAX_CONCURRENT_JOBS_PER_KEY")
