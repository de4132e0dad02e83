"""An informative stand-in for the Inception weights file, made by the tests themselves.

The real file cannot be downloaded here. This one has torch-fidelity's InceptionV3 keys and
shapes, a seeded random init, and is calibrated so that it measures something: with
PyTorch's default init every layer shrinks its input and the pool features of any two
images come out equal (IS 1.0, FID ~1e-16 between unlike images). So, layer by layer in one
forward pass over a few varied images, each batch norm's running mean and variance are set
to the statistics of its input (every conv's output then has unit scale), and the logits
layer is scaled to a spread of a few units, so that IS can rise above 1.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from torch import nn

SEED = 1234


def _architecture() -> nn.Module:
    """torch-fidelity's InceptionV3 with PyTorch's default init (seeded by the caller)."""
    from torch_fidelity.feature_extractor_inceptionv3 import (
        BasicConv2d,
        FeatureExtractorInceptionV3,
        InceptionA,
        InceptionB,
        InceptionC,
        InceptionD,
        InceptionE_1,
        InceptionE_2,
    )

    # the constructor's layer list, built without its weights file (it would download one)
    blank = nn.Module()
    layers: dict[str, nn.Module] = {
        "Conv2d_1a_3x3": BasicConv2d(3, 32, kernel_size=3, stride=2),
        "Conv2d_2a_3x3": BasicConv2d(32, 32, kernel_size=3),
        "Conv2d_2b_3x3": BasicConv2d(32, 64, kernel_size=3, padding=1),
        "Conv2d_3b_1x1": BasicConv2d(64, 80, kernel_size=1),
        "Conv2d_4a_3x3": BasicConv2d(80, 192, kernel_size=3),
        "Mixed_5b": InceptionA(192, pool_features=32),
        "Mixed_5c": InceptionA(256, pool_features=64),
        "Mixed_5d": InceptionA(288, pool_features=64),
        "Mixed_6a": InceptionB(288),
        "Mixed_6b": InceptionC(768, channels_7x7=128),
        "Mixed_6c": InceptionC(768, channels_7x7=160),
        "Mixed_6d": InceptionC(768, channels_7x7=160),
        "Mixed_6e": InceptionC(768, channels_7x7=192),
        "Mixed_7a": InceptionD(768),
        "Mixed_7b": InceptionE_1(1280),
        "Mixed_7c": InceptionE_2(2048),
        "fc": nn.Linear(2048, 1008),
    }
    for name, layer in layers.items():
        blank.add_module(name, layer)
    buf = io.BytesIO()
    torch.save(blank.state_dict(), buf)
    buf.seek(0)
    # the real class, so that its forward (and its strict load: same keys, same shapes) is used
    return FeatureExtractorInceptionV3(
        "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=buf
    )


def calibration_images(n: int = 12, size: int = 32) -> torch.Tensor:
    """uint8 (n, 3, size, size): noise, gradients and flat colours, so no layer sees one kind."""
    g = torch.Generator().manual_seed(SEED)
    ramp = torch.linspace(0, 255, size)
    out = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            img = torch.randint(0, 256, (3, size, size), generator=g).float()
        elif kind == 1:
            c = torch.rand(3, 1, 1, generator=g)
            img = c * (ramp.view(1, 1, -1) if i % 2 else ramp.view(1, -1, 1)).expand(3, size, size)
        else:
            img = (torch.rand(3, 1, 1, generator=g) * 255).expand(3, size, size)
        out.append(img.round().clamp(0, 255).to(torch.uint8))
    return torch.stack(out)


@torch.no_grad()
def make_test_inception_weights(path: Path) -> Path:
    """Write the calibrated state dict to `path` (deterministic: same bytes of weights)."""
    torch.manual_seed(SEED)
    net = _architecture()

    def calibrate(bn: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        assert isinstance(bn, nn.BatchNorm2d)
        assert bn.running_mean is not None and bn.running_var is not None
        x = args[0]  # (N, C, H, W), the conv's output
        bn.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        bn.running_var.copy_(x.var(dim=(0, 2, 3)))

    hooks = [
        m.register_forward_pre_hook(calibrate)
        for m in net.modules()
        if isinstance(m, nn.BatchNorm2d)
    ]
    pool, logits = net(calibration_images())
    for h in hooks:
        h.remove()
    # logits = pool @ fc.weight.T: give them a spread of ~3 across classes
    fc = net.get_submodule("fc")
    assert isinstance(fc, nn.Linear)
    fc.weight.mul_(3.0 / float(logits.std()))
    torch.save(net.state_dict(), path)
    return path


def fidelity_or_skip() -> None:
    """Skip where torch-fidelity does not import (the main .venv's CPU torch has no matching
    torchvision); where SNGAN_EVAL_TESTS=required (scripts/run test, in .venv-eval), fail."""
    import os

    import pytest

    try:
        import torch_fidelity  # noqa: F401
    except Exception as e:
        if os.environ.get("SNGAN_EVAL_TESTS") == "required":
            pytest.fail(f"torch-fidelity does not import in this environment: {e}")
        pytest.skip(
            f"torch-fidelity does not import here (scripts/run test runs these in .venv-eval): {e}"
        )


def shared_weights(base: Path) -> Path:
    """The weights file for a whole test session, made once under pytest's base temp dir."""
    path = base / "inception-test-weights.pth"
    if not path.is_file():
        tmp = path.with_name(path.name + ".tmp")
        make_test_inception_weights(tmp)
        tmp.replace(path)
    return path


if __name__ == "__main__":  # a stand-in file for bench/eval_cost.py: same architecture, same cost
    import sys

    print(make_test_inception_weights(Path(sys.argv[1])))
