"""GAN losses on raw discriminator outputs: hinge (the paper's default) and non-saturating."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def d_loss(loss: str, d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    if loss == "hinge":
        return F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()
    return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()


def g_loss(loss: str, d_fake: torch.Tensor) -> torch.Tensor:
    if loss == "hinge":
        return -d_fake.mean()
    return F.softplus(-d_fake).mean()
