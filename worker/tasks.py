"""Celery tasks. They receive job ids only; the job row holds everything else."""

from __future__ import annotations

import logging
from functools import lru_cache

from celery import shared_task
from celery.worker.request import Request
from celery.worker.state import task_ready
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from app.core.config import get_settings
from app.core.db import session_factory
from app.core.leases import claim, worker_name, worth_running
from app.core.queue import TRAIN_TASK

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _parent_engine(url: str) -> Engine:
    """The worker's main process's own engine, without a pool: it forks a pool child per job,
    and a child must never inherit an open connection of its parent."""
    return create_engine(url, poolclass=NullPool)


class SkipStaleMessages(Request):
    """The train task's request, as the worker's main process handles it.

    Every job runs in a fresh pool child (``worker_max_tasks_per_child=1``), so anything sent
    to the pool costs a fork and a replacement child (1-5 s). A message whose job is no longer
    claimable (canceled while queued, resumed twice, already running elsewhere) is dropped
    here instead, with one read of the job row and no child: one user's cancel/resume churn
    cannot fill the queue with work that delays everyone else. When the read fails (the
    database is down) the message goes to the pool as before, where `claim` decides.
    """

    def revoked(self) -> bool:
        """Celery asks this just before sending the request to the pool (a revoked request
        is acknowledged and skipped there); a stale one is skipped the same way."""
        if super().revoked():
            return True
        job_id = self._stale_job()
        if job_id is None:
            return False
        log.info("dropping a stale message for job %s: nothing to claim", job_id)
        task_ready(self)
        self.acknowledge()
        self._already_revoked = True
        return True

    def _stale_job(self) -> str | None:
        args = self.args or ()
        job_id = args[0] if args else (self.kwargs or {}).get("job_id")
        if not isinstance(job_id, str):
            return None
        settings = get_settings()
        assert settings.database_url is not None
        try:
            with Session(_parent_engine(settings.database_url)) as session:
                worth = worth_running(session, job_id, settings.lease_timeout_s)
        except Exception:  # the child's claim decides, as without this check
            log.warning("could not read job %s before running it", job_id, exc_info=True)
            return None
        return None if worth else job_id


@shared_task(
    name=TRAIN_TASK,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    Request=SkipStaleMessages,
)
def train(job_id: str) -> None:
    """Run (or continue) the training job `job_id`.

    Stale messages are dropped before they reach this (`SkipStaleMessages`). The lease is
    claimed before torch is imported, so a duplicate delivery that gets here anyway costs no
    model code at all.
    """
    settings = get_settings()
    with session_factory()() as session:
        lease = claim(session, job_id, worker_name(), settings.lease_timeout_s)
    if lease is None:
        return
    from worker.training import run_claimed

    run_claimed(lease, settings)
