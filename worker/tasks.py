"""Celery tasks. They receive job ids only; the job row holds everything else."""

from __future__ import annotations

from celery import shared_task

from app.core.config import get_settings
from app.core.db import session_factory
from app.core.leases import claim, worker_name
from app.core.queue import TRAIN_TASK


@shared_task(
    name=TRAIN_TASK,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def train(job_id: str) -> None:
    """Run (or continue) the training job `job_id`.

    The lease is claimed before torch is imported, so a duplicate delivery or a job canceled
    while queued costs no model code at all.
    """
    settings = get_settings()
    with session_factory()() as session:
        lease = claim(session, job_id, worker_name(), settings.lease_timeout_s)
    if lease is None:
        return
    from worker.training import run_claimed

    run_claimed(lease, settings)
