"""Images generated on request from a job's checkpoint.

The only module of app/ that uses torch, and it imports it (and models/) lazily, so the API
starts fast on hosts without it. Generators are kept in a small LRU cache.

Concurrent requests for the same generator are batched: each device has one thread that
runs the forward passes, off the event loop; a request waits at most ``batch_max_wait_ms``
for others, and up to ``batch_max_size`` images go through the generator together. It waits
only while other sample requests are on their way (announced with `expecting()` as soon as
their route runs, before their database lookups): a lone request goes at once. Each
request's noise (and labels) are drawn on the CPU from its own seed and concatenated, and it
gets back its own slice (the batching itself: app.api.services.batching).

Output bytes depend only on (checkpoint, seed, n, labels, ema, format), batched or not. A
forward pass's float results depend on the batch's shape (oneDNN and cuDNN pick kernels and
split work by shape), and a 1e-6 difference can flip a rounded pixel, so every forward runs
on exactly ``generation_chunk`` images (`default_chunk` when unset), padded with zeros: an
image's pixels then never depend on which other requests shared its batch, or on where in it
they sat. PNGs are written with fixed settings and no metadata.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.api.services.batching import Announcement, Arrivals, Batcher, CacheKey, Generated
from app.core.config import get_settings
from app.core.formats import ExportFormat, SampleFormat, WalkFormat

log = logging.getLogger(__name__)

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed, so archives are byte-identical


@dataclass(frozen=True)
class WalkRequest:
    """A latent walk (`models.generate.walk_inputs`): keyframe seeds, frames per segment,
    closed into a loop or not, labels (one, or one per seed; None: each seed's own),
    truncation."""

    seeds: list[int]
    frames: int
    loop: bool = False
    labels: list[int] | None = None
    truncation: float | None = None


class UnusableCheckpoint(Exception):
    """The checkpoint does not verify or does not load (models.CheckpointError)."""


class ExportUnavailable(Exception):
    """The export format's packages are not installed (models.export.ExportUnavailable)."""


class GeneratorCache:
    """At most `size` generators, least recently used evicted; one load per key at a time."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._items: OrderedDict[CacheKey, tuple[Any, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[CacheKey, threading.Lock] = {}

    def get(self, path: Path, sha256: str, ema: bool, device: str) -> tuple[Any, Any]:
        key = (str(path), sha256, ema)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            load_lock = self._loading.setdefault(key, threading.Lock())
        with load_lock:
            with self._lock:
                if key in self._items:
                    return self._items[key]
            from models import CheckpointError, load_generator

            try:
                item = load_generator(path, ema=ema, map_location=device, expected_sha256=sha256)
            except CheckpointError as e:
                raise UnusableCheckpoint(str(e)) from e
            finally:
                with self._lock:
                    self._loading.pop(key, None)
            with self._lock:
                self._items[key] = item
                self._items.move_to_end(key)
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
            return item


_cache: GeneratorCache | None = None
_arrivals = Arrivals()
_batchers: dict[str, Batcher] = {}
_encoders: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def generator_cache() -> GeneratorCache:
    global _cache
    with _lock:
        if _cache is None:
            _cache = GeneratorCache(get_settings().generator_cache_size)
        return _cache


def batcher(device: str) -> Batcher:
    """The device's batcher (one thread per device), configured from the settings."""
    with _lock:
        if device not in _batchers:
            settings = get_settings()
            _batchers[device] = Batcher(
                device,
                batching=settings.batching,
                max_wait_s=settings.batch_max_wait_ms / 1000,
                max_size=settings.batch_max_size,
                chunk=settings.generation_chunk or default_chunk(device),
                threads=_cpu_share(settings.api_workers) if device == "cpu" else None,
                arrivals=_arrivals,
            )
        return _batchers[device]


def expecting() -> contextlib.AbstractContextManager[Announcement]:
    """Announce a sample request on its way (see `Arrivals`); cheap, and needs no torch, so
    a route can announce itself on the event loop before anything else."""
    return _arrivals.expecting()


def _cpu_share(processes: int) -> int | None:
    """Torch threads for one of `processes` API processes generating on the CPU: the cores
    this process may use, split between them (each would otherwise start one per core)."""
    if processes <= 1:
        return None
    return max(1, len(os.sched_getaffinity(0)) // processes)


def default_chunk(device: str) -> int:
    """Images per forward when SNGAN_GENERATION_CHUNK is unset. Measured on a 2-core CPU,
    resnet32 at the paper's widths: 30, 41, 84 and 178 ms for 1, 2, 4 and 8 images, so a
    chunk of 2 pads little and batches as well as 8 (bench/serve_samples.py: 1 client
    47 ms instead of 184, 32 clients 41.9 requests/s instead of 35.4)."""
    return 32 if device.startswith("cuda") else 2


def encoder_pool() -> ThreadPoolExecutor:
    """Threads that encode PNGs in parallel (Pillow's zlib releases the GIL)."""
    global _encoders
    with _lock:
        if _encoders is None:
            _encoders = ThreadPoolExecutor(
                max_workers=os.cpu_count() or 2, thread_name_prefix="encode"
            )
        return _encoders


def resolve_device() -> str:
    """The device of SNGAN_GENERATION_DEVICE (``auto``: CUDA when there is a GPU)."""
    from models.device import resolve_device as resolve

    return str(resolve(get_settings().generation_device))


def submit(
    checkpoint: Path,
    sha256: str,
    n: int,
    seed: int,
    labels: Sequence[int] | None,
    ema: bool,
    announcement: Announcement | None = None,
    truncation: float | None = None,
) -> Future[Generated]:
    """Queue a request for its batch; loads the generator first if it is not cached.

    Raises UnusableCheckpoint, and ValueError for labels that do not fit, in the caller."""
    from models.generate import sample_inputs

    def inputs(cfg: Any) -> tuple[Any, Any]:
        return sample_inputs(cfg, n, seed, labels, truncation)

    return _submit(checkpoint, sha256, ema, labels is not None, inputs, announcement)


def class_count(checkpoint: Path, sha256: str, ema: bool) -> int:
    """The generator's classes (0: unconditional); loads it into the cache on a miss."""
    _netG, cfg = generator_cache().get(checkpoint, sha256, ema, resolve_device())
    return int(cfg.model.num_classes) if cfg.model.conditional else 0


def submit_walk(
    checkpoint: Path,
    sha256: str,
    walk: WalkRequest,
    ema: bool,
    announcement: Announcement | None = None,
) -> Future[Generated]:
    """Queue a latent walk's frames as one request (`models.generate.walk_inputs`); raises
    like `submit`."""
    from models.generate import walk_inputs

    def inputs(cfg: Any) -> tuple[Any, Any]:
        w = walk_inputs(cfg, walk.seeds, walk.frames, walk.loop, walk.labels, walk.truncation)
        return w.z, w.y

    return _submit(checkpoint, sha256, ema, walk.labels is not None, inputs, announcement)


def _submit(
    checkpoint: Path,
    sha256: str,
    ema: bool,
    labelled: bool,
    inputs: Callable[[Any], tuple[Any, Any]],
    announcement: Announcement | None,
) -> Future[Generated]:
    device = resolve_device()
    netG, cfg = generator_cache().get(checkpoint, sha256, ema, device)
    if labelled and not cfg.model.conditional:
        raise ValueError("labels: this job's generator is not class-conditional")
    try:
        z, y = inputs(cfg)
    except ValueError as e:
        raise ValueError(f"labels: {e}") from None
    return batcher(device).submit((str(checkpoint), sha256, ema), netG, z, y, announcement)


def generate(
    checkpoint: Path,
    sha256: str,
    n: int,
    seed: int,
    labels: Sequence[int] | None,
    ema: bool,
) -> np.ndarray:
    """uint8 (N, H, W, C) from the checkpoint; raises ValueError for labels that do not fit."""
    return submit(checkpoint, sha256, n, seed, labels, ema).result().images


def export(
    checkpoint: Path, sha256: str, fmt: ExportFormat, ema: bool
) -> tuple[Path, dict[str, str]]:
    """The checkpoint's generator exported in `fmt` (built once, kept beside the checkpoint:
    models.export.cached_export) and its metadata."""
    from models import CheckpointError
    from models import export as exporting

    try:
        # built in a child process: see cached_export
        path, meta = exporting.cached_export(checkpoint, sha256, fmt, ema, isolated=True)
    except CheckpointError as e:
        raise UnusableCheckpoint(str(e)) from e
    except exporting.ExportUnavailable as e:
        raise ExportUnavailable(str(e)) from e
    return path, meta.as_strings()


def encode(images: np.ndarray, fmt: SampleFormat, nrow: int | None = None) -> bytes:
    """The images in `fmt`; a grid has `nrow` images a row (default about sqrt N)."""
    from models.generate import image_grid, png_bytes

    if fmt == "npy":
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(images), allow_pickle=False)
        return buf.getvalue()
    if fmt == "png":
        return png_bytes(images[0])
    if fmt == "zip":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for i, image in enumerate(images):
                entry = zipfile.ZipInfo(f"{i:05d}.png", date_time=_ZIP_DATE)
                entry.compress_type = zipfile.ZIP_DEFLATED
                entry.external_attr = 0o644 << 16
                zf.writestr(entry, png_bytes(image))
        return buf.getvalue()
    return png_bytes(image_grid(images, nrow))


def encode_walk(frames: np.ndarray, fmt: WalkFormat, fps: float) -> bytes:
    """A walk's frames: an animated GIF/WebP, a PNG strip (one row), or npy (F, H, W, C)."""
    from models.generate import animation_bytes, image_grid, png_bytes

    if fmt == "npy":
        return encode(frames, "npy")
    if fmt == "png":
        return png_bytes(image_grid(frames, nrow=len(frames)))
    return animation_bytes(frames, fmt, fps)
