"""The paper's ResNet SN-GAN for CIFAR-10 (32x32) and STL-10 (48x48), Miyato et al. 2018 App. B.

G: Linear(z -> s*s*C) -> up-ResBlocks -> BN, ReLU, conv3x3, tanh.
D: optimized first block, down-ResBlocks, ReLU, global sum pooling, SN-Linear (+ projection).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .layers import Projection, batch_norm, init_weights, sn


class GBlock(nn.Module):
    """BN, ReLU, nearest 2x up, conv3x3, BN, ReLU, conv3x3; 1x1-conv shortcut on the upsampled x."""

    def __init__(self, in_ch: int, out_ch: int, num_classes: int) -> None:
        super().__init__()
        self.b1 = batch_norm(in_ch, num_classes)
        self.c1 = nn.Conv2d(in_ch, out_ch, 3, 1, 1)
        self.b2 = batch_norm(out_ch, num_classes)
        self.c2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1)
        self.c_sc = nn.Conv2d(in_ch, out_ch, 1, 1, 0)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        h = F.interpolate(F.relu(self.b1(x, y)), scale_factor=2.0, mode="nearest")
        h = self.c2(F.relu(self.b2(self.c1(h), y)))
        return h + self.c_sc(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DBlock(nn.Module):
    """ReLU, SN-conv3x3, ReLU, SN-conv3x3 [, avg-pool]; SN 1x1 shortcut when shape changes."""

    def __init__(self, in_ch: int, out_ch: int, downsample: bool) -> None:
        super().__init__()
        self.downsample = downsample
        self.c1 = sn(nn.Conv2d(in_ch, out_ch, 3, 1, 1))
        self.c2 = sn(nn.Conv2d(out_ch, out_ch, 3, 1, 1))
        self.c_sc = sn(nn.Conv2d(in_ch, out_ch, 1, 1, 0)) if downsample or in_ch != out_ch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c2(F.relu(self.c1(F.relu(x))))
        sc = x if self.c_sc is None else self.c_sc(x)
        if self.downsample:
            h, sc = F.avg_pool2d(h, 2), F.avg_pool2d(sc, 2)
        return h + sc


class OptimizedDBlock(nn.Module):
    """First D block: no leading ReLU, shortcut = SN-conv1x1(avg-pool(x))."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.c1 = sn(nn.Conv2d(in_ch, out_ch, 3, 1, 1))
        self.c2 = sn(nn.Conv2d(out_ch, out_ch, 3, 1, 1))
        self.c_sc = sn(nn.Conv2d(in_ch, out_ch, 1, 1, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.avg_pool2d(self.c2(F.relu(self.c1(x))), 2)
        return h + self.c_sc(F.avg_pool2d(x, 2))


class ResNetGenerator(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        n_cls = cfg.num_classes if cfg.conditional else 0
        if cfg.arch == "resnet32":
            ch = cfg.g_ch or 256
            widths = [ch, ch, ch, ch]  # 4 -> 8 -> 16 -> 32
            self.bottom = 4
        else:  # resnet48
            ch = cfg.g_ch or 64
            widths = [8 * ch, 4 * ch, 2 * ch, ch]  # 6 -> 12 -> 24 -> 48
            self.bottom = 6
        self.l1 = nn.Linear(cfg.z_dim, self.bottom * self.bottom * widths[0])
        pairs = zip(widths, widths[1:], strict=False)
        self.blocks = nn.ModuleList(GBlock(a, b, n_cls) for a, b in pairs)
        self.b_out = nn.BatchNorm2d(widths[-1])
        self.c_out = nn.Conv2d(widths[-1], cfg.channels, 3, 1, 1)
        init_weights(self)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.l1(z).view(z.shape[0], -1, self.bottom, self.bottom)  # (B, C, s, s)
        for block in self.blocks:
            h = block(h, y)
        return torch.tanh(self.c_out(F.relu(self.b_out(h))))  # (B, channels, R, R)


class ResNetDiscriminator(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.arch == "resnet32":
            ch = cfg.d_ch or 128
            blocks: list[nn.Module] = [
                OptimizedDBlock(cfg.channels, ch),
                DBlock(ch, ch, downsample=True),
                DBlock(ch, ch, downsample=False),
                DBlock(ch, ch, downsample=False),
            ]
            out_ch = ch
        else:  # resnet48: 64, 128, 256, 512 (down), 1024
            ch = cfg.d_ch or 64
            blocks = [
                OptimizedDBlock(cfg.channels, ch),
                DBlock(ch, 2 * ch, downsample=True),
                DBlock(2 * ch, 4 * ch, downsample=True),
                DBlock(4 * ch, 8 * ch, downsample=True),
                DBlock(8 * ch, 16 * ch, downsample=False),
            ]
            out_ch = 16 * ch
        self.blocks = nn.Sequential(*blocks)
        self.l_out = sn(nn.Linear(out_ch, 1, bias=False))
        self.projection = Projection(cfg.num_classes, out_ch) if cfg.conditional else None
        init_weights(self)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = F.relu(self.blocks(x)).sum(dim=(2, 3))  # global sum pooling: (B, C)
        out = self.l_out(h)  # (B, 1)
        if self.projection is not None and y is not None:
            out = out + self.projection(h, y)
        return out.squeeze(1)  # (B,)
