"""Helpers of the learning test: a small classifier of the synthetic shapes and the statistics
computed with it (shared so a demo or benchmark can report the same numbers)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models import synthetic_shapes


def train_shape_classifier(resolution: int = 32, steps: int = 150, seed: int = 0) -> nn.Module:
    """A small CNN that recognises the synthetic classes; trained on fresh real images."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, 1, 1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, 1, 1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3, 1, 1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 4),
    )
    images, labels = synthetic_shapes(steps * 32, resolution, seed=seed + 100)
    x = torch.from_numpy(images).float().div(127.5).sub(1)
    y = torch.from_numpy(labels)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for i in range(steps):
        xb, yb = x[i * 32 : (i + 1) * 32], y[i * 32 : (i + 1) * 32]
        loss = F.cross_entropy(net(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


@torch.no_grad()
def shape_statistics(
    classifier: nn.Module, images_u8: np.ndarray, labels: np.ndarray | None = None
) -> dict[str, float]:
    """images uint8 (N, H, W, 3) -> how many the classifier recognises with confidence > 0.9,
    the smallest class share among those, and (given the conditioning labels) how many are
    recognised as the class they were asked for."""
    x = torch.from_numpy(images_u8).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    p = F.softmax(classifier(x), dim=1)
    conf, pred = p.max(dim=1)
    confident = conf > 0.9
    counts = torch.bincount(pred[confident], minlength=4).float()
    stats = {
        "confident": confident.float().mean().item(),
        "min_class_share": (counts.min() / max(1.0, counts.sum().item())).item(),
    }
    if labels is not None:
        hit = confident & (pred == torch.from_numpy(np.asarray(labels)))
        stats["label_match"] = hit.float().mean().item()
    return stats
