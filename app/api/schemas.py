"""Request and response schemas (pydantic v2), in layers: ``*Create`` in, ``*Public`` out.

The job spec's fields, defaults and descriptions are the dataclasses' of ``models/config.py``;
the schema adds types, limits and messages on top (tests/app/test_job_spec.py proves the field
names and defaults equal). Upper bounds come from the settings (``SNGAN_MAX_*``) and are read
when a request is validated, so each violation is a 422 whose message names the field and the
limit.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_core import PydanticCustomError

from app.api.fields import (
    MAX_LIST_ITEMS,
    Arch,
    BodyInt,
    BuiltinSource,
    EvalMetric,
    Loss,
    LrDecay,
    Precision,
    Text,
    at_most,
    spec,
    strict,
)
from app.core.status import JobStatus
from models.config import EvalConfig, ModelConfig, RunConfig, TrainConfig

# --- jobs: input ---------------------------------------------------------------------------


class DatasetRef(BaseModel):
    """Either an uploaded dataset (``id``) or a built-in ``source``."""

    model_config = strict("DatasetRef")

    id: Text | None = Field(default=None, max_length=64, description="An uploaded dataset's id.")
    source: BuiltinSource | None = Field(default=None, description="A built-in dataset.")
    num_images: Annotated[BodyInt, Field(ge=1), at_most("max_dataset_images")] | None = Field(
        default=None, description="Size of the `synthetic` dataset (default 10000)."
    )

    @model_validator(mode="after")
    def _one_of(self) -> DatasetRef:
        if (self.id is None) == (self.source is None):
            raise PydanticCustomError(
                "dataset_ref", "give exactly one of 'id' (an uploaded dataset) or 'source'"
            )
        if self.num_images is not None and self.source != "synthetic":
            raise PydanticCustomError("dataset_ref", "'num_images' applies to 'synthetic' only")
        return self


class ModelSpec(BaseModel):
    model_config = strict("ModelSpec")

    arch: Arch = spec(ModelConfig, "arch")
    z_dim: Annotated[BodyInt, Field(ge=1), at_most("max_z_dim")] = spec(ModelConfig, "z_dim")
    g_ch: Annotated[BodyInt, Field(ge=1), at_most("max_channels")] | None = spec(
        ModelConfig, "g_ch"
    )
    d_ch: Annotated[BodyInt, Field(ge=1), at_most("max_channels")] | None = spec(
        ModelConfig, "d_ch"
    )
    conditional: bool = spec(ModelConfig, "conditional")


class TrainSpec(BaseModel):
    model_config = strict("TrainSpec")

    steps: Annotated[BodyInt, Field(ge=1), at_most("max_steps")] = spec(TrainConfig, "steps")
    batch_size: Annotated[BodyInt, Field(ge=1), at_most("max_batch_size")] = spec(
        TrainConfig, "batch_size"
    )
    n_dis: Annotated[BodyInt, Field(ge=1), at_most("max_n_dis")] = spec(TrainConfig, "n_dis")
    loss: Loss = spec(TrainConfig, "loss")
    # No upper bound: a learning rate too large to train diverges, and the job ends
    # `failed` with code `diverged` and its last good checkpoint.
    lr_g: float = spec(TrainConfig, "lr_g", gt=0, allow_inf_nan=False)
    lr_d: float = spec(TrainConfig, "lr_d", gt=0, allow_inf_nan=False)
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = spec(
        TrainConfig, "betas"
    )
    lr_decay: LrDecay = spec(TrainConfig, "lr_decay")
    ema_decay: float | None = spec(TrainConfig, "ema_decay", gt=0, lt=1)
    ema_rampup: float | None = spec(TrainConfig, "ema_rampup", gt=0, allow_inf_nan=False)
    ema_start: BodyInt = spec(TrainConfig, "ema_start", ge=0)
    ema_standing_stats: bool = spec(TrainConfig, "ema_standing_stats")
    seed: BodyInt = spec(TrainConfig, "seed", ge=0)
    precision: Precision = spec(TrainConfig, "precision")


class EvalSpec(BaseModel):
    model_config = strict("EvalSpec")

    every: BodyInt = spec(EvalConfig, "every", ge=0)
    num_samples: Annotated[BodyInt, Field(ge=1), at_most("max_eval_samples")] = spec(
        EvalConfig, "num_samples"
    )
    metrics: list[EvalMetric] = spec(EvalConfig, "metrics", max_length=MAX_LIST_ITEMS)


class JobCreate(BaseModel):
    """The body of ``POST /v1/jobs``; defaults are the SN-GAN paper's."""

    model_config = strict("JobCreate")

    name: Text | None = Field(default=None, min_length=1, max_length=128)
    dataset: DatasetRef
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    checkpoint_every: BodyInt = spec(RunConfig, "checkpoint_every", ge=1)
    sample_every: BodyInt = spec(RunConfig, "sample_every", ge=1)
    # the job's own, not its training run's (so not in models/config.py, and tables.JOB_FIELDS
    # keeps it out of the run spec): where to send its events
    webhook: WebhookSubscription | None = Field(
        default=None, description="Send this job's events to a URL (signed webhooks)."
    )


# --- jobs: output --------------------------------------------------------------------------


class Progress(BaseModel):
    step: int
    total_steps: int
    fraction: float
    steps_per_s: float | None
    eta_s: float | None


class JobErrorPublic(BaseModel):
    code: str
    message: str


class BestPublic(BaseModel):
    """The checkpoint with the lowest FID so far (kept whatever keep-last-K says)."""

    step: int
    fid: float


class JobLinks(BaseModel):
    self: str
    metrics: str
    events: str
    samples: str
    checkpoints: str


class JobPublic(BaseModel):
    id: str
    name: str
    status: JobStatus
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    config: dict[str, Any]
    progress: Progress
    latest_metrics: dict[str, float]
    best: BestPublic | None = Field(
        description="The best checkpoint by FID (null until FID is evaluated); "
        "checkpoint=best names it in samples and downloads."
    )
    error: JobErrorPublic | None
    attempts: int
    links: JobLinks

    @classmethod
    def from_row(cls, job: Any) -> JobPublic:
        base = f"/v1/jobs/{job.id}"
        total = job.total_steps
        return cls(
            id=job.id,
            name=job.name,
            status=job.status,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            config=job.config,
            progress=Progress(
                step=job.step,
                total_steps=total,
                fraction=round(job.step / total, 6) if total else 0.0,
                steps_per_s=job.steps_per_s,
                eta_s=job.eta_s,
            ),
            latest_metrics=job.latest_metrics or {},
            best=(
                BestPublic(step=job.best_step, fid=job.best_fid)
                if job.best_step is not None and job.best_fid is not None
                else None
            ),
            error=(
                JobErrorPublic(code=job.error_code, message=job.error_message or "")
                if job.error_code
                else None
            ),
            attempts=job.attempts,
            links=JobLinks(
                self=base,
                metrics=f"{base}/metrics",
                events=f"{base}/events",
                samples=f"{base}/samples",
                checkpoints=f"{base}/checkpoints",
            ),
        )


class JobsPublic(BaseModel):
    data: list[JobPublic]
    next_cursor: str | None


# --- datasets ------------------------------------------------------------------------------


class DatasetPublic(BaseModel):
    id: str
    filename: str
    format: Literal["npz", "zip"]
    num_images: int
    image_size: tuple[int, int]
    channels: int
    num_classes: int
    size_bytes: int
    created_at: datetime

    @classmethod
    def from_row(cls, ds: Any) -> DatasetPublic:
        return cls(
            id=ds.id,
            filename=ds.filename,
            format=ds.format,
            num_images=ds.num_images,
            image_size=(ds.height, ds.width),
            channels=ds.channels,
            num_classes=ds.num_classes,
            size_bytes=ds.size_bytes,
            created_at=ds.created_at,
        )


class DatasetsPublic(BaseModel):
    data: list[DatasetPublic]


# --- metrics, checkpoints, samples ---------------------------------------------------------


class MetricPoint(BaseModel):
    step: int
    name: str
    value: float
    time: datetime


class MetricsPublic(BaseModel):
    data: list[MetricPoint]
    next_after_step: int | None


MetricsFormat = Literal["points", "columns"]


class MetricsColumns(BaseModel):
    """The same points as MetricsPublic, a column per name (``format=columns``): about a
    sixth of the bytes, and no object per point to build on either side."""

    steps: list[int] = Field(description="The steps of this page, ascending.")
    series: dict[str, list[float | None]] = Field(
        description="Per name, its value at each of `steps`: null where it has no point there "
        "(or where the value is not a finite number, as `value` is in the points form)."
    )
    next_after_step: int | None

    @classmethod
    def from_rows(cls, rows: Any, next_after_step: int | None) -> MetricsColumns:
        """From (step, name, value) rows in step order."""
        at: dict[int, int] = {}
        for row in rows:
            at.setdefault(row[0], len(at))
        series: dict[str, list[float | None]] = {}
        for step, name, value, *_ in rows:
            column = series.get(name)
            if column is None:
                column = series[name] = [None] * len(at)
            column[at[step]] = value
        return cls.model_construct(
            steps=list(at), series=dict(sorted(series.items())), next_after_step=next_after_step
        )


class CheckpointPublic(BaseModel):
    step: int
    size_bytes: int
    sha256: str
    created_at: datetime


class CheckpointsPublic(BaseModel):
    data: list[CheckpointPublic]


class TrainingSamplePublic(BaseModel):
    step: int
    url: str
    created_at: datetime


class TrainingSamplesPublic(BaseModel):
    data: list[TrainingSamplePublic]


# --- keys ----------------------------------------------------------------------------------


class KeyPublic(BaseModel):
    id: str
    created_at: datetime
    revoked_at: datetime | None
    current: bool = Field(description="Whether this is the key the request was made with.")

    @classmethod
    def from_row(cls, key: Any, current: bool) -> KeyPublic:
        return cls(id=key.id, created_at=key.created_at, revoked_at=key.revoked_at, current=current)


class KeysPublic(BaseModel):
    data: list[KeyPublic]


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorBody(BaseModel):
    """Every non-2xx answer."""

    error: ErrorDetail


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` for routes: each status documented with the error body."""
    return {s: {"model": ErrorBody} for s in statuses}


# --- webhooks ------------------------------------------------------------------------------

WebhookEvent = Literal["status", "finished", "checkpoint", "sample", "evaluation"]


def _final_statuses_only() -> list[WebhookEvent]:
    return ["finished"]


class WebhookSubscription(BaseModel):
    """Where to send a job's events (on a job) or all the key's jobs' events (/v1/webhooks)."""

    model_config = strict("WebhookSubscription")

    url: Text = Field(min_length=1, max_length=2048, description="An http:// or https:// URL.")
    events: list[WebhookEvent] = Field(
        default_factory=_final_statuses_only,
        min_length=1,
        max_length=MAX_LIST_ITEMS,
        description="'status' (every status change), 'finished' (final statuses only), "
        "'checkpoint', 'sample', 'evaluation'.",
    )


class WebhookPublic(BaseModel):
    id: str
    url: str
    events: list[str]
    job_id: str | None
    created_at: datetime
    disabled_at: datetime | None
    disabled_reason: str | None


class WebhooksPublic(BaseModel):
    data: list[WebhookPublic]


class WebhookSecretPublic(BaseModel):
    secret: str
    previous_secret_expires_at: datetime | None


class WebhookDeliveryPublic(BaseModel):
    id: str
    type: str
    url: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None


class WebhookDeliveriesPublic(BaseModel):
    data: list[WebhookDeliveryPublic]
