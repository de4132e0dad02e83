"""Datasets: CIFAR-10, STL-10, image folders and zips, .npz arrays, and a synthetic set.

Every source is loaded into one uint8 tensor (N, C, R, R) at the architecture's resolution
R (centre-cropped to a square, then resized with antialiasing); batches are scaled to
[-1, 1] when sampled. Nothing is downloaded: missing files raise `DatasetError` naming
every path that was looked for.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
import torch.nn.functional as F

from .config import DataSpec
from .images import ImageError, decode_image
from .sources import builtin_candidates, find_builtin

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


class DatasetError(Exception):
    """A dataset that cannot be found or read; the message says what was looked for."""


@dataclass
class ImageDataset:
    images: torch.Tensor  # uint8 (N, C, R, R)
    labels: torch.Tensor  # int64 (N,); zeros when unlabelled
    num_classes: int  # 0 when unlabelled

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def to(self, device: torch.device | str) -> ImageDataset:
        return ImageDataset(self.images.to(device), self.labels.to(device), self.num_classes)


def scale(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1] (the default float dtype)."""
    return images_u8.to(torch.get_default_dtype()).div_(127.5).sub_(1.0)


def load_dataset(spec: DataSpec, resolution: int, channels: int | None = None) -> ImageDataset:
    """Load `spec` at `resolution`; `channels` (1 or 3) converts when given."""
    arr: np.ndarray
    labels: np.ndarray | None
    if spec.source == "synthetic":
        arr, labels = synthetic_shapes(spec.num_images, resolution, seed=0)
    elif spec.source == "cifar10":
        arr, labels = _read_cifar10(_require_path(spec))
    elif spec.source == "stl10":
        arr, labels = _read_stl10(_require_path(spec))
    elif spec.source == "npz":
        arr, labels = _read_npz(_existing(_require_path(spec)))
    elif spec.source == "zip":
        arr, labels = _read_zip(_existing(_require_path(spec)), resolution)
    else:  # folder
        arr, labels = _read_folder(_existing(_require_path(spec)), resolution)
    images = _to_resolution(arr, resolution)
    if channels is not None:
        images = _convert_channels(images, channels)
    num_classes = int(labels.max()) + 1 if labels is not None and len(labels) else 0
    label_t = (
        torch.from_numpy(np.asarray(labels, dtype=np.int64))
        if labels is not None
        else (torch.zeros(images.shape[0], dtype=torch.long))
    )
    return ImageDataset(images, label_t, num_classes)


# --- sources ------------------------------------------------------------------------------


def _require_path(spec: DataSpec) -> Path:
    if not spec.path:
        raise DatasetError(f"data source {spec.source!r} needs a path")
    return Path(spec.path)


def _existing(path: Path) -> Path:
    if not path.exists():
        raise DatasetError(f"dataset file not found: looked for {path}")
    return path


def _builtin_dir(source: str, root: Path) -> Path:
    found = find_builtin(source, root)
    if found is None:
        looked = builtin_candidates(source, root)
        raise DatasetError(
            f"{source} files not found; looked for: " + ", ".join(str(p) for p in looked)
        )
    return found


def _read_cifar10(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """The standard python-pickle batches (cifar-10-batches-py/data_batch_1..5)."""
    d = _builtin_dir("cifar10", root)
    xs, ys = [], []
    for i in range(1, 6):
        path = d / f"data_batch_{i}"
        if not path.exists():
            raise DatasetError(f"CIFAR-10 batch missing: looked for {path}")
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")  # the official format is a pickle
        xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch[b"labels"], dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def _read_stl10(root: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The standard binaries: train_X.bin + train_y.bin (labelled) or unlabeled_X.bin."""
    d = _builtin_dir("stl10", root)

    def read_x(path: Path) -> np.ndarray:
        # column-major 96x96 planes: (N, 3, 96, 96) transposed
        return np.fromfile(path, dtype=np.uint8).reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)

    unlabeled = d / "unlabeled_X.bin"
    if unlabeled.exists():  # the paper trains on the 100k unlabelled images
        return read_x(unlabeled), None
    y = np.fromfile(d / "train_y.bin", dtype=np.uint8).astype(np.int64) - 1
    return read_x(d / "train_X.bin"), y


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        with np.load(path, allow_pickle=False) as z:
            images = z["images"]
            labels = z["labels"] if "labels" in z.files else None
    except (ValueError, KeyError, OSError, zipfile.BadZipFile) as e:
        raise DatasetError(f"{path}: not a valid .npz with an 'images' array ({e})") from e
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise DatasetError(
            f"{path}: 'images' must be uint8 (N,H,W[,C]), got {images.dtype} {images.shape}"
        )
    if images.ndim == 3:
        images = images[:, :, :, None]
    if images.shape[3] == 4:
        images = images[:, :, :, :3]  # a view: alpha dropped
    if images.shape[3] not in (1, 3):
        raise DatasetError(f"{path}: images must have 1, 3 or 4 channels, got {images.shape[3]}")
    if labels is not None:
        labels = np.asarray(labels).astype(np.int64).reshape(-1)
        if len(labels) != len(images) or (len(labels) and labels.min() < 0):
            raise DatasetError(f"{path}: 'labels' must be N non-negative ints")
    # (N, C, H, W) as a view of the array read: no second copy of the largest array here
    return images.transpose(0, 3, 1, 2), labels


def _decode(data: bytes | Path, resolution: int, name: str) -> np.ndarray:
    from PIL import Image

    try:
        pixels = decode_image(data)  # (H, W, C): what the upload check decoded too
    except ImageError as e:
        raise DatasetError(f"{name}: {e}") from None
    im = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    side = min(im.size)
    left, top = (im.width - side) // 2, (im.height - side) // 2
    im = im.crop((left, top, left + side, top + side))
    im = im.resize((resolution, resolution), Image.Resampling.BICUBIC)
    arr = np.asarray(im, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


def _stack(decoded: list[np.ndarray], classes: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
    if not decoded:
        raise DatasetError("no images found")
    ch = 3 if any(a.shape[2] == 3 for a in decoded) else 1
    arr = np.stack([np.repeat(a, 3, axis=2) if a.shape[2] != ch else a for a in decoded])
    names = sorted(set(classes))
    labels = None
    if all(classes) and len(names) > 0:
        index = {n: i for i, n in enumerate(names)}
        labels = np.array([index[c] for c in classes], dtype=np.int64)
    return np.ascontiguousarray(arr.transpose(0, 3, 1, 2)), labels


def _class_of(parts: tuple[str, ...]) -> str:
    """Class = top-level folder when the image sits in one ('' otherwise)."""
    return parts[0] if len(parts) > 1 else ""


def _read_zip(path: Path, resolution: int) -> tuple[np.ndarray, np.ndarray | None]:
    decoded, classes = [], []
    try:
        with zipfile.ZipFile(path) as zf:
            for info in sorted(zf.infolist(), key=lambda i: i.filename):
                name = PurePosixPath(info.filename)
                if info.is_dir() or name.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                if name.is_absolute() or ".." in name.parts or name.name.startswith("."):
                    continue
                decoded.append(_decode(zf.read(info), resolution, info.filename))
                classes.append(_class_of(name.parts))
    except zipfile.BadZipFile as e:
        raise DatasetError(f"{path}: not a valid zip ({e})") from e
    return _stack(decoded, classes)


def _read_folder(root: Path, resolution: int) -> tuple[np.ndarray, np.ndarray | None]:
    decoded, classes = [], []
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."):
            decoded.append(_decode(p, resolution, str(p)))
            classes.append(_class_of(p.relative_to(root).parts))
    if not decoded:
        raise DatasetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {root}")
    return _stack(decoded, classes)


# --- synthetic ----------------------------------------------------------------------------

SYNTHETIC_CLASSES = ("disc", "square", "triangle", "cross")
_COLOURS = np.array([[230, 60, 50], [60, 200, 80], [70, 110, 240], [240, 210, 60]], np.float32)


def synthetic_shapes(
    n: int, resolution: int = 32, seed: int = 0, num_classes: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """Coloured shapes on a dark background, one shape (and colour) per class.

    Position, size and colour are jittered, so a generator has to learn a distribution,
    not a handful of images. Returns uint8 (N, 3, R, R) and int64 labels.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n)
    r = resolution
    yy, xx = np.mgrid[0:r, 0:r].astype(np.float32) + 0.5
    cx = rng.uniform(0.35 * r, 0.65 * r, (n, 1, 1)).astype(np.float32)
    cy = rng.uniform(0.35 * r, 0.65 * r, (n, 1, 1)).astype(np.float32)
    s = rng.uniform(0.22 * r, 0.32 * r, (n, 1, 1)).astype(np.float32)
    dx, dy = xx[None] - cx, yy[None] - cy  # (N, R, R)
    masks = [
        dx**2 + dy**2 <= s**2,  # disc
        (np.abs(dx) <= 0.8 * s) & (np.abs(dy) <= 0.8 * s),  # square
        (dy <= 0.8 * s) & (dy >= -s + 2 * np.abs(dx)),  # triangle, apex up
        ((np.abs(dx) <= 0.3 * s) | (np.abs(dy) <= 0.3 * s))
        & (np.abs(dx) <= s)
        & (np.abs(dy) <= s),  # cross
    ]
    mask = np.choose(labels[:, None, None] % 4, masks)  # (N, R, R)
    colour = _COLOURS[labels % 4] + rng.normal(0, 12, (n, 3)).astype(np.float32)
    background = rng.uniform(10, 40, (n, 1, 1, 1)).astype(np.float32)
    img = np.where(mask[:, None], colour[:, :, None, None], background)
    return np.clip(img, 0, 255).astype(np.uint8), labels.astype(np.int64)


# --- resizing -----------------------------------------------------------------------------


# Floats resized at once: the images are resized in chunks of at most this many bytes of
# float32 input, so the transient memory does not grow with the dataset (or its image size).
RESIZE_CHUNK_BYTES = 128 * 1024 * 1024


def _to_resolution(arr: np.ndarray, resolution: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, C, R, R): centre crop to a square, antialiased resize.

    `arr` may be a strided view (channels-last underneath); the output is the only full-size
    allocation, plus one chunk of floats (RESIZE_CHUNK_BYTES) at a time."""
    n, c, h, w = arr.shape
    if h == w == resolution:
        return torch.from_numpy(np.ascontiguousarray(arr))
    t = torch.from_numpy(arr)  # strides kept: no copy
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    t = t[:, :, top : top + side, left : left + side]
    out = torch.empty((n, c, resolution, resolution), dtype=torch.uint8)
    chunk = max(1, RESIZE_CHUNK_BYTES // (4 * c * side * side))
    for i in range(0, n, chunk):
        x = t[i : i + chunk].float()
        y = F.interpolate(
            x, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False
        )
        out[i : i + chunk] = y.round().clamp(0, 255).to(torch.uint8)
    return out


def _convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    if images.shape[1] == channels:
        return images
    if channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (images.float() * weights).sum(1, keepdim=True).round().to(torch.uint8)
