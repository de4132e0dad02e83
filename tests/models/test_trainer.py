"""The trainer: determinism, exact resume, sinks, stop, divergence, EMA, LR decay."""

import math

import pytest
import torch

from models import DivergedError, Trainer, TrainerSinks, list_checkpoints, load_checkpoint
from models.checkpoint import save_checkpoint

from .conftest import tiny_config


class Recorder(TrainerSinks):
    def __init__(self, stop_at: int | None = None) -> None:
        self.metrics: dict[int, dict[str, float]] = {}
        self.checkpoints: list[tuple[int, str, int]] = []
        self.removed: list[int] = []
        self.grids: list[int] = []
        self.stop_at = stop_at
        self.polls = 0  # should_stop is polled once after every step

    def on_metrics(self, step, metrics):
        self.metrics.setdefault(step, {}).update(metrics)

    def on_checkpoint(self, step, path, sha256, size_bytes):
        assert path.stat().st_size == size_bytes
        self.checkpoints.append((step, sha256, size_bytes))

    def on_checkpoint_removed(self, step, path):
        self.removed.append(step)

    def on_sample_grid(self, step, path):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        self.grids.append(step)

    def should_stop(self):
        self.polls += 1
        return self.stop_at is not None and self.polls >= self.stop_at


def losses(rec: Recorder) -> list[tuple[float, ...]]:
    return [
        tuple(rec.metrics[s][k] for k in ("loss_d", "loss_g", "d_real", "d_fake"))
        for s in sorted(rec.metrics)
    ]


@pytest.mark.parametrize("arch", ["cnn32", "resnet32"])
def test_same_seed_gives_identical_losses_for_20_steps(tmp_path, arch):
    runs = []
    for i in range(2):
        rec = Recorder()
        Trainer(tiny_config(model={"arch": arch}), tmp_path / str(i), sinks=rec, device="cpu").fit()
        runs.append(losses(rec))
    assert len(runs[0]) == 20
    assert runs[0] == runs[1]
    other = Recorder()
    Trainer(tiny_config(train={"seed": 4}), tmp_path / "other", sinks=other, device="cpu").fit()
    assert losses(other) != runs[0]


def test_every_step_reports_all_metrics_in_order(tmp_path):
    rec = Recorder()
    result = Trainer(tiny_config(), tmp_path, sinks=rec, device="cpu").fit()
    assert result.step == 20 and not result.stopped
    assert sorted(rec.metrics) == list(range(1, 21))
    for m in rec.metrics.values():
        assert set(m) == {"loss_d", "loss_g", "d_real", "d_fake", "lr", "steps_per_s"}
        assert all(math.isfinite(v) for v in m.values()) and m["steps_per_s"] > 0
    assert [c[0] for c in rec.checkpoints] == [5, 10, 15, 20]
    assert rec.grids == [10, 20]


def test_linear_lr_decay_reaches_zero(tmp_path):
    rec = Recorder()
    trainer = Trainer(tiny_config(), tmp_path, sinks=rec, device="cpu")
    trainer.fit()
    assert rec.metrics[1]["lr"] == pytest.approx(2e-4)
    assert rec.metrics[11]["lr"] == pytest.approx(2e-4 * (1 - 10 / 20))
    assert rec.metrics[20]["lr"] == pytest.approx(2e-4 / 20)  # the last step's LR
    assert trainer.optG.param_groups[0]["lr"] == pytest.approx(2e-4 / 20)
    assert trainer.optD.param_groups[0]["lr"] == pytest.approx(2e-4 / 20)
    assert trainer._lr_factor(20) == 0.0  # where the line ends
    assert trainer.optD.param_groups[0]["betas"] == (0.0, 0.9)


def _assert_same_state(a: Trainer, b: Trainer) -> None:
    for name in ("netG", "netD"):
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), f"{name}.{k}"
    for name in ("optG", "optD"):
        sa, sb = getattr(a, name).state_dict()["state"], getattr(b, name).state_dict()["state"]
        for k in sa:
            for kk in sa[k]:
                assert torch.equal(sa[k][kk], sb[k][kk]), f"{name}.{k}.{kk}"


# the EMA options: a fixed decay; and a ramped one starting late, with standing BN statistics
# recomputed (in place, from their own seed) at every checkpoint, the stop's included
RAMPED_EMA = {"ema_decay": 0.999, "ema_rampup": 0.05, "ema_start": 3, "ema_standing_stats": True}


@pytest.mark.parametrize(
    "arch,ema",
    [("cnn32", {}), ("resnet32", {"ema_decay": 0.999}), ("cnn32", RAMPED_EMA)],
    ids=["no-ema", "ema", "ramped-standing-ema"],
)
def test_resume_from_checkpoint_matches_an_uninterrupted_run(tmp_path, arch, ema):
    cfg = tiny_config(model={"arch": arch, "conditional": True, "num_classes": 4}, train=ema)
    full = Trainer(cfg, tmp_path / "full", sinks=Recorder(), device="cpu")
    full.fit()

    first = Recorder(stop_at=7)
    stopped = Trainer(cfg, tmp_path / "part", sinks=first, device="cpu").fit()
    assert stopped.stopped and stopped.step == 7
    assert stopped.checkpoint is not None and stopped.checkpoint.name == "step_00000007.pt"

    second = Recorder()
    resumed = Trainer(cfg, tmp_path / "part", sinks=second, device="cpu")
    result = resumed.fit(resume_from=stopped.checkpoint)
    assert result.step == 20 and sorted(second.metrics) == list(range(8, 21))
    _assert_same_state(full, resumed)
    if ema:
        assert full.ema_G is not None and resumed.ema_G is not None
        for k, v in full.ema_G.state_dict().items():
            assert torch.equal(v, resumed.ema_G.state_dict()[k])


def test_checkpoint_holds_everything_needed_to_continue(tmp_path):
    Trainer(tiny_config(train={"ema_decay": 0.99}), tmp_path, device="cpu").fit()
    state = load_checkpoint(tmp_path / "checkpoints" / "step_00000020.pt")
    for key in (
        "config",
        "step",
        "netG",
        "netD",
        "ema_G",
        "optG",
        "optD",
        "rng_cpu",
        "rng_python",
    ):
        assert state[key] is not None, key
    assert state["config"]["model"]["arch"] == "cnn32" and state["step"] == 20


def test_a_checkpoint_with_the_old_scheduler_entries_resumes_the_same(tmp_path):
    # checkpoints written before the LR became a function of the step alone hold
    # "schedG"/"schedD"; they are ignored, and resuming gives the numbers a new one gives
    cfg = tiny_config(train={"steps": 6}, checkpoint_every=3)
    Trainer(cfg, tmp_path / "run", device="cpu").fit()
    new = tmp_path / "run" / "checkpoints" / "step_00000003.pt"
    state = load_checkpoint(new)
    assert "schedG" not in state and "schedD" not in state
    state["schedG"] = {"kind": "linear", "base_lr": cfg.train.lr_g}
    state["schedD"] = {"kind": "linear", "base_lr": cfg.train.lr_d}
    old = tmp_path / "old" / "step_00000003.pt"
    save_checkpoint(state, old)

    from_new, from_old = Recorder(), Recorder()
    Trainer(cfg, tmp_path / "a", sinks=from_new, device="cpu").fit(resume_from=new)
    Trainer(cfg, tmp_path / "b", sinks=from_old, device="cpu").fit(resume_from=old)
    assert sorted(from_old.metrics) == [4, 5, 6]
    for step in (4, 5, 6):
        for name in ("loss_d", "loss_g", "lr"):
            assert from_old.metrics[step][name] == from_new.metrics[step][name], (step, name)


def test_keeps_the_last_k_checkpoints_plus_pinned_ones(tmp_path):
    rec = Recorder()
    cfg = tiny_config(keep_last=2, checkpoint_every=2)
    Trainer(cfg, tmp_path, sinks=rec, device="cpu", pinned_steps={4}).fit()
    kept = [s for s, _ in list_checkpoints(tmp_path / "checkpoints")]
    assert kept == [4, 18, 20]
    assert sorted(rec.removed) == [2, 6, 8, 10, 12, 14, 16]


def test_nan_losses_raise_diverged_and_keep_the_last_good_checkpoint(tmp_path, monkeypatch):
    cfg = tiny_config(train={"steps": 12})
    trainer = Trainer(cfg, tmp_path, device="cpu")
    real_step = trainer.train_step

    def poisoned() -> torch.Tensor:
        out = real_step()
        if trainer.step >= 7:  # step 8 onwards: a non-finite loss, as a diverging run gives
            out = out * float("nan")
        return out

    monkeypatch.setattr(trainer, "train_step", poisoned)
    with pytest.raises(DivergedError) as err:
        trainer.fit()
    assert err.value.step == 8
    assert [s for s, _ in list_checkpoints(tmp_path / "checkpoints")] == [5]


def test_should_stop_writes_a_checkpoint_of_the_current_step(tmp_path):
    rec = Recorder(stop_at=3)
    result = Trainer(tiny_config(), tmp_path, sinks=rec, device="cpu").fit()
    assert result.stopped and result.step == 3
    assert rec.checkpoints[-1][0] == 3


def test_zero_periods_turn_periodic_checkpoints_and_grids_off(tmp_path):
    rec = Recorder()
    Trainer(
        tiny_config(checkpoint_every=0, sample_every=0), tmp_path, sinks=rec, device="cpu"
    ).fit()
    assert [c[0] for c in rec.checkpoints] == [20]  # the last step always gets one
    assert rec.grids == [20]
