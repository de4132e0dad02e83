"""The Celery client of the API: enqueue training by task name, never by importing worker/.

``celery_config`` is shared with the worker (``worker.celery_app``) so both sides agree on the
broker, the queue and the serializer.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery

from app.core.config import Settings, get_settings

log = logging.getLogger(__name__)

TRAIN_TASK = "sngan.train"
TRAIN_QUEUE = "gpu"


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings common to the API's client and the worker."""
    transport_options: dict[str, Any] = {}
    if settings.embedded_broker:
        folder = str(settings.broker_dir)
        transport_options = {
            "data_folder_in": folder,
            "data_folder_out": folder,
            "control_folder": str(settings.broker_dir / "control"),
            "store_processed": False,
        }
    elif settings.broker_key_prefix:
        transport_options = {"global_keyprefix": settings.broker_key_prefix}
    broker_url = settings.broker_url
    if broker_url == "filesystem://":
        broker_url = "filesystem://localhost//"  # the same broker, without kombu's warning
    return {
        "broker_url": broker_url,
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": 5,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,  # the database is the source of truth
        "result_backend": None,
        "task_default_queue": TRAIN_QUEUE,
        "task_routes": {TRAIN_TASK: {"queue": TRAIN_QUEUE}},
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # the filesystem transport has no broadcast between hosts worth keeping
        "worker_enable_remote_control": not settings.embedded_broker,
    }


def ensure_broker_dirs(settings: Settings) -> None:
    if settings.embedded_broker:
        (settings.broker_dir / "control").mkdir(parents=True, exist_ok=True)


_clients: dict[tuple[str | None, str, str], Celery] = {}


def get_celery_client() -> Celery:
    """One client per broker configuration; it connects on first publish."""
    settings = get_settings()
    key = (settings.broker_url, settings.broker_key_prefix, str(settings.broker_dir))
    client = _clients.get(key)
    if client is None:
        client = Celery("sngan-api", set_as_current=False)
        client.conf.update(celery_config(settings))
        _clients[key] = client
    return client


def enqueue_training(job_id: str) -> bool:
    """Publish ``sngan.train(job_id)`` on queue ``gpu``; False when the broker is unreachable.

    A job that could not be enqueued stays ``queued`` and the reaper enqueues it again.
    """
    settings = get_settings()
    ensure_broker_dirs(settings)
    try:
        get_celery_client().send_task(
            TRAIN_TASK,
            args=[job_id],
            queue=TRAIN_QUEUE,
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
        )
    except Exception as e:  # broker down: kombu raises OperationalError and friends
        log.warning("could not enqueue job %s (%s); the reaper will retry", job_id, e)
        return False
    return True


def broker_check(timeout: float = 3.0) -> None:
    """Raise unless the broker accepts a connection."""
    settings = get_settings()
    ensure_broker_dirs(settings)
    with get_celery_client().connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=timeout)


def queue_depth(timeout: float = 3.0) -> int | None:
    """Messages waiting on queue ``gpu`` (None when the broker cannot be asked)."""
    settings = get_settings()
    ensure_broker_dirs(settings)
    try:
        with get_celery_client().connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
            with conn.channel() as channel:
                return int(channel.queue_declare(TRAIN_QUEUE).message_count)
    except Exception as e:
        log.debug("queue depth unavailable: %s", e)
        return None
