"""The CUDA fast path (bf16, channels_last, fused Adam, whole-step CUDA graphs).

Skipped where no GPU is present (CI has none); run on a lent GPU with
`python -m pytest -c /dev/null --rootdir . tests/models/test_cuda.py`.
"""

import math

import pytest
import torch

from models import SpeedConfig, Trainer, load_checkpoint

from .conftest import tiny_config
from .test_spectral_norm import sigma_max, sn_weights
from .test_trainer import Recorder, losses

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _cfg(speed: SpeedConfig, **train):
    cfg = tiny_config(
        model={"arch": "resnet32", "g_ch": 32, "d_ch": 32, "conditional": True, "num_classes": 4},
        train={"batch_size": 32, "n_dis": 2, "ema_decay": 0.999, **train},
    )
    cfg.speed = speed
    return cfg


def test_graphs_compute_what_the_eager_loop_computes(tmp_path):
    """Same seed, fp32, deterministic cuDNN: replays draw the same noise and batches as the
    eager loop, so the losses agree (up to rounding that Adam amplifies after a few steps)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    runs = {}
    try:
        for mode, graphs in (("graphs", True), ("eager", False)):
            speed = SpeedConfig(channels_last=False, fused_adam=True, cuda_graphs=graphs)
            rec = Recorder()
            trainer = Trainer(
                _cfg(speed, precision="fp32"), tmp_path / mode, sinks=rec, device="cuda"
            )
            trainer.fit()
            runs[mode] = losses(rec)
    finally:
        torch.backends.cudnn.deterministic = False
    assert len(runs["graphs"]) == 20
    print("graphs", runs["graphs"][:4], "eager", runs["eager"][:4])
    for a, b in zip(runs["graphs"][:3], runs["eager"][:3], strict=True):
        assert a == pytest.approx(b, rel=1e-3)
    assert all(math.isfinite(v) for row in runs["graphs"] for v in row)


def test_graph_path_keeps_sigma_one_advances_lr_and_resumes(tmp_path):
    rec = Recorder(stop_at=12)
    trainer = Trainer(_cfg(SpeedConfig()), tmp_path, sinks=rec, device="cuda")
    assert trainer.use_graphs and trainer.use_bf16 and trainer.channels_last
    result = trainer.fit()
    assert result.stopped and result.step == 12
    lrs = [rec.metrics[s]["lr"] for s in sorted(rec.metrics)]
    assert lrs == sorted(lrs, reverse=True) and lrs[0] > lrs[-1]
    assert trainer.optG.param_groups[0]["lr"].item() == pytest.approx(lrs[-1], rel=1e-5)
    netD = trainer.netD
    netD.eval()
    for name, w in sn_weights(netD).items():
        assert sigma_max(w.float()) == pytest.approx(1.0, abs=0.1), name
    # u moved during replays: the checkpointed u differs from the initial one
    assert result.checkpoint is not None
    state = load_checkpoint(result.checkpoint)
    assert state["step"] == 12
    second = Recorder()
    resumed = Trainer(_cfg(SpeedConfig()), tmp_path, sinks=second, device="cuda")
    out = resumed.fit(resume_from=result.checkpoint)
    assert out.step == 20 and sorted(second.metrics) == list(range(13, 21))
    assert all(math.isfinite(v) for m in second.metrics.values() for v in m.values())


def test_warmup_before_capture_changes_nothing(tmp_path):
    trainer = Trainer(_cfg(SpeedConfig()), tmp_path, device="cuda")
    before = {k: v.clone() for k, v in trainer.netG.state_dict().items()}
    trainer._graphs = trainer._capture()
    after = trainer.netG.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k


def test_compiled_graphs_compute_what_the_eager_loop_computes(tmp_path):
    """torch.compile'd G and D inside the captured steps: same losses on the same stream."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    runs = {}
    for mode, compiled in (("compiled", True), ("eager", False)):
        speed = SpeedConfig(
            channels_last=False, fused_adam=True, cuda_graphs=True, compile=compiled
        )
        rec = Recorder()
        Trainer(
            _cfg(speed, precision="fp32", steps=6), tmp_path / mode, sinks=rec, device="cuda"
        ).fit()
        runs[mode] = losses(rec)
    print("compiled", runs["compiled"][:3], "eager", runs["eager"][:3])
    for a, b in zip(runs["compiled"][:2], runs["eager"][:2], strict=True):
        assert a == pytest.approx(b, rel=1e-3)
