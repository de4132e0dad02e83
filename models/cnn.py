"""The paper's standard CNN SN-GAN (Miyato et al. 2018, Table 3), for 32x32 and 48x48.

G: Linear(z -> s*s*8g), BN, ReLU, three 4x4 stride-2 deconvs (8g -> 4g -> 2g -> g) with BN+ReLU,
conv3x3 to the image channels, tanh. D: seven SN-convs with leaky ReLU 0.1, SN-Linear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .layers import Projection, batch_norm, init_weights, sn


class CNNGenerator(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        n_cls = cfg.num_classes if cfg.conditional else 0
        g = cfg.g_ch or 64
        self.bottom = cfg.resolution // 8
        widths = [8 * g, 4 * g, 2 * g, g]
        self.l1 = nn.Linear(cfg.z_dim, self.bottom * self.bottom * widths[0])
        self.bns = nn.ModuleList(batch_norm(w, n_cls) for w in widths)
        self.deconvs = nn.ModuleList(
            nn.ConvTranspose2d(a, b, 4, 2, 1) for a, b in zip(widths, widths[1:], strict=False)
        )
        self.c_out = nn.Conv2d(widths[-1], cfg.channels, 3, 1, 1)
        init_weights(self)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.l1(z).view(z.shape[0], -1, self.bottom, self.bottom)  # (B, 8g, s, s)
        h = F.relu(self.bns[0](h, y))
        for deconv, bn in zip(self.deconvs, self.bns[1:], strict=True):
            h = F.relu(bn(deconv(h), y))
        return torch.tanh(self.c_out(h))  # (B, channels, R, R)


class CNNDiscriminator(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_ch or 64
        # (in, out, kernel, stride): 3x3/1 convs keep the size, 4x4/2 convs halve it
        spec = [
            (cfg.channels, d, 3, 1),
            (d, 2 * d, 4, 2),
            (2 * d, 2 * d, 3, 1),
            (2 * d, 4 * d, 4, 2),
            (4 * d, 4 * d, 3, 1),
            (4 * d, 8 * d, 4, 2),
            (8 * d, 8 * d, 3, 1),
        ]
        self.convs = nn.ModuleList(
            sn(nn.Conv2d(a, b, k, s, (k - 1) // 2 if s == 1 else 1)) for a, b, k, s in spec
        )
        bottom = cfg.resolution // 8
        self.l_out = sn(nn.Linear(bottom * bottom * 8 * d, 1))
        self.projection = Projection(cfg.num_classes, 8 * d) if cfg.conditional else None
        init_weights(self)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = x
        for conv in self.convs:
            h = F.leaky_relu(conv(h), 0.1)  # (B, 8d, s, s) at the end
        out = self.l_out(h.flatten(1))  # (B, 1)
        if self.projection is not None and y is not None:
            out = out + self.projection(h.sum(dim=(2, 3)), y)
        return out.squeeze(1)  # (B,)
