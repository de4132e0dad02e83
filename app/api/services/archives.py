"""Uploaded archives checked from their headers, before anything is decoded: entry names,
counts and sizes against the limits (SNGAN_MAX_*), then the images' shape.

Accepted: a ``.npz`` with ``images`` (N,H,W[,C] uint8) and optional ``labels`` (N ints), or a
``.zip`` of PNG/JPEG images (class = top-level folder when every image sits in one).
"""

from __future__ import annotations

import stat
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from app.api.errors import ApiError, invalid
from app.core.config import Settings
from models.images import ImageError, channels_of, decode_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# image types models.data would read but the API does not accept
OTHER_IMAGE_SUFFIXES = (".bmp", ".gif", ".webp")


@dataclass
class DatasetInfo:
    format: str  # "npz" | "zip"
    num_images: int
    height: int
    width: int
    channels: int
    num_classes: int


def too_large(what: str, limit: int, setting: str) -> ApiError:
    return ApiError(
        413,
        "payload_too_large",
        f"file: {what} exceeds the limit of {limit} (SNGAN_{setting.upper()})",
        details={"field": "file", "limit": limit},
    )


def inspect_archive(path: Path, filename: str, settings: Settings) -> DatasetInfo:
    """Check an uploaded archive against the limits, reading headers only where possible."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        raise invalid("file", "not a .npz or .zip archive") from None
    with zf:
        infos = zf.infolist()
        _check_entries(infos, settings)
        names = {i.filename for i in infos}
        is_npz = filename.lower().endswith(".npz") or (
            not filename.lower().endswith(".zip") and "images.npy" in names
        )
        return _inspect_npz(zf, settings) if is_npz else _inspect_zip(zf, infos, settings)


def _check_entries(infos: list[zipfile.ZipInfo], settings: Settings) -> None:
    if len(infos) > 2 * settings.max_dataset_images + 1000:
        raise invalid("file", f"archive has {len(infos)} entries, far more than the image limit")
    total = 0
    for info in infos:
        name = info.filename
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
            raise invalid("file", f"entry {name!r} has an absolute path")
        if ".." in parts:
            raise invalid("file", f"entry {name!r} leaves the archive ('..')")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise invalid("file", f"entry {name!r} is a symbolic link")
        if info.flag_bits & 0x1:
            raise invalid("file", f"entry {name!r} is encrypted")
        total += info.file_size
    if total > settings.max_uncompressed_bytes:
        raise too_large(
            f"uncompressed size {total} bytes",
            settings.max_uncompressed_bytes,
            "max_uncompressed_bytes",
        )


def _npy_header(zf: zipfile.ZipFile, member: str) -> tuple[tuple[int, ...], np.dtype[Any], int]:
    """(shape, dtype, header length) of an .npy member, read without reading its data."""
    with zf.open(member) as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _fortran, dtype = np.lib.format.read_array_header_2_0(f)
        except ValueError as e:
            raise invalid("file", f"{member} is not a valid .npy array ({e})") from None
        return tuple(int(s) for s in shape), dtype, f.tell()


def _inspect_npz(zf: zipfile.ZipFile, settings: Settings) -> DatasetInfo:
    names = set(zf.namelist())
    if "images.npy" not in names:
        raise invalid("file", "the .npz has no 'images' array")
    shape, dtype, header_len = _npy_header(zf, "images.npy")
    if dtype.hasobject:
        raise invalid("file", "'images' holds Python objects; only uint8 arrays are accepted")
    if dtype != np.uint8 or len(shape) not in (3, 4):
        raise invalid("file", f"'images' must be uint8 (N,H,W[,C]); got {dtype} {shape}")
    n, h, w = shape[:3]
    c = shape[3] if len(shape) == 4 else 1
    _check_count(n, settings)
    _check_side(h, w, settings, "images")
    if c not in (1, 3, 4):
        raise invalid("file", f"'images' must have 1, 3 or 4 channels, got {c}")
    info = zf.getinfo("images.npy")
    if info.file_size != header_len + n * h * w * c:
        raise invalid("file", "'images' data is truncated or has trailing bytes")
    _read_through(zf, "images.npy")  # the CRC check, without building the array
    num_classes = 0
    if "labels.npy" in names:
        lshape, ldtype, _ = _npy_header(zf, "labels.npy")
        if ldtype.hasobject or ldtype.kind not in "iu" or lshape != (n,):
            raise invalid("file", f"'labels' must be {n} integers; got {ldtype} {lshape}")
        with zf.open("labels.npy") as f:
            labels = np.lib.format.read_array(f, allow_pickle=False)
        if n and int(labels.min()) < 0:
            raise invalid("file", "'labels' must be non-negative class indices")
        num_classes = int(labels.max()) + 1 if n else 0
        _check_classes(num_classes, settings, "'labels' must lie in [0, {limit})")
    return DatasetInfo("npz", n, h, w, 3 if c == 4 else c, num_classes)


def _read_through(zf: zipfile.ZipFile, member: str) -> None:
    try:
        with zf.open(member) as f:
            while f.read(1 << 20):
                pass
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise invalid("file", f"{member} is corrupt ({e})") from None


def _inspect_zip(
    zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], settings: Settings
) -> DatasetInfo:
    from PIL import Image

    images: list[zipfile.ZipInfo] = []
    for info in sorted(infos, key=lambda i: i.filename):
        name = PurePosixPath(info.filename)
        if info.is_dir() or name.name.startswith(".") or "__MACOSX" in name.parts:
            continue
        suffix = name.suffix.lower()
        if suffix in OTHER_IMAGE_SUFFIXES:
            raise invalid("file", f"entry {info.filename!r}: only PNG and JPEG images are accepted")
        if suffix in IMAGE_SUFFIXES:
            images.append(info)
    if not images:
        raise invalid("file", "the zip holds no PNG or JPEG images")
    _check_count(len(images), settings)

    size: tuple[int, int] | None = None
    channels = 1
    classes: list[str] = []
    for info in images:
        with zf.open(info) as f, warnings.catch_warnings():  # the header, before decoding
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                im = Image.open(f)  # reads the header only
                fmt, (w, h), mode = im.format, im.size, im.mode
                im.close()
            except Image.DecompressionBombError:
                raise invalid(
                    "file",
                    f"entry {info.filename!r}: its header claims far more pixels than the "
                    f"largest side of {settings.max_image_side} allows (SNGAN_MAX_IMAGE_SIDE)",
                ) from None
            except Exception:
                raise invalid("file", f"entry {info.filename!r} is not a readable image") from None
        if fmt not in ("PNG", "JPEG"):
            raise invalid("file", f"entry {info.filename!r} is {fmt}, not PNG or JPEG")
        _check_side(h, w, settings, f"entry {info.filename!r}")
        # decoded whole, by the worker's own decoder: a truncated image is refused here
        try:
            pixels = decode_image(zf.read(info), max_pixels=settings.max_image_side**2)
        except ImageError as e:
            raise invalid("file", f"entry {info.filename!r}: {e}") from None
        size = size or (h, w)
        channels = max(channels, int(pixels.shape[2]), channels_of(mode))
        parts = PurePosixPath(info.filename).parts
        classes.append(parts[0] if len(parts) > 1 else "")
    assert size is not None
    num_classes = len(set(classes)) if all(classes) else 0
    _check_classes(num_classes, settings, "the zip has more class folders than {limit}")
    return DatasetInfo("zip", len(images), size[0], size[1], channels, num_classes)


def _check_classes(num_classes: int, settings: Settings, message: str) -> None:
    """A conditional model holds a row per class: the count is bounded (a label of 2e9 asked
    the worker for 512 GB)."""
    limit = settings.max_num_classes
    if num_classes > limit:
        raise invalid("file", message.format(limit=limit) + " (SNGAN_MAX_NUM_CLASSES)")


def _check_count(n: int, settings: Settings) -> None:
    if n < 1:
        raise invalid("file", "the dataset holds no images")
    if n > settings.max_dataset_images:
        raise ApiError(
            413,
            "payload_too_large",
            f"file: {n} images exceed the limit of {settings.max_dataset_images} "
            "(SNGAN_MAX_DATASET_IMAGES)",
            details={"field": "file", "limit": settings.max_dataset_images},
        )


def _check_side(h: int, w: int, settings: Settings, what: str) -> None:
    if h < 1 or w < 1:
        raise invalid("file", f"{what}: empty images ({h}x{w})")
    if max(h, w) > settings.max_image_side:
        raise invalid(
            "file",
            f"{what}: images of {h}x{w} exceed the largest side of {settings.max_image_side} "
            "pixels (SNGAN_MAX_IMAGE_SIDE)",
        )
