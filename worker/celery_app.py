"""The Celery app of the training worker: ``celery -A worker.celery_app:celery worker``.

One job at a time per worker process: concurrency 1, prefetch 1, late acks (a message is
acknowledged only when its task ends, and requeued if the worker dies). The pool is prefork,
and the parent process never imports torch, so CUDA is only ever initialised in the child that
runs a job; every job gets a fresh child, which returns its GPU memory when the job ends.
``CUDA_VISIBLE_DEVICES`` is inherited by that child and honoured by torch.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery, signals

from app.core.config import Settings, get_settings
from app.core.queue import celery_config, ensure_broker_dirs

log = logging.getLogger(__name__)


def create_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    celery = Celery("sngan", include=["worker.tasks"])
    celery.conf.update(celery_config(settings))
    celery.conf.update(
        worker_concurrency=1,
        worker_pool="prefork",
        worker_max_tasks_per_child=1,
        worker_hijack_root_logger=False,
        # a training task runs for hours: never time it out, and keep it running if the
        # broker connection drops (the lease in the database, not the broker, says who owns it)
        task_time_limit=None,
        task_soft_time_limit=None,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    return celery


celery = create_celery()


@signals.worker_process_init.connect
def _on_pool_child_init(**_: Any) -> None:
    from worker import shutdown

    shutdown.install_in_child()


@signals.worker_shutting_down.connect
def _on_shutting_down(how: str = "Warm", **_: Any) -> None:
    """Warm shutdown: the running job goes back to the queue at its next step (see
    worker/shutdown.py) instead of keeping the worker up until it ends."""
    if how != "Warm":  # cold: celery terminates the task; the lease timeout re-queues it
        return
    from celery.worker.state import active_requests

    from worker import shutdown

    # only the children running a task: an idle one would take the signal as a second
    # shutdown request (billiard's handler, with some brokers) and exit with an error
    shutdown.notify_children({r.worker_pid for r in active_requests if r.worker_pid})


@signals.worker_init.connect
def _on_worker_init(**_: Any) -> None:
    settings = get_settings()
    logging.getLogger("worker").setLevel(settings.log_level.upper())
    logging.getLogger("app").setLevel(settings.log_level.upper())
    ensure_broker_dirs(settings)
    log.info(
        "worker for queue gpu; database %s; CUDA_VISIBLE_DEVICES=%s",
        _redacted(settings.database_url or ""),
        os.environ.get("CUDA_VISIBLE_DEVICES", "(unset)"),
    )


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
