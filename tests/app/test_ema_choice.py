"""Which generator /samples, /interpolations and /export serve: the EMA one when the job
trains one and `ema` is absent; asking for EMA from a job trained without it is a 422 naming
`ema` (it used to serve the plain generator without a word)."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import torch

from tests.builders import insert_checkpoint, insert_job
from tests.stacks import Stack

MODEL = {"arch": "cnn32", "z_dim": 16, "g_ch": 4, "d_ch": 4}


def _job(stack: Stack, owner: str, with_ema: bool) -> str:
    """A finished job with one checkpoint of a tiny generator (and an EMA generator with
    other weights when `with_ema`), written directly."""
    from models import RunConfig, build_generator
    from models.checkpoint import save_checkpoint

    train: dict[str, Any] = {"ema_decay": 0.9} if with_ema else {}
    cfg = RunConfig.from_dict({"model": MODEL, "train": train})
    torch.manual_seed(0)
    netG = build_generator(cfg.model)
    ema_G = None
    if with_ema:
        ema_G = copy.deepcopy(netG)
        with torch.no_grad():
            for p in ema_G.parameters():
                p.mul_(0.5)
    job_id = insert_job(stack, owner, "succeeded", steps=2, spec={"model": MODEL, "train": train})
    path = stack.data_dir / "jobs" / job_id / "step_00000002.pt"
    state = {
        "config": cfg.to_dict(),
        "netG": netG.state_dict(),
        "ema_G": ema_G.state_dict() if ema_G is not None else None,
        "step": 2,
    }
    sha, _ = save_checkpoint(state, path)
    insert_checkpoint(stack, job_id, 2, path, sha)
    return job_id


def _samples(api: httpx.Client, job_id: str, **params: Any) -> httpx.Response:
    query = {"n": 2, "seed": 3, "format": "npy", **params}
    return api.get(f"/v1/jobs/{job_id}/samples", params=query, timeout=300)


def test_ema_by_default_when_trained_and_a_422_when_asked_of_a_job_without(
    stack: Stack, api: httpx.Client, owner: str
) -> None:
    plain_job = _job(stack, owner, with_ema=False)
    refused = _samples(api, plain_job, ema="true")
    assert refused.status_code == 422, refused.text
    assert "ema" in refused.text
    walk = api.get(
        f"/v1/jobs/{plain_job}/interpolations", params={"seeds": "1,2", "frames": 2, "ema": "true"}
    )
    assert walk.status_code == 422 and "ema" in walk.text
    assert _samples(api, plain_job).content == _samples(api, plain_job, ema="false").content

    ema_job = _job(stack, owner, with_ema=True)
    default = _samples(api, ema_job)
    assert default.status_code == 200, default.text
    assert default.content == _samples(api, ema_job, ema="true").content
    assert default.content != _samples(api, ema_job, ema="false").content
