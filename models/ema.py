"""The exponential moving average of the generator's weights, and its batch-norm statistics.

The average never feeds back into training: it reads G's weights after each G update.

- Horizon: a decay d averages over a half-life of ln 0.5 / ln d steps (693 for 0.999). A
  fixed 0.999 from step 1 still holds ~half its weight in the first 700 steps' poor weights
  at step 700 (0.999^700 = 0.5): that is what made the EMA samples worse than the plain
  generator's. `ema_rampup` caps the half-life at that share of the steps done (as
  stylegan2-ada's `ema_rampup`), and `ema_start` starts averaging late (as BigGAN and
  StudioGAN): until it, the average is a copy of G.
- Batch norm: the average's running statistics are copied from G, whose weights are not the
  average's. `ema_standing_stats` recomputes them for the averaged weights ("standing
  statistics", as BigGAN and StudioGAN): forward passes in train mode with a cumulative
  mean, on noise from a seed of their own (the training RNG streams are not touched).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import RunConfig, TrainConfig

STANDING_BATCHES = 16
STANDING_BATCH_SIZE = 64


def ema_decay_at(tc: TrainConfig, step: int) -> float:
    """The decay of the EMA update that ends generator step `step` (1-based); 0 copies G."""
    if tc.ema_decay is None:
        raise ValueError("no EMA configured")
    if step <= tc.ema_start:
        return 0.0
    if tc.ema_rampup is None:
        return tc.ema_decay
    half_life = min(math.log(0.5) / math.log(tc.ema_decay), tc.ema_rampup * step)
    return 0.5 ** (1.0 / max(half_life, 1e-8))


@torch.no_grad()
def update_ema(ema_G: nn.Module, netG: nn.Module, weight: torch.Tensor) -> None:
    """ema += weight * (G - ema) for every parameter; buffers (BN statistics) are copied.

    `weight` (1 - decay) is a 0-dim tensor on the device, filled before each step, so a
    CUDA graph that captured this update reads the step's decay on every replay.
    """
    ema_p: list[torch.Tensor] = list(ema_G.parameters())
    params: list[torch.Tensor] = list(netG.parameters())
    torch._foreach_lerp_(ema_p, params, [weight] * len(ema_p))
    for b_ema, b in zip(ema_G.buffers(), netG.buffers(), strict=True):
        b_ema.copy_(b)


def _batch_norms(net: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def standing_statistics(netG: nn.Module, cfg: RunConfig, seed: int) -> None:
    """Recompute the running mean and variance of every batch norm of `netG`, in place, as
    the exact average over `STANDING_BATCHES` batches of its own samples (train-mode
    forwards, momentum None); the weights are not changed. Noise is drawn on the CPU from
    `seed`, so the statistics do not depend on the device's RNG."""
    norms = _batch_norms(netG)
    if not norms:
        return
    device = next(netG.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    momenta = [m.momentum for m in norms]
    was_training = netG.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average of the batches below
    netG.train()
    try:
        for _ in range(STANDING_BATCHES):
            z = torch.randn(STANDING_BATCH_SIZE, cfg.model.z_dim, generator=gen)
            y = None
            if cfg.model.conditional:
                y = torch.randint(cfg.model.num_classes, (STANDING_BATCH_SIZE,), generator=gen)
                y = y.to(device)
            netG(z.to(device), y)
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        netG.train(was_training)
