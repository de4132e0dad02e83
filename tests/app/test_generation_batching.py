"""Batched generation over real HTTP: two uvicorn processes on one SQLite data directory, one
batching concurrent sample requests and one with SNGAN_BATCHING=false. Concurrent requests
with different seeds (and sizes, and labels) get the same bytes as sequential unbatched
ones, and the batch-size histogram shows batches of more than one image."""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from tests.builders import insert_checkpoint, insert_job
from tests.stacks import new_stack

# (n, seed, labels) of the requests; sizes that do not divide the forward chunk (8 in the
# Batcher test below, the CPU default of 2 over HTTP)
REQUESTS: list[tuple[int, int, str | None]] = [
    (1, 1, None),
    (1, 2, None),
    (3, 3, None),
    (1, 4, None),
    (5, 5, "2"),
    (1, 6, None),
    (2, 7, "0,3"),
    (1, 8, None),
    (1, 9, None),
    (4, 10, None),
]


def _train(out: Path, conditional: bool) -> tuple[Path, str]:
    from models import RunConfig, Trainer
    from models.checkpoint import recorded_sha256

    model: dict[str, Any] = {"arch": "cnn32", "z_dim": 16, "g_ch": 8, "d_ch": 8}
    if conditional:
        model.update(conditional=True, num_classes=4)
    cfg = RunConfig.from_dict(
        {
            "model": model,
            "train": {"steps": 2, "batch_size": 4, "n_dis": 1},
            "data": {"source": "synthetic", "num_images": 16},
            "checkpoint_every": 2,
            "sample_every": 2,
        }
    )
    result = Trainer(cfg, out, device="cpu").fit()
    assert result.checkpoint is not None
    sha = recorded_sha256(result.checkpoint)
    assert sha is not None
    return result.checkpoint, sha


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """{"on": url, "off": url, "jobs": {"plain": id, "conditional": id}}: two API processes
    (auth off) on one SQLite data directory, each with a trained job of either kind."""
    workdir = tmp_path_factory.mktemp("batching")
    with new_stack("embedded", workdir, {"SNGAN_AUTH": "off"}) as stack:
        job_ids = {}
        for kind in ("plain", "conditional"):
            model = {"conditional": kind == "conditional"}
            job_id = insert_job(stack, "local", "succeeded", steps=2, spec={"model": model})
            checkpoint, sha = _train(stack.data_dir / "jobs" / job_id, kind == "conditional")
            insert_checkpoint(stack, job_id, 2, checkpoint, sha)
            job_ids[kind] = job_id
        # a long wait and a batch that closes when 8 images wait: batches form however slowly
        # the clients' requests arrive, and nobody waits the whole time once 8 are there
        on = {"SNGAN_BATCH_MAX_WAIT_MS": "1000", "SNGAN_BATCH_MAX_SIZE": "8"}
        yield {
            "on": stack.start_api("api-on", on),
            "off": stack.start_api("api-off", {"SNGAN_BATCHING": "false"}),
            "jobs": job_ids,
        }


def _sample(base_url: str, job_id: str, n: int, seed: int, labels: str | None) -> httpx.Response:
    params: dict[str, Any] = {"n": n, "seed": seed, "format": "npy" if n > 1 else "png"}
    if labels is not None:
        params["labels"] = labels
    response = httpx.get(f"{base_url}/v1/jobs/{job_id}/samples", params=params, timeout=120)
    assert response.status_code == 200, response.text
    return response


def _sequential(url: str, job_id: str, requests: list[Any]) -> list[bytes]:
    return [_sample(url, job_id, *r).content for r in requests]


def _concurrent(url: str, job_id: str, requests: list[Any]) -> list[httpx.Response]:
    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(lambda r: _sample(url, job_id, *r), requests))


def _batch_histogram(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    found = {}
    for match in re.finditer(
        r'^sngan_generation_batch_size_(bucket\{le="([^"]+)"\}|count) (\S+)$', text, re.M
    ):
        found[match.group(2) or "count"] = float(match.group(3))
    return found


def _decode(body: bytes, n: int) -> np.ndarray:
    if n == 1:
        return np.asarray(Image.open(io.BytesIO(body)))[None]
    return np.load(io.BytesIO(body), allow_pickle=False)


@pytest.mark.parametrize("kind", ["plain", "conditional"])
def test_concurrent_batched_requests_match_sequential_unbatched_bytes(
    servers: dict[str, Any], kind: str
) -> None:
    job_id = servers["jobs"][kind]
    requests = [r if kind == "conditional" else (r[0], r[1], None) for r in REQUESTS]
    expected = _sequential(servers["off"], job_id, requests)
    batched = _concurrent(servers["on"], job_id, requests)
    assert [r.content for r in batched] == expected
    assert max(int(r.headers["X-Generation-Batch"]) for r in batched) > 1
    for (n, _, _), body in zip(requests, expected, strict=True):
        images = _decode(body, n)
        assert images.shape == (n, 32, 32, 3) and images.dtype == np.uint8
    # distinct seeds, distinct images; the same request again, the same bytes
    assert len(set(expected)) == len(expected)
    assert _sequential(servers["on"], job_id, requests[:3]) == expected[:3]


def test_the_histogram_records_batches_of_more_than_one_image(servers: dict[str, Any]) -> None:
    # A burst batches only when its requests reach the server while others are on their
    # way; on a loaded machine (tests in parallel) one burst can arrive one by one, so up to
    # three bursts are sent: with batching off none of them would batch.
    for burst in range(3):
        before = _batch_histogram(servers["on"])
        requests = [(1, 100 + 10 * burst + i, None) for i in range(8)]
        responses = _concurrent(servers["on"], servers["jobs"]["plain"], requests)
        after = _batch_histogram(servers["on"])
        batches = after["count"] - before.get("count", 0)
        single = after["1.0"] - before.get("1.0", 0)
        assert 1 <= batches <= 8  # one observation per call to the generator
        if batches < 8:
            break
    assert batches - single >= 1  # at least one batch held more than one image
    assert sum(int(r.headers["X-Generation-Batch"]) > 1 for r in responses) >= 2


def test_batching_off_runs_each_request_alone(servers: dict[str, Any]) -> None:
    before = _batch_histogram(servers["off"])
    requests = [(1, 200 + i, None) for i in range(6)]
    responses = _concurrent(servers["off"], servers["jobs"]["plain"], requests)
    after = _batch_histogram(servers["off"])
    assert all(r.headers["X-Generation-Batch"] == "1" for r in responses)
    assert after["count"] - before.get("count", 0) == 6
    assert after["1.0"] - before.get("1.0", 0) == 6
    assert [r.content for r in responses] == _sequential(
        servers["on"], servers["jobs"]["plain"], requests
    )


class Amplified(torch.nn.Module):
    """A generator whose pixels change with the last bits of its float output, so any
    dependence of a forward's result on the batch it ran in shows in the uint8 images."""

    def __init__(self, netG: torch.nn.Module) -> None:
        super().__init__()
        self.netG = netG

    def forward(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return torch.sin(self.netG(z, y).double() * 1e9).float()


def test_an_image_does_not_depend_on_its_batch(tmp_path: Path) -> None:
    from app.api.services.generation import Arrivals, Batcher
    from models import load_generator
    from models.generate import sample_inputs

    checkpoint, sha = _train(tmp_path / "run", conditional=False)
    netG, cfg = load_generator(checkpoint, ema=False, expected_sha256=sha)
    amplified = Amplified(netG).eval()
    inputs = [sample_inputs(cfg, n, seed) for n, seed, _ in REQUESTS]
    key = (str(checkpoint), sha, False)
    alone = Batcher("cpu", batching=False, max_wait_s=0, max_size=64, chunk=8)
    expected = [alone.submit(key, amplified, z, y).result().images for z, y in inputs]
    total = sum(n for n, _, _ in REQUESTS)
    # the batch closes when all of them wait (its size), however slowly they arrive, as long
    # as more are announced (as the HTTP route announces each request when it arrives)
    arrivals = Arrivals()
    together = Batcher(
        "cpu", batching=True, max_wait_s=60, max_size=total, chunk=8, arrivals=arrivals
    )
    with contextlib.ExitStack() as stack:
        announced = [stack.enter_context(arrivals.expecting()) for _ in inputs]
        futures = [
            together.submit(key, amplified, z, y, a)
            for (z, y), a in zip(inputs, announced, strict=True)
        ]
    results = [f.result(timeout=60) for f in futures]
    assert [r.batch_requests for r in results] == [len(REQUESTS)] * len(REQUESTS)
    assert [r.leader for r in results] == [True] + [False] * (len(REQUESTS) - 1)
    assert results[0].batch_images == total
    for got, want in zip(results, expected, strict=True):
        assert np.array_equal(got.images, want)


def test_a_batch_waits_only_for_requests_on_their_way(tmp_path: Path) -> None:
    """A lone request is not held for the max wait (60 s here); one that others are
    announced behind waits for them, and they share a batch."""
    from app.api.services.generation import Arrivals, Batcher
    from models import load_generator
    from models.generate import sample_inputs

    checkpoint, sha = _train(tmp_path / "run", conditional=False)
    netG, cfg = load_generator(checkpoint, ema=False, expected_sha256=sha)
    key = (str(checkpoint), sha, False)
    arrivals = Arrivals()
    batcher = Batcher("cpu", batching=True, max_wait_s=60, max_size=64, chunk=8, arrivals=arrivals)

    alone = batcher.submit(key, netG, *sample_inputs(cfg, 1, 0)).result(timeout=30)
    assert alone.batch_requests == 1

    with arrivals.expecting() as on_its_way:  # the second request
        with arrivals.expecting() as queued_now:
            first = batcher.submit(key, netG, *sample_inputs(cfg, 1, 1), queued_now)
            # queued: its own announcement has ended, the batch waits for the other one
            assert arrivals.count == 1
        assert not first.done()
        second = batcher.submit(key, netG, *sample_inputs(cfg, 2, 2), on_its_way)
        assert arrivals.count == 0
    assert first.result(timeout=30).batch_requests == 2
    assert second.result(timeout=30).batch_images == 3
