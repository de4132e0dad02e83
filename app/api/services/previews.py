"""Grids of a dataset's real images, as a model trains on them, to set beside its samples.

The images come from `models.data.load_dataset`, the loader the worker trains with, at the
model's resolution; torch and models/ are imported only when a preview is first drawn, so the
API still starts without them. A preview draws `n` images from a fixed permutation (seed 0),
so it mixes the classes of a sorted dataset and the same `n` always gives the same bytes.

Loading a whole dataset to show 64 of its images is slow (CIFAR-10: 50,000 images), so it is
done once per source and resolution: the first `MAX_IMAGES` images of the permutation are
kept as ``sample-<R>px.npy`` and every grid (``grid-<R>px-<n>.png``) is drawn from them. Both
live beside what they show: under the uploaded dataset's directory (shared by its jobs, gone
with it) or under the job's directory for a built-in source.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session

from app.api.errors import ApiError
from app.core.config import Settings
from app.core.job_data import DatasetDeleted, job_data, uploaded_data
from app.core.tables import Dataset, Job
from models.config import ARCHS, DataSpec

MAX_IMAGES = 256  # the largest n; the cached sample holds this many images
SEED = 0
RESOLUTIONS = tuple(sorted(set(ARCHS.values())))  # the resolutions a model can train at
# a preview never changes (datasets are immutable); private: it sits behind a key
HEADERS = {"Cache-Control": "private, max-age=3600"}

# one lock per cache directory: concurrent first requests load the dataset once, not once each
# (an entry per job or dataset previewed since the process started: a few hundred bytes each)
_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


@dataclass(frozen=True)
class PreviewSource:
    """What to load (the worker's `DataSpec` for it), at which resolution, cached where."""

    data: DataSpec
    resolution: int
    cache_dir: Path


def for_job(session: Session, settings: Settings, job: Job) -> PreviewSource:
    """The job's training data, as the worker resolves it (app.core.job_data)."""
    try:
        data, dataset = job_data(session, settings, job)
    except DatasetDeleted:
        raise ApiError(
            409, "dataset_deleted", f"the dataset of job {job.id} has been deleted"
        ) from None
    resolution = ARCHS[job.config["model"]["arch"]]
    if dataset is not None:
        return for_dataset(settings, dataset, resolution)
    return PreviewSource(data, resolution, settings.job_dir(job.id) / "previews")


def for_dataset(settings: Settings, dataset: Dataset, resolution: int) -> PreviewSource:
    data = uploaded_data(settings, dataset)
    return PreviewSource(data, resolution, settings.datasets_dir / dataset.id / "previews")


def grid_png(source: PreviewSource, n: int) -> bytes:
    """PNG bytes of a grid of `n` (at most the dataset's size) real images. Blocking: call it
    off the event loop."""
    if not 1 <= n <= MAX_IMAGES:
        raise ValueError(f"n must be in [1, {MAX_IMAGES}]")
    path = source.cache_dir / f"grid-{source.resolution}px-{n}.png"
    with _lock(source.cache_dir):
        if not path.is_file():
            images = _sample(source)[:n]  # (n, H, W, C)
            from models.generate import image_grid, save_png

            _write_atomically(path, lambda tmp: save_png(image_grid(images), str(tmp)))
        return path.read_bytes()


def _sample(source: PreviewSource) -> np.ndarray:
    """uint8 (K, R, R, C): the first K <= MAX_IMAGES images of the fixed permutation (the
    caller holds the source's lock)."""
    path = source.cache_dir / f"sample-{source.resolution}px.npy"
    if path.is_file():
        return np.load(path, allow_pickle=False)
    from models.data import DatasetError, load_dataset

    try:
        dataset = load_dataset(source.data, source.resolution)
    except DatasetError as e:
        raise ApiError(409, "dataset_unavailable", f"the dataset cannot be read: {e}") from None
    order = np.random.default_rng(SEED).permutation(len(dataset))[:MAX_IMAGES]
    chosen = dataset.images[order].permute(0, 2, 3, 1).numpy()  # (K, R, R, C)
    _write_atomically(path, lambda tmp: np.save(tmp, chosen, allow_pickle=False))
    return chosen


def _lock(path: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(path, threading.Lock())


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temp file renamed into place: another process (the API may run
    several) sees the whole file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=path.suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
