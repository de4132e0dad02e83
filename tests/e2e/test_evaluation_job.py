"""A job that evaluates IS, FID and KID while it trains, through the service: the points in
the metric series, on the event stream and in `latest_metrics` (for G and, as the job keeps
an EMA generator, for it too: `fid_ema`, ...); the job's `best` checkpoint (by G's FID), kept
beside keep-last-K and named by `checkpoint=best`.

The worker has SNGAN_INCEPTION_WEIGHTS set to a weights file the tests make (see
tests/models/inception_weights.py); it runs in .venv-eval, where torch-fidelity imports.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.builders import npz_bytes, shapes, tiny_job
from tests.clients import SSEEvent, read_events, upload, wait_for_status
from tests.models.inception_weights import fidelity_or_skip, shared_weights
from tests.stacks import STACKS, Stack, new_stack

EVAL_STEPS = [3, 6]
EVAL_NAMES = {"is_mean", "is_std", "fid", "kid_mean", "kid_std"}
EVAL_NAMES |= {f"{name}_ema" for name in EVAL_NAMES}  # the EMA generator's

Run = tuple[dict[str, Any], list[SSEEvent], httpx.Client]


@pytest.fixture(scope="module")
def evaluating(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own (one kind: the path is the same on both) whose worker evaluates."""
    fidelity_or_skip()
    weights = shared_weights(tmp_path_factory.getbasetemp())
    kind = "embedded" if "embedded" in STACKS else STACKS[0]
    settings = {"SNGAN_INCEPTION_WEIGHTS": str(weights), "SNGAN_KEEP_CHECKPOINTS": "1"}
    with new_stack(kind, tmp_path_factory.mktemp("stack-eval"), settings) as stack:
        stack.start_worker()
        with stack.serving():
            yield stack


@pytest.fixture(scope="module")
def run(evaluating: Stack) -> Iterator[Run]:
    """One job, evaluated at EVAL_STEPS, trained to the end: its final state, its events and
    a client of its owner."""
    with evaluating.client(evaluating.new_key()) as api:
        images, labels = shapes(16, size=32)
        response = upload(api, "shapes.npz", npz_bytes(images, labels))
        assert response.status_code == 201, response.text
        body = tiny_job(
            {"id": response.json()["id"]},
            steps=EVAL_STEPS[-1],
            train={"ema_decay": 0.9, "ema_standing_stats": True},
            checkpoint_every=10,
            eval={"every": EVAL_STEPS[0], "num_samples": 12, "metrics": ["is", "fid", "kid"]},
        )
        created = api.post("/v1/jobs", json=body)
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        streamed: list[SSEEvent] = []
        follower = threading.Thread(
            target=lambda: streamed.extend(read_events(api, job_id, timeout=900)), daemon=True
        )
        follower.start()
        try:
            job = wait_for_status(api, job_id, "succeeded", timeout=900)
        except AssertionError as e:
            log = evaluating.log_tail("worker")
            raise AssertionError(f"{e}\nworker log:\n{log}") from None
        follower.join(timeout=30)
        yield job, streamed, api


def series(api: httpx.Client, job_id: str) -> dict[str, dict[int, float]]:
    response = api.get(f"/v1/jobs/{job_id}/metrics", params={"limit": 10_000})
    assert response.status_code == 200, response.text
    out: dict[str, dict[int, float]] = {}
    for p in response.json()["data"]:
        out.setdefault(p["name"], {})[p["step"]] = p["value"]
    return out


def test_evaluations_are_metric_points_events_and_latest_metrics(run: Run) -> None:
    job, streamed, api = run
    points = series(api, job["id"])
    print("service evaluation:", {n: points[n] for n in sorted(EVAL_NAMES)})
    for name in EVAL_NAMES:
        assert sorted(points[name]) == EVAL_STEPS, name
    for step in EVAL_STEPS:
        for suffix in ("", "_ema"):
            assert points[f"is_mean{suffix}"][step] >= 1.0 and points[f"fid{suffix}"][step] >= 0.0
            assert points[f"kid_std{suffix}"][step] >= 0.0
    latest = job["latest_metrics"]
    assert set(latest) >= EVAL_NAMES
    assert latest["fid"] == pytest.approx(points["fid"][EVAL_STEPS[-1]])
    assert latest["fid_ema"] == pytest.approx(points["fid_ema"][EVAL_STEPS[-1]])
    sent = [e.data["metrics"] for e in streamed if e.event == "metrics"]
    assert any({"fid", "kid_mean", "fid_ema", "kid_mean_ema"} <= set(m) for m in sent), (
        "no evaluation on the stream"
    )


def test_the_best_checkpoint_is_recorded_kept_and_named_best(run: Run) -> None:
    job, _, api = run
    fids = series(api, job["id"])["fid"]
    best = min(EVAL_STEPS, key=lambda s: fids[s])
    assert job["best"] == {"step": best, "fid": pytest.approx(fids[best])}
    listed = api.get(f"/v1/jobs/{job['id']}/checkpoints").json()["data"]
    steps = [c["step"] for c in listed]
    assert steps == sorted({best, EVAL_STEPS[-1]})  # SNGAN_KEEP_CHECKPOINTS=1, and the best

    download = api.get(f"/v1/jobs/{job['id']}/checkpoints/best")
    assert download.status_code == 200, download.text
    assert download.headers["x-checkpoint-step"] == str(best)
    sha = next(c["sha256"] for c in listed if c["step"] == best)
    assert download.headers["x-checksum-sha256"] == sha
    sample = api.get(f"/v1/jobs/{job['id']}/samples", params={"checkpoint": "best", "n": 4})
    assert sample.status_code == 200, sample.text
    assert sample.headers["x-checkpoint-step"] == str(best)
    by_step = api.get(f"/v1/jobs/{job['id']}/samples", params={"checkpoint": best, "n": 4})
    assert by_step.content == sample.content
