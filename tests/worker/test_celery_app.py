"""The Celery app's configuration, and the running worker's parent process."""

from __future__ import annotations

from pathlib import Path

from app.core.config import Settings
from tests.stacks import Stack
from worker.celery_app import create_celery


def test_one_late_acked_job_at_a_time_on_queue_gpu(tmp_path: Path) -> None:
    celery = create_celery(Settings.model_validate({"data_dir": tmp_path}))
    conf = celery.conf
    assert conf.task_routes == {"sngan.train": {"queue": "gpu"}}
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1 and conf.worker_concurrency == 1
    assert conf.worker_pool == "prefork" and conf.worker_max_tasks_per_child == 1
    assert conf.task_ignore_result and conf.accept_content == ["json"]
    options = conf.broker_transport_options
    assert conf.broker_url.startswith("filesystem://")
    assert options["data_folder_in"] == options["data_folder_out"] == str(tmp_path / "broker")
    celery.loader.import_default_modules()
    task = celery.tasks["sngan.train"]
    assert task.acks_late and task.reject_on_worker_lost and task.ignore_result


def test_redis_keys_get_the_configured_prefix(tmp_path: Path) -> None:
    settings = Settings.model_validate(
        {
            "data_dir": tmp_path,
            "broker_url": "redis://localhost:6379/3",
            "broker_key_prefix": "team-a:",
        }
    )
    conf = create_celery(settings).conf
    assert conf.broker_url == "redis://localhost:6379/3"
    assert conf.broker_transport_options == {"global_keyprefix": "team-a:"}


def test_the_worker_parent_never_loads_torch(worker: Stack) -> None:
    """CUDA is safe with prefork only while the parent never initialises it: the parent must
    not even map libtorch (the pool's children load it, per job)."""
    parent = worker.procs["worker"].pid
    maps = Path(f"/proc/{parent}/maps").read_text()
    assert "libtorch" not in maps
    assert "celery" in Path(f"/proc/{parent}/cmdline").read_text()
