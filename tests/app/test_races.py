"""Checks that used to race (issue 12, class 3): the per-key active-job limit and dataset
deletion against job creation, under concurrent requests on both stacks."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import select

from app.core.status import ACTIVE_STATUSES
from app.core.tables import Job
from tests.builders import npz_bytes, shapes, tiny_job
from tests.clients import cancel_all, upload
from tests.stacks import Stack

SYNTHETIC = {"source": "synthetic", "num_images": 64}


@pytest.mark.settings(SNGAN_MAX_CONCURRENT_JOBS_PER_KEY="3")
def test_concurrent_submissions_respect_the_active_job_limit(
    stack: Stack, api: httpx.Client, owner: str
) -> None:
    """20 submissions at once against a limit of 3: exactly 3 are created (a count then an
    insert let up to 20 through)."""
    with ThreadPoolExecutor(20) as pool:
        statuses = list(
            pool.map(
                lambda _: api.post("/v1/jobs", json=tiny_job(SYNTHETIC)).status_code, range(20)
            )
        )
    try:
        assert sorted(statuses) == [201] * 3 + [429] * 17, statuses
        with stack.sessions()() as session:
            active = session.scalars(
                select(Job.id).where(Job.owner == owner, Job.status.in_(ACTIVE_STATUSES))
            ).all()
        assert len(active) == 3
    finally:
        cancel_all(api)


def test_deleting_a_dataset_while_jobs_are_created_on_it(
    stack: Stack, api: httpx.Client, owner: str
) -> None:
    """Each round: one delete of the dataset races job creations on it. Either the job is
    created first (the delete is then a 409, dataset in use) or the delete is (the job is a
    422, no such dataset): never a 500, never a queued job on a deleted dataset."""
    images, labels = shapes(8)
    data = npz_bytes(images, labels)
    with ThreadPoolExecutor(4) as pool:
        for _ in range(6):
            dataset = upload(api, "d.npz", data).json()["id"]
            body = tiny_job({"id": dataset})
            creates = [pool.submit(api.post, "/v1/jobs", json=body) for _ in range(2)]
            delete = pool.submit(api.delete, f"/v1/datasets/{dataset}")
            answers = [f.result().status_code for f in creates]
            deleted = delete.result().status_code
            assert set(answers) <= {201, 422} and deleted in (204, 409), (answers, deleted)
            assert (deleted == 204) == (201 not in answers), (answers, deleted)
            cancel_all(api)
            if deleted == 409:
                assert api.delete(f"/v1/datasets/{dataset}").status_code == 204
    with stack.sessions()() as session:
        orphans = session.scalars(
            select(Job.id).where(
                Job.owner == owner, Job.dataset_id.is_(None), Job.status.in_(ACTIVE_STATUSES)
            )
        ).all()
    assert orphans == []
