"""Architecture selection by name."""

from __future__ import annotations

from torch import nn

from .cnn import CNNDiscriminator, CNNGenerator
from .config import ModelConfig
from .resnet import ResNetDiscriminator, ResNetGenerator


def build_generator(cfg: ModelConfig) -> nn.Module:
    return ResNetGenerator(cfg) if cfg.arch.startswith("resnet") else CNNGenerator(cfg)


def build_discriminator(cfg: ModelConfig) -> nn.Module:
    return ResNetDiscriminator(cfg) if cfg.arch.startswith("resnet") else CNNDiscriminator(cfg)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
