"""Settings shared by the API and the worker: one class, env prefix ``SNGAN_``.

The embedded defaults live here: with nothing configured the service keeps a SQLite
database and a filesystem Celery broker under one data directory, so it runs with no
external server. Point ``SNGAN_DATABASE_URL`` / ``SNGAN_BROKER_URL`` at PostgreSQL and
Redis for a real deployment.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SNGAN_", env_file=".env", extra="ignore")

    # --- storage -----------------------------------------------------------------------
    data_dir: Path = Field(
        default=Path("./data"),
        description="Root of datasets, checkpoints, samples, the embedded DB and broker.",
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default sqlite:///<data_dir>/sngan.db."
    )
    broker_url: str | None = Field(
        default=None, description="Celery broker URL; default a filesystem broker in data_dir."
    )
    broker_key_prefix: str = Field(
        default="", description="Prefix of every Redis key the broker uses (share one Redis)."
    )
    migrate_on_startup: bool = Field(
        default=True, description="Run the Alembic migrations when the API starts."
    )
    api_workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="API processes `sngan serve` runs (uvicorn workers); each has its own "
        "generator cache, generation batcher and rate-limit buckets.",
    )

    # --- auth --------------------------------------------------------------------------
    auth: Literal["on", "off"] = Field(
        default="on", description="'off' lets every request act as owner 'local' (dev only)."
    )
    auth_cache_s: float = Field(
        default=5.0,
        ge=0,
        description="How long an API process trusts a key it verified without reading the "
        "key again: a revoked key keeps working for up to this long. 0: read it every request.",
    )

    # --- limits (each violation is a 4xx naming the field and the limit) ---------------
    max_steps: int = Field(default=1_000_000, description="Upper bound of train.steps.")
    max_batch_size: int = Field(default=1024, description="Upper bound of train.batch_size.")
    max_channels: int = Field(default=1024, description="Upper bound of model.g_ch / d_ch.")
    max_z_dim: int = Field(default=1024, description="Upper bound of model.z_dim.")
    max_n_dis: int = Field(default=10, description="Upper bound of train.n_dis.")
    max_eval_samples: int = Field(default=50_000, description="Upper bound of eval.num_samples.")
    max_samples_per_request: int = Field(default=256, description="Cap of n on /samples.")
    max_upload_bytes: int = Field(default=512 * 1024 * 1024, description="Largest upload.")
    max_dataset_images: int = Field(default=200_000, description="Most images in one upload.")
    max_image_side: int = Field(default=1024, description="Largest image side in an upload.")
    max_uncompressed_bytes: int = Field(
        default=4 * 1024 * 1024 * 1024, description="Zip bomb guard: total uncompressed size."
    )
    max_json_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Largest request body other than an upload (a 413 past it, checked by "
        "Content-Length and while the body streams in, before anything is parsed).",
    )
    max_num_classes: int = Field(
        default=1000,
        ge=1,
        description="Most classes in an uploaded dataset: labels must lie in [0, this) "
        "(a conditional model holds one embedding row per class).",
    )
    max_concurrent_jobs_per_key: int = Field(
        default=8, description="Queued + running jobs one key may have."
    )
    rate_limit_per_minute: int = Field(default=6000, description="Requests per key per minute.")

    # --- generation --------------------------------------------------------------------
    generator_cache_size: int = Field(default=4, description="Generators kept in memory.")
    generation_device: str = Field(default="auto", description="'auto', 'cpu' or 'cuda'.")
    batch_max_wait_ms: float = Field(
        default=5.0, description="How long a sample request waits to be batched with others."
    )
    batch_max_size: int = Field(default=64, description="Most images generated in one batch.")
    batching: bool = Field(default=True, description="Batch concurrent sample requests.")
    generation_chunk: int | None = Field(
        default=None,
        ge=1,
        description="Images per generator forward (batches are split and padded to it, so "
        "an image never depends on its batch); with the device, part of what makes samples "
        "reproducible. Default: 2 on a CPU (a forward costs about the same per image at any "
        "size there, so padding is waste), 32 on CUDA (a small batch costs its kernel "
        "launches there, not its images).",
    )

    # --- worker ------------------------------------------------------------------------
    heartbeat_interval_s: float = Field(default=5.0, description="Worker heartbeat period.")
    lease_timeout_s: float = Field(
        default=60.0, description="A running job whose heartbeat is older is re-queued."
    )
    train_device: str = Field(default="auto", description="'auto', 'cpu' or 'cuda' for training.")
    reaper_interval_s: float = Field(
        default=15.0, description="How often the API looks for stale or lost jobs."
    )
    requeue_queued_after_s: float = Field(
        default=300.0,
        description="A job queued this long without starting is enqueued again (lost message).",
    )
    sse_poll_interval_s: float = Field(
        default=0.5, description="How often an open event stream looks for new events."
    )
    job_cache_s: float = Field(
        default=0.5,
        ge=0,
        le=60,
        description="How long an API process hands out the same answer to GET /v1/jobs/{id} "
        "(one database read per job per this long, whatever the number of pollers): an "
        "answer is at most this far behind the worker; a cancel, resume or delete made "
        "through the same process shows at once. 0: read the job on every request.",
    )
    metrics_flush_every_s: float = Field(default=1.0, description="Metric batch flush period.")
    progress_events_keep_s: float = Field(
        default=3600.0,
        gt=0,
        description="How long a running job's progress and metrics events are kept for SSE "
        "replay (status, sample, checkpoint and done events are kept for good; metric values "
        "stay in the metrics table).",
    )
    keep_checkpoints: int = Field(default=5, description="Checkpoints kept per job (last K).")
    inception_weights: Path | None = Field(
        default=None,
        description="Local file of torch-fidelity's Inception weights "
        "(pt_inception-2015-12-05-6726825d.pth); needed for IS/FID/KID.",
    )

    # --- webhooks ----------------------------------------------------------------------
    webhook_timeout_s: float = Field(
        default=10.0, gt=0, description="How long a webhook delivery waits for its answer."
    )
    webhook_retry_schedule_s: str = Field(
        default="0,5,300,1800,7200,18000,36000,86400",
        pattern=r"^\s*\d+(\.\d+)?(\s*,\s*\d+(\.\d+)?)*\s*$",
        description="Seconds before each attempt at a webhook message (comma-separated; the "
        "first is the first try, each later one a retry, with up to 10% jitter).",
    )
    webhook_max_attempts: int = Field(
        default=8,
        ge=1,
        description="Most automatic attempts at one webhook message (capped by the "
        "schedule's length); it is then 'failed' until redelivered.",
    )
    webhook_secret_overlap_s: float = Field(
        default=86400.0,
        ge=0,
        description="How long a rotated-out webhook secret keeps signing beside the new one.",
    )
    webhook_allow_private: bool = Field(
        default=False,
        description="Allow webhook URLs on loopback, private, link-local and metadata "
        "addresses (tests, private deployments).",
    )
    webhook_poll_interval_s: float = Field(
        default=1.0, gt=0, description="How often the API looks for webhook messages to send."
    )

    # --- logging -----------------------------------------------------------------------
    log_level: str = Field(default="INFO", description="Python logging level.")

    @model_validator(mode="after")
    def _fill_embedded_defaults(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.data_dir / 'sngan.db'}"
        if self.broker_url is None:
            self.broker_url = "filesystem://"
        return self

    @property
    def embedded_broker(self) -> bool:
        return bool(self.broker_url and self.broker_url.startswith("filesystem://"))

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"

    @property
    def datasets_dir(self) -> Path:
        return self.data_dir / "datasets"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def webhook_schedule(self) -> list[float]:
        """The delays before each automatic attempt, at most ``webhook_max_attempts``."""
        delays = [float(s) for s in self.webhook_retry_schedule_s.split(",")]
        return delays[: self.webhook_max_attempts]

    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id


@lru_cache
def get_settings() -> Settings:
    return Settings()
