"""Where a job's training data is read from, resolved once for the worker (what it trains on)
and the API (the dashboard's preview of what a job trains on)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.tables import Dataset, Job
from models.config import DataSpec


class DatasetDeleted(Exception):
    """The job names an uploaded dataset that has been deleted."""


def uploaded_data(settings: Settings, dataset: Dataset) -> DataSpec:
    return DataSpec(source=dataset.format, path=str(settings.data_dir / dataset.path))


def job_data(session: Session, settings: Settings, job: Job) -> tuple[DataSpec, Dataset | None]:
    """The job's `DataSpec`, and its uploaded dataset's row (None for a built-in source): an
    upload, a built-in source's files under the data directory, or synthetic shapes."""
    ref = job.config["dataset"]
    if ref.get("id"):
        dataset = session.get(Dataset, job.dataset_id) if job.dataset_id else None
        if dataset is None:
            raise DatasetDeleted(f"dataset {ref['id']} was deleted")
        return uploaded_data(settings, dataset), dataset
    if ref["source"] == "synthetic":
        # DataSpec's default size when the request gave none
        sized = {"num_images": ref["num_images"]} if ref.get("num_images") else {}
        return DataSpec(source="synthetic", **sized), None
    return DataSpec(source=ref["source"], path=str(settings.data_dir)), None
