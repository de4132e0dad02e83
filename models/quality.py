"""Classifier-judged sample quality on data the project generates.

A small CNN trained on real images of a generated family (the synthetic shapes, or the digit
glyphs below) judges samples: the share it recognises with confidence > 0.9, and the smallest
class share among those (0 when a class is never made). The learning test, the EMA test and
bench/quality.py report these same numbers.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import RunConfig
from .data import synthetic_shapes
from .generate import generate_images

Family = Callable[[int, int, int], tuple[np.ndarray, np.ndarray]]  # (n, resolution, seed)


def synthetic_glyphs(n: int, resolution: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The digits 0-9 rendered with Pillow's scalable default font: size, position, rotation,
    stroke width and colours jittered, and the colour independent of the class (unlike the
    shapes), so only the glyph's form tells the classes apart. uint8 (N, 3, R, R), labels."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    r = resolution
    fonts: dict[int, ImageFont.FreeTypeFont | ImageFont.ImageFont] = {}
    out = np.empty((n, 3, r, r), dtype=np.uint8)
    for i, label in enumerate(labels):
        size = int(rng.integers(int(0.6 * r), int(0.85 * r) + 1))
        font = fonts.setdefault(size, ImageFont.load_default(size=size))
        bg = tuple(int(v) for v in rng.integers(0, 60, 3))
        fg = tuple(int(v) for v in rng.integers(140, 256, 3))
        tile = Image.new("RGB", (2 * r, 2 * r), bg)
        draw = ImageDraw.Draw(tile)
        centre = (r + rng.uniform(-0.12, 0.12) * r, r + rng.uniform(-0.12, 0.12) * r)
        width = int(rng.integers(0, 2))
        draw.text(
            centre, str(label), fill=fg, font=font, anchor="mm", stroke_width=width, stroke_fill=fg
        )
        angle = float(rng.uniform(-15, 15))
        tile = tile.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=bg)
        crop = tile.crop((r // 2, r // 2, r // 2 + r, r // 2 + r))
        out[i] = np.asarray(crop).transpose(2, 0, 1)
    return out, labels.astype(np.int64)


FAMILIES: dict[str, tuple[Family, int]] = {  # name -> (generator, number of classes)
    "shapes": (synthetic_shapes, 4),
    "glyphs": (synthetic_glyphs, 10),
}


def train_classifier(
    family: str = "shapes", resolution: int = 32, steps: int = 150, seed: int = 0
) -> nn.Module:
    """A small CNN that recognises `family`'s classes; trained on fresh real images (from a
    seed no training set here uses). Its last output is a reject class, trained on images
    with the family's colours but no form (each real image's pixels shuffled) and on smooth
    noise: without it, a blob of a class's colour or plain noise passes as that class."""
    make, num_classes = FAMILIES[family]
    torch.manual_seed(seed)
    width = 16 if num_classes <= 4 else 32
    net = nn.Sequential(
        nn.Conv2d(3, width // 2, 3, 1, 1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width // 2, width, 3, 1, 1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, width, 3, 1, 1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),  # keeps where the strokes are: a digit is its layout
        nn.Flatten(),
        nn.Linear(width * 16, num_classes + 1),
    )
    images, labels = make(steps * 32, resolution, seed + 100)
    x = torch.from_numpy(images).float().div(127.5).sub(1)
    y = torch.from_numpy(labels)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for i in range(steps):
        xb, yb = x[i * 32 : (i + 1) * 32], y[i * 32 : (i + 1) * 32]
        xn = _formless(xb[:8], gen)
        xb = torch.cat([xb, xn])
        yb = torch.cat([yb, torch.full((len(xn),), num_classes)])
        loss = F.cross_entropy(net(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def _formless(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Reject-class examples: half of `x` with each image's pixels shuffled, half smooth noise
    (random 4x4 colours upsampled)."""
    n, c, h, w = x.shape
    half = n // 2
    flat = x[:half].flatten(2)
    perm = torch.argsort(torch.rand(half, h * w, generator=gen), dim=1)
    shuffled = flat.gather(2, perm[:, None].expand(-1, c, -1)).view(half, c, h, w)
    coarse = torch.rand(n - half, c, 4, 4, generator=gen) * 2 - 1
    smooth = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return torch.cat([shuffled, smooth])


@torch.no_grad()
def classifier_statistics(
    classifier: nn.Module, images_u8: np.ndarray, labels: np.ndarray | None = None
) -> dict[str, float]:
    """images uint8 (N, H, W, 3) -> how many the classifier recognises with confidence > 0.9,
    the smallest class share among those, and (given the conditioning labels) how many are
    recognised as the class they were asked for."""
    x = torch.from_numpy(images_u8).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    p = F.softmax(classifier(x), dim=1)[:, :-1]  # the reject class is never a recognition
    conf, pred = p.max(dim=1)
    confident = conf > 0.9
    counts = torch.bincount(pred[confident], minlength=p.shape[1]).float()
    stats = {
        "confident": confident.float().mean().item(),
        "min_class_share": (counts.min() / max(1.0, counts.sum().item())).item(),
    }
    if labels is not None:
        hit = confident & (pred == torch.from_numpy(np.asarray(labels)))
        stats["label_match"] = hit.float().mean().item()
    return stats


def judge(
    netG: nn.Module, cfg: RunConfig, classifier: nn.Module, n: int = 500, seed: int = 12345
) -> dict[str, float]:
    """`classifier_statistics` of `n` samples of `netG` in eval mode; the same noise for every
    generator of a config, so generators are compared on equal draws."""
    was_training = netG.training
    netG.eval()
    try:
        images = generate_images(netG, cfg, n, seed=seed)
    finally:
        netG.train(was_training)
    return classifier_statistics(classifier, images)
