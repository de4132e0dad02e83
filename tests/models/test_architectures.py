"""The paper's architectures: pinned parameter counts, shapes, spectral norm where it belongs."""

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from models import ARCHS, ModelConfig, build_discriminator, build_generator, count_parameters
from models.cnn import CNNGenerator
from models.resnet import GBlock, ResNetDiscriminator, ResNetGenerator

# faithful public ports of Miyato et al. 2018 have exactly these counts (z_dim 128, paper widths)
PINNED = {
    "resnet32": (4_276_739, 1_053_824),
    "cnn32": (3_813_379, 5_860_865),
}


@pytest.mark.parametrize("arch", sorted(PINNED))
def test_parameter_counts_match_the_paper_models(arch):
    cfg = ModelConfig(arch=arch, z_dim=128)
    assert count_parameters(build_generator(cfg)) == PINNED[arch][0]
    assert count_parameters(build_discriminator(cfg)) == PINNED[arch][1]


def test_stl10_models_follow_the_appendix_widths():
    cfg = ModelConfig(arch="resnet48")
    netG, netD = build_generator(cfg), build_discriminator(cfg)
    assert isinstance(netG, ResNetGenerator) and isinstance(netD, ResNetDiscriminator)
    assert netG.l1.out_features == 6 * 6 * 512  # starts from 6x6
    blocks = [block for block in netG.blocks if isinstance(block, GBlock)]
    assert [block.c1.out_channels for block in blocks] == [256, 128, 64]
    assert netD.l_out.in_features == 1024  # 64, 128, 256, 512, 1024
    cnn = build_generator(ModelConfig(arch="cnn48"))
    assert isinstance(cnn, CNNGenerator) and cnn.l1.out_features == 6 * 6 * 512


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes(arch, conditional, channels):
    cfg = ModelConfig(
        arch=arch,
        z_dim=16,
        g_ch=8,
        d_ch=8,
        conditional=conditional,
        num_classes=5 if conditional else 0,
        channels=channels,
    )
    netG, netD = build_generator(cfg), build_discriminator(cfg)
    z = torch.randn(3, 16)
    y = torch.tensor([0, 4, 2]) if conditional else None
    x = netG(z, y)
    r = ARCHS[arch]
    assert x.shape == (3, channels, r, r)
    assert x.abs().max() <= 1.0  # tanh output
    assert netD(x, y).shape == (3,)


def _has_sn(m: nn.Module) -> bool:
    return parametrize.is_parametrized(m, "weight")


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_every_discriminator_weight_is_spectrally_normalized_and_no_generator_weight(arch):
    cfg = ModelConfig(arch=arch, g_ch=8, d_ch=8, conditional=True, num_classes=3)
    netD, netG = build_discriminator(cfg), build_generator(cfg)
    weighted = [m for m in netD.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding))]
    assert weighted and all(_has_sn(m) for m in weighted)
    assert any(isinstance(m, nn.Embedding) for m in weighted)  # the projection's embedding
    assert not any(_has_sn(m) for m in netG.modules())


def test_conditional_generator_uses_the_label():
    cfg = ModelConfig(arch="resnet32", z_dim=16, g_ch=8, conditional=True, num_classes=4)
    netG = build_generator(cfg).eval()
    for m in netG.modules():  # make the class embeddings differ from the identity init
        if isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight)
    z = torch.randn(1, 16).repeat(2, 1)
    x = netG(z, torch.tensor([0, 3]))
    assert not torch.allclose(x[0], x[1])
