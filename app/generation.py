"""Images generated on request from a job's checkpoint.

The only module of app/ that uses torch, and it imports it (and models/) lazily, so the API
starts fast on hosts without it. Generators are kept in a small LRU cache; generation runs in
the route's worker thread, never on the event loop. Output bytes depend only on (checkpoint,
seed, n, labels, ema, format): noise is drawn on the CPU from the seed and PNGs are written
with fixed settings and no metadata.
"""

from __future__ import annotations

import io
import logging
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from app.config import get_settings

log = logging.getLogger(__name__)

SampleFormat = Literal["grid", "png", "zip", "npy"]
MEDIA_TYPES = {
    "grid": "image/png",
    "png": "image/png",
    "zip": "application/zip",
    "npy": "application/octet-stream",
}
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed, so archives are byte-identical


class UnusableCheckpoint(Exception):
    """The checkpoint does not verify or does not load (models.CheckpointError)."""


@dataclass(frozen=True)
class GeneratorInfo:
    conditional: bool
    num_classes: int
    resolution: int
    channels: int


class GeneratorCache:
    """At most `size` generators, least recently used evicted; one load per key at a time."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._items: OrderedDict[tuple[str, str, bool], tuple[Any, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, str, bool], threading.Lock] = {}

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

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_cache: GeneratorCache | None = None
_cache_lock = threading.Lock()
# one generation at a time per process: torch already uses every core for one batch
_run_lock = threading.Lock()


def generator_cache() -> GeneratorCache:
    global _cache
    with _cache_lock:
        if _cache is None:
            _cache = GeneratorCache(get_settings().generator_cache_size)
        return _cache


def resolve_device() -> str:
    device = get_settings().generation_device
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def generate(
    checkpoint: Path,
    sha256: str,
    n: int,
    seed: int,
    labels: Sequence[int] | None,
    ema: bool,
) -> np.ndarray:
    """uint8 (N, H, W, C) from the checkpoint; raises ValueError for labels that do not fit."""
    from models import generate_images

    device = resolve_device()
    netG, cfg = generator_cache().get(checkpoint, sha256, ema, device)
    if labels is not None and not cfg.model.conditional:
        raise ValueError("labels: this job's generator is not class-conditional")
    with _run_lock:
        return generate_images(netG, cfg, n, seed, labels, device=device)


def info(checkpoint: Path, sha256: str, ema: bool) -> GeneratorInfo:
    _, cfg = generator_cache().get(checkpoint, sha256, ema, resolve_device())
    return GeneratorInfo(
        cfg.model.conditional, cfg.model.num_classes, cfg.model.resolution, cfg.model.channels
    )


def png_bytes(image: np.ndarray) -> bytes:
    """uint8 (H, W, C) -> PNG bytes, the same bytes for the same array."""
    from PIL import Image

    arr = image[:, :, 0] if image.shape[2] == 1 else image
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=6, optimize=False)
    return buf.getvalue()


def encode(images: np.ndarray, fmt: SampleFormat) -> bytes:
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
    from models import image_grid

    return png_bytes(image_grid(images))
