"""The fast path computes what the eager path computes.

The fast path on a CPU differs from the eager one by the joint D forward on cat(real, fake)
(on CUDA also bf16, channels_last, fused Adam and CUDA graphs, which need a GPU to test).
"""

import pytest
import torch

from models import SpeedConfig, Trainer

from .conftest import tiny_config
from .test_spectral_norm import sigma_max, sn_weights
from .test_trainer import Recorder, losses


def _both_paths(tmp_path, arch: str) -> dict[str, tuple[list, Trainer]]:
    runs = {}
    for mode, speed in (("fast", SpeedConfig()), ("eager", SpeedConfig.eager())):
        cfg = tiny_config(
            model={"arch": arch, "conditional": True, "num_classes": 4},
            train={"precision": "fp32"},
        )
        cfg.speed = speed
        rec = Recorder()
        trainer = Trainer(cfg, tmp_path / mode, sinks=rec, device="cpu")
        trainer.fit()
        runs[mode] = (losses(rec), trainer)
    return runs


def _assert_close(fast: list, eager: list, rel: float) -> None:
    for step, (a, b) in enumerate(zip(fast, eager, strict=True), start=1):
        for x, y in zip(a, b, strict=True):
            assert x == pytest.approx(y, rel=rel), step


@pytest.mark.parametrize("arch", ["cnn32", "resnet32"])
def test_fast_and_eager_paths_are_the_same_mathematics(tmp_path, arch):
    """In float64 rounding cannot hide a difference: 20 steps agree to 1e-9."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        runs = _both_paths(tmp_path, arch)
    finally:
        torch.set_default_dtype(default)
    fast, eager = runs["fast"][0], runs["eager"][0]
    assert len(fast) == len(eager) == 20
    _assert_close(fast, eager, rel=1e-9)


def test_fast_and_eager_paths_agree_in_fp32(tmp_path):
    """In fp32 they agree to 1e-4 while rounding noise is small. Adam with beta1 = 0 divides
    each gradient by its own running RMS, which amplifies the ~1e-7 differences of a
    batch-of-2B versus two batches-of-B forward to ~1e-3 after 6-20 steps (measured), so the
    bitwise-level comparison covers the first five steps; the float64 test covers all 20."""
    runs = _both_paths(tmp_path, "cnn32")
    fast, eager = runs["fast"][0], runs["eager"][0]
    _assert_close(fast[:5], eager[:5], rel=1e-4)
    netD = runs["fast"][1].netD.eval()
    for name, w in sn_weights(netD).items():
        assert sigma_max(w) == pytest.approx(1.0, abs=0.1), name
