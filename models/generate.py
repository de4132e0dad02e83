"""Deterministic image generation from a generator, and grids."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .config import RunConfig


def to_uint8_nchw(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) in [-1, 1] -> uint8 (N, C, H, W) on the same device."""
    return ((x.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> uint8 numpy (N, H, W, C)."""
    return to_uint8_nchw(x).permute(0, 2, 3, 1).cpu().numpy()


def sample_inputs(
    cfg: RunConfig, n: int, seed: int, labels: Sequence[int] | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Noise (and labels) drawn on the CPU from `seed`, so they are the same on every device."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, cfg.model.z_dim, generator=gen)
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


@torch.no_grad()
def generate_images(
    netG: nn.Module,
    cfg: RunConfig,
    n: int,
    seed: int,
    labels: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """uint8 (N, H, W, C); the same (weights, n, seed, labels) always gives the same array."""
    z, y = sample_inputs(cfg, n, seed, labels)
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
