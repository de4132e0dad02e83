"""Latents beyond one seed: slerp's endpoints and norms, the truncation trick's bounds and
determinism, walks whose keyframes are the seeds' own samples, and class-weight inputs to the
conditional BN that give a class's parameters exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models import RunConfig, build_generator
from models.generate import generate_images, sample_inputs, walk_inputs
from models.latents import slerp, truncated_normal, walk, walk_length
from models.layers import ConditionalBatchNorm2d


def _cfg(conditional: bool = False) -> RunConfig:
    model: dict[str, object] = {"arch": "cnn32", "z_dim": 16, "g_ch": 4, "d_ch": 4}
    if conditional:
        model.update(conditional=True, num_classes=3)
    return RunConfig.from_dict({"model": model})


def test_slerp_endpoints_are_exact_and_equal_norms_stay() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 128, generator=gen)
    t = torch.linspace(0, 1, 9)
    path = slerp(a, b, t)
    assert torch.equal(path[0], a) and torch.equal(path[-1], b)
    # equal norms: every point of the arc keeps that norm (a lerp would shrink the middle)
    b_same = b * (a.norm() / b.norm())
    norms = slerp(a, b_same, t).norm(dim=1)
    assert torch.allclose(norms, a.norm().expand(9), rtol=1e-5)
    assert float((0.5 * a + 0.5 * b_same).norm()) < float(norms[4]) * 0.9
    # orthogonal unit vectors: the midpoint is at 45 degrees from each
    e0, e1 = torch.eye(2)
    mid = slerp(e0, e1, torch.tensor([0.5]))[0]
    assert torch.allclose(mid, torch.tensor([math.sqrt(0.5), math.sqrt(0.5)]))
    # parallel vectors are interpolated linearly instead of dividing by sin(0)
    assert torch.allclose(slerp(a, 2 * a, torch.tensor([0.5]))[0], 1.5 * a)


def test_truncation_bounds_and_determinism() -> None:
    def draw(t: float | None) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(7)
        z = truncated_normal(64, 128, gen, t)
        return z, torch.randn(4, generator=gen)  # what the RNG gives next (a label draw)

    z, _ = draw(0.5)
    assert float(z.abs().max()) <= 0.5
    assert torch.equal(z, draw(0.5)[0])
    assert not torch.equal(z, draw(0.6)[0])
    # truncated, not clamped: no mass piled up on the bounds
    assert int((z.abs() == 0.5).sum()) == 0
    # a t far in the tail redraws nothing: the untruncated numbers, the RNG where it was
    plain, after_plain = draw(None)
    far, after_far = draw(1e6)
    assert torch.equal(plain, far) and torch.equal(after_plain, after_far)
    with pytest.raises(ValueError, match="> 0"):
        draw(0.0)


def test_a_small_truncation_narrows_the_images_variety() -> None:
    cfg = _cfg()
    torch.manual_seed(0)
    netG = build_generator(cfg.model).eval()

    def spread(t: float | None) -> float:
        images = generate_images(netG, cfg, 64, seed=3, truncation=t).astype(np.float64)
        return float(images.std(axis=0).mean())  # per-pixel std across the 64 samples

    full, narrow = spread(None), spread(0.2)
    assert narrow < 0.6 * full
    assert np.array_equal(
        generate_images(netG, cfg, 8, seed=3, truncation=1e6),
        generate_images(netG, cfg, 8, seed=3),
    )


@pytest.mark.parametrize("loop", [False, True])
def test_walk_keyframes_are_the_seeds_samples(loop: bool) -> None:
    cfg = _cfg(conditional=True)
    seeds = [3, 17, 42]
    w = walk_inputs(cfg, seeds, frames=4, loop=loop, truncation=1.5)
    assert w.z.shape == (walk_length(3, 4, loop), 16)
    assert w.z.shape[0] == (12 if loop else 9)
    assert w.y is not None and w.y.shape == (w.z.shape[0], 3)
    for seed, frame in zip(seeds, w.keyframes, strict=True):
        z, y = sample_inputs(cfg, 1, seed, truncation=1.5)
        assert y is not None
        assert torch.equal(w.z[frame], z[0])
        assert torch.equal(w.y[frame], torch.eye(3)[int(y[0])])  # exactly one-hot
    assert torch.allclose(w.y.sum(dim=1), torch.ones(w.z.shape[0]))
    again = walk_inputs(cfg, seeds, frames=4, loop=loop, truncation=1.5)
    assert again.y is not None
    assert torch.equal(w.z, again.z) and torch.equal(w.y, again.y)
    # one label for the whole walk: every frame that class
    one = walk_inputs(cfg, seeds, frames=4, loop=loop, labels=[2])
    assert one.y is not None and torch.equal(one.y, torch.eye(3)[[2] * w.z.shape[0]])
    with pytest.raises(ValueError, match="entries"):
        walk_inputs(cfg, seeds, frames=4, labels=[0, 1])
    with pytest.raises(ValueError, match="at least 2"):
        walk(torch.zeros(1, 16), frames=4)


def test_class_weights_give_the_class_exactly_and_blend_between() -> None:
    cfg = _cfg(conditional=True)
    torch.manual_seed(1)
    netG = build_generator(cfg.model).eval()
    for bn in netG.modules():  # classes that differ, so a blend is visible
        if isinstance(bn, ConditionalBatchNorm2d):
            torch.nn.init.normal_(bn.gamma.weight, 1.0, 0.5)
            torch.nn.init.normal_(bn.beta.weight, 0.0, 0.5)
    z = torch.randn(4, 16, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2, 1])
    with torch.no_grad():
        by_label = netG(z, y)
        by_weight = netG(z, torch.eye(3)[y])
        half = netG(z, 0.5 * torch.eye(3)[[0] * 4] + 0.5 * torch.eye(3)[[2] * 4])
        ends = netG(z, torch.tensor([0] * 4)), netG(z, torch.tensor([2] * 4))
    assert torch.equal(by_label, by_weight)
    assert not torch.equal(half, ends[0]) and not torch.equal(half, ends[1])
