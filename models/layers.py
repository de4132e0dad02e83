"""Building blocks shared by the architectures: spectral norm, conditional BN, projection."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def sn(module: nn.Module) -> nn.Module:
    """W_SN = W / sigma(W), sigma by one power iteration per training forward with a persistent u.

    The parametrization (not the deprecated hook) so the update survives torch.compile and
    CUDA-graph capture; in eval mode the stored u, v are used and not updated. The weight is
    initialised first, so the power iterations run at registration start from the real W.
    """
    _xavier(module)
    return spectral_norm(module, n_power_iterations=1, eps=1e-12)


def _xavier(m: nn.Module) -> None:
    weight = m.weight
    assert isinstance(weight, torch.Tensor)
    nn.init.xavier_uniform_(weight)
    bias = getattr(m, "bias", None)
    if bias is not None:
        nn.init.zeros_(bias)


class ConditionalBatchNorm2d(nn.Module):
    """BN without its own affine; per-class gamma/beta from embeddings (Miyato & Koyama 2018)."""

    def __init__(self, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, affine=False)
        self.gamma = nn.Embedding(num_classes, num_features)
        self.beta = nn.Embedding(num_classes, num_features)
        nn.init.ones_(self.gamma.weight)
        nn.init.zeros_(self.beta.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """`y`: class indices (B,), or class weights (B, num_classes) whose gamma/beta are the
        weighted sums of the classes' (a walk between two classes); a one-hot row gives its
        class's parameters exactly (the other terms are exact zeros)."""
        h = self.bn(x)  # (B, C, H, W)
        if y.dim() == 2:
            gamma, beta = y @ self.gamma.weight, y @ self.beta.weight  # (B, C)
        else:
            gamma, beta = self.gamma(y), self.beta(y)
        return gamma[:, :, None, None] * h + beta[:, :, None, None]


class BatchNorm2d(nn.BatchNorm2d):
    """Plain BN with the conditional BN's call signature, so blocks need no branches."""

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x)


def batch_norm(num_features: int, num_classes: int) -> nn.Module:
    if num_classes > 0:
        return ConditionalBatchNorm2d(num_features, num_classes)
    return BatchNorm2d(num_features)


class Projection(nn.Module):
    """The projection discriminator's class term: <SN-embed(y), phi(x)> (Miyato & Koyama 2018)."""

    def __init__(self, num_classes: int, num_features: int) -> None:
        super().__init__()
        self.embed = sn(nn.Embedding(num_classes, num_features))

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (self.embed(y) * h).sum(dim=1, keepdim=True)  # (B, 1)


def init_weights(module: nn.Module) -> None:
    """Xavier-uniform init for the generator's convs and linears, as the reference ports do.

    Spectrally normalized layers were initialised by `sn` and are left alone: re-initialising
    them here would leave their stored power-iteration vectors stale.
    """
    for m in module.modules():
        plain = not hasattr(m, "parametrizations")
        if plain and isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            _xavier(m)
