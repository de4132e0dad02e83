"""Deterministic image generation from a generator, and grids."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .config import RunConfig
from .latents import Walk, truncated_normal, walk


def to_uint8_nchw(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) in [-1, 1] -> uint8 (N, C, H, W) on the same device."""
    return ((x.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> uint8 numpy (N, H, W, C)."""
    return to_uint8_nchw(x).permute(0, 2, 3, 1).cpu().numpy()


def sample_inputs(
    cfg: RunConfig,
    n: int,
    seed: int,
    labels: Sequence[int] | None = None,
    truncation: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Noise (and labels) drawn on the CPU from `seed`, so they are the same on every device;
    `truncation` t: z from the normal truncated to [-t, t] (`models.latents`)."""
    gen = torch.Generator().manual_seed(seed)
    z = truncated_normal(n, cfg.model.z_dim, gen, truncation)
    if not cfg.model.conditional:
        return z, None
    if labels is None:
        y = torch.randint(cfg.model.num_classes, (n,), generator=gen)
    else:
        if len(labels) != n:
            raise ValueError(f"labels has {len(labels)} entries, expected n={n}")
        bad = [c for c in labels if not 0 <= c < cfg.model.num_classes]
        if bad:
            raise ValueError(f"labels must be in [0, {cfg.model.num_classes}), got {bad[:5]}")
        y = torch.tensor(list(labels), dtype=torch.long)
    return z, y


def walk_inputs(
    cfg: RunConfig,
    seeds: Sequence[int],
    frames: int,
    loop: bool = False,
    labels: Sequence[int] | None = None,
    truncation: float | None = None,
) -> Walk:
    """A latent walk through `seeds`: keyframe i is the input `sample_inputs(cfg, 1, seeds[i],
    [labels[i]] or None, truncation)` (the image of ``/samples?n=1&seed=...``); `labels`: one
    per seed, or one for the whole walk (None: each seed's own drawn label)."""
    if labels is not None and len(labels) == 1:
        labels = list(labels) * len(seeds)
    if labels is not None and len(labels) != len(seeds):
        raise ValueError(f"labels has {len(labels)} entries; send one per seed or a single one")
    keys = [
        sample_inputs(cfg, 1, s, None if labels is None else [labels[i]], truncation)
        for i, s in enumerate(seeds)
    ]
    keys_z = torch.cat([z for z, _ in keys])  # (K, z_dim)
    keys_y = None if not cfg.model.conditional else [int(y[0]) for _, y in keys if y is not None]
    return walk(keys_z, frames, loop, keys_y, cfg.model.num_classes)


@torch.no_grad()
def generate_images(
    netG: nn.Module,
    cfg: RunConfig,
    n: int,
    seed: int,
    labels: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
    truncation: float | None = None,
) -> np.ndarray:
    """uint8 (N, H, W, C); the same (weights, n, seed, labels, truncation) always gives the
    same array."""
    z, y = sample_inputs(cfg, n, seed, labels, truncation)
    x = netG(z.to(device), None if y is None else y.to(device))
    return to_uint8(x)


def image_grid(images: np.ndarray, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """uint8 (N, H, W, C) -> one uint8 (H', W', C) grid, `nrow` images a row (default ~sqrt N)."""
    n, h, w, c = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    grid = np.zeros((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), dtype=np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[top : top + h, left : left + w] = img
    return grid


def png_bytes(image: np.ndarray) -> bytes:
    """uint8 (H, W, C) -> PNG bytes (greyscale when C == 1), with fixed settings and no
    metadata: the same array always gives the same bytes."""
    from PIL import Image

    arr = image[:, :, 0] if image.shape[2] == 1 else image
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=6, optimize=False)
    return buf.getvalue()


def save_png(image: np.ndarray, path: str) -> None:
    """Write uint8 (H, W, C) as a PNG file (`png_bytes`)."""
    with open(path, "wb") as f:
        f.write(png_bytes(image))


def animation_bytes(frames: np.ndarray, fmt: str, fps: float = 12.0) -> bytes:
    """uint8 (F, H, W, C) -> an endlessly looping animated GIF or WebP (Pillow), with fixed
    settings and no metadata: the same frames always give the same bytes. WebP is lossless
    (the frames decode to these exact pixels); GIF quantizes each frame to 256 colours."""
    from PIL import Image

    if fmt not in ("gif", "webp"):
        raise ValueError(f"unknown animation format {fmt!r}")
    grey = frames.shape[3] == 1
    images = [Image.fromarray(f[:, :, 0] if grey else f) for f in frames]
    if fmt == "webp" and grey:  # WebP has no greyscale mode
        images = [im.convert("RGB") for im in images]
    duration = max(1, round(1000 / fps))
    buf = io.BytesIO()
    options: dict[str, object] = (
        {"lossless": True, "quality": 100, "method": 4, "minimize_size": False}
        if fmt == "webp"
        else {"optimize": False, "disposal": 1}
    )
    images[0].save(
        buf,
        format=fmt.upper(),
        save_all=True,
        append_images=images[1:],
        duration=duration,
        loop=0,
        **options,
    )
    return buf.getvalue()
