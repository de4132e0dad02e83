"""The worker's run config: a stored job row read into a typed `models.RunConfig`, on the data
the job names (app.core.job_data, which the API's dataset preview reads too)."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from app.core.tables import Job
from models import DatasetError, DataSpec
from tests.builders import insert_job
from tests.stacks import Stack
from worker.training import build_run_config


def test_a_stored_job_becomes_its_run_config(stack: Stack, owner: str) -> None:
    job_id = insert_job(stack, owner, status="running", steps=7, spec={"train": {"seed": 5}})
    settings = stack.settings()
    cfg, dataset = build_run_config(stack.sessions(), job_id, settings)
    assert cfg.data == DataSpec(source="synthetic", num_images=64)
    assert len(dataset) == 64
    # channels and classes come from the data, keep_last from the settings
    assert (cfg.model.channels, cfg.model.num_classes) == (dataset.channels, dataset.num_classes)
    assert cfg.keep_last == settings.keep_checkpoints
    assert (cfg.train.steps, cfg.train.seed) == (7, 5)


def test_a_deleted_upload_is_a_dataset_error(stack: Stack, owner: str) -> None:
    job_id = insert_job(stack, owner, status="running")
    with stack.sessions()() as session:
        job = session.get(Job, job_id)
        assert job is not None
        config = {**job.config, "dataset": {"id": "gone", "source": None, "num_images": None}}
        session.execute(update(Job).where(Job.id == job_id).values(config=config, dataset_id=None))
        session.commit()
    with pytest.raises(DatasetError, match="dataset gone was deleted"):
        build_run_config(stack.sessions(), job_id, stack.settings())
