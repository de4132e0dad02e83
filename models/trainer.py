"""The SN-GAN training loop (Miyato et al. 2018), reporting through sinks.

Per generator step: `n_dis` discriminator updates on batches of `batch_size` real and fake
images, then one generator update on `2 * batch_size` samples (as the official code does),
Adam(2e-4, betas (0, 0.9)) and the learning rates decayed linearly to 0 over `steps`.

The trainer knows nothing of databases: it calls `TrainerSinks` and polls `should_stop()`
between steps. Losses stay on the device and are read back every `log_every` steps (and
before every checkpoint), so the loop does not wait on the device each step.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from .checkpoint import (
    checkpoint_name,
    list_checkpoints,
    load_checkpoint,
    remove_checkpoint,
    save_checkpoint,
)
from .config import RunConfig
from .data import ImageDataset, load_dataset, scale
from .device import resolve_device
from .ema import ema_decay_at, standing_statistics, update_ema
from .generate import image_grid, save_png, to_uint8
from .graphs import GraphSteps
from .losses import d_loss, g_loss
from .nets import build_discriminator, build_generator
from .sinks import EMA_SUFFIX, DivergedError, TrainerSinks, TrainResult

if TYPE_CHECKING:
    from .evaluation import Evaluator

log = logging.getLogger(__name__)

LOSS_NAMES = ("loss_d", "loss_g", "d_real", "d_fake")
GRID_SIZE = 64


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


class Trainer(GraphSteps):
    def __init__(
        self,
        config: RunConfig,
        out_dir: Path | str,
        sinks: TrainerSinks | None = None,
        device: str | torch.device = "auto",
        dataset: ImageDataset | None = None,
        pinned_steps: tuple[int, ...] | set[int] = (),
        inception_weights: Path | None = None,
    ) -> None:
        self.cfg = config
        self.out_dir = Path(out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.sample_dir = self.out_dir / "samples"
        self.sinks = sinks or TrainerSinks()
        self.device = resolve_device(device)
        self.pinned_steps = set(pinned_steps)
        self.inception_weights = inception_weights
        tc, mc = config.train, config.model
        self.use_bf16 = tc.precision == "bf16" or (
            tc.precision == "auto" and self.device.type == "cuda"
        )
        # the best checkpoint by G's FID (lowest) and its value: pinned against keep-last-K
        self.best: tuple[int, float] | None = None
        self.evaluator: Evaluator | None = None
        if config.eval.every > 0:
            from .evaluation import Evaluator, check_evaluation_available

            # before any training: a missing or wrong weights file fails the job now
            weights = check_evaluation_available(inception_weights)
            cache = self.out_dir.parent / ".fidelity-cache"
            self.evaluator = Evaluator(weights, self.device, cache)

        if dataset is None:
            dataset = load_dataset(config.data, mc.resolution, channels=mc.channels)
        if mc.conditional and dataset.num_classes < 1:
            raise ValueError("conditional training needs a labelled dataset")
        if mc.conditional and mc.num_classes < dataset.num_classes:
            raise ValueError(
                f"model.num_classes={mc.num_classes} but the dataset has {dataset.num_classes}"
            )
        if dataset.channels != mc.channels:
            raise ValueError(f"dataset has {dataset.channels} channels, model {mc.channels}")
        self.dataset = dataset
        self.data = dataset.to(self.device)
        # the dataset's name in the evaluator's cache of real features
        spec = f"{config.data}-{mc.resolution}-{mc.channels}"
        self.eval_key = hashlib.sha256(f"{spec}-{len(dataset)}".encode()).hexdigest()[:16]

        # how the step executes (never what it computes): see SpeedConfig
        sp, cuda = config.speed, self.device.type == "cuda"
        self.joint_d_forward = sp.joint_d_forward
        self.channels_last = cuda if sp.channels_last is None else sp.channels_last
        fused = cuda if sp.fused_adam is None else sp.fused_adam
        self.use_graphs = cuda if sp.cuda_graphs is None else sp.cuda_graphs
        if self.use_graphs and not cuda:
            raise ValueError("speed.cuda_graphs needs a CUDA device")
        if cuda:
            torch.backends.cudnn.benchmark = True

        seed_everything(tc.seed)
        self.netG = build_generator(mc).to(self.device)
        self.netD = build_discriminator(mc).to(self.device)
        if self.channels_last:  # 4-D weights only; linears and embeddings are unaffected
            self.netG.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            self.netD.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

        # the modules the updates call: compiled twins share the parameters and buffers
        compiled = cuda if sp.compile is None else sp.compile
        if compiled:
            # a graph the compiler cannot handle runs eagerly (with a warning) instead of
            # failing a job hours into a queue
            torch._dynamo.config.suppress_errors = True
        self._G: nn.Module = torch.compile(self.netG) if compiled else self.netG  # type: ignore[assignment]
        self._D: nn.Module = torch.compile(self.netD) if compiled else self.netD  # type: ignore[assignment]

        def adam(params: Any, lr: float) -> torch.optim.Adam:
            if self.use_graphs:  # the LR lives in a device tensor the captured step reads
                lr_t = torch.tensor(lr, device=self.device)
                return torch.optim.Adam(
                    params, lr=lr_t, betas=tc.betas, fused=True, capturable=True
                )
            return torch.optim.Adam(params, lr=lr, betas=tc.betas, fused=fused)

        self.optG = adam(self.netG.parameters(), tc.lr_g)
        self.optD = adam(self.netD.parameters(), tc.lr_d)
        self.ema_G: nn.Module | None = None
        # 1 - the EMA decay of the coming step, in a device tensor the captured step reads
        self._ema_weight = torch.zeros((), device=self.device)
        self._standing_step = -1  # the step the EMA's standing BN statistics are for
        if tc.ema_decay is not None:
            self.ema_G = copy.deepcopy(self.netG).eval()
            self.ema_G.requires_grad_(False)
        self.step = 0
        self._graphs: tuple[Any, ...] | None = None

        # fixed noise for the training sample grids, independent of the training RNG stream
        gen = torch.Generator().manual_seed(tc.seed + 1)
        self.fixed_z = torch.randn(GRID_SIZE, mc.z_dim, generator=gen).to(self.device)
        self.fixed_y = (
            (torch.arange(GRID_SIZE) % mc.num_classes).to(self.device) if mc.conditional else None
        )
        # per-step losses stay on the device until the next read-back
        self._pending: list[tuple[int, torch.Tensor, float]] = []
        self._last_flush_time = time.perf_counter()
        self._last_flush_step = 0

    # --- schedule -----------------------------------------------------------------------

    def _lr_factor(self, step: int) -> float:
        """LR multiplier for generator step `step + 1`: linear from 1 to 0 over `steps`."""
        if self.cfg.train.lr_decay == "none":
            return 1.0
        return max(0.0, 1.0 - step / self.cfg.train.steps)

    def _apply_lr(self) -> None:
        """Set both optimizers' LR, and the EMA's weight, for the coming step (device tensors'
        values under graphs)."""
        if self.ema_G is not None:
            self._ema_weight.fill_(1.0 - ema_decay_at(self.cfg.train, self.step + 1))
        f = self._lr_factor(self.step)
        for opt, base in ((self.optG, self.cfg.train.lr_g), (self.optD, self.cfg.train.lr_d)):
            for group in opt.param_groups:
                if isinstance(group["lr"], torch.Tensor):
                    group["lr"].fill_(base * f)
                else:
                    group["lr"] = base * f

    # --- one generator step ---------------------------------------------------------------

    def _real_batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(len(self.data), (n,), device=self.device)
        x = scale(self.data.images[idx])  # (n, C, R, R) in [-1, 1]
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.data.labels[idx]

    def _noise(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        z = torch.randn(n, self.cfg.model.z_dim, device=self.device)
        if not self.cfg.model.conditional:
            return z, None
        return z, torch.randint(self.cfg.model.num_classes, (n,), device=self.device)

    def _autocast(self) -> torch.autocast:
        # no weight-cast cache: it would hold tensors across CUDA-graph replays
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16, cache_enabled=False
        )

    def _d_update(self) -> torch.Tensor:
        """One discriminator update; returns (loss_D, mean D(real), mean D(fake)) on device."""
        tc = self.cfg.train
        B = tc.batch_size
        x_real, y_real = self._real_batch(B)
        z, y_fake = self._noise(B)
        with torch.no_grad(), self._autocast():
            x_fake = self._G(z, y_fake).to(x_real.dtype)
        y_real_in = y_real if self.cfg.model.conditional else None
        with self._autocast():
            if self.joint_d_forward:
                # D has no batch norm, so one forward on cat(real, fake) equals two forwards
                # with the spectral norms computed once
                y = torch.cat([y_real, y_fake]) if y_fake is not None else None
                out = _full(self._D(torch.cat([x_real, x_fake]), y))  # (2B,)
                d_real, d_fake = out[:B], out[B:]
            else:
                with parametrize.cached():  # one power iteration per D step, as above
                    d_real = _full(self._D(x_real, y_real_in))
                    d_fake = _full(self._D(x_fake, y_fake))
            loss_D = d_loss(tc.loss, d_real, d_fake)
        self.optD.zero_grad(set_to_none=True)
        loss_D.backward()
        self.optD.step()
        return torch.stack([loss_D.detach(), d_real.detach().mean(), d_fake.detach().mean()])

    def _g_update(self) -> torch.Tensor:
        """One generator update on 2 x batch_size samples (+ EMA); returns loss_G on device."""
        tc = self.cfg.train
        z, y_fake = self._noise(2 * tc.batch_size)
        with self._autocast():
            loss_G = g_loss(tc.loss, _full(self._D(self._G(z, y_fake), y_fake)))
        self.optG.zero_grad(set_to_none=True)
        loss_G.backward()
        self.optG.step()
        if self.ema_G is not None:
            update_ema(self.ema_G, self.netG, self._ema_weight)
        return loss_G.detach()

    def train_step(self) -> torch.Tensor:
        """One generator step with its n_dis discriminator steps.

        Returns (loss_D, loss_G, mean D(real), mean D(fake)) on the device, unsynchronised.
        """
        self._apply_lr()
        if self.use_graphs:
            return self._graph_step()
        self.netD.requires_grad_(True)
        for _ in range(self.cfg.train.n_dis):
            d = self._d_update()
        self.netD.requires_grad_(False)  # the G step needs no D parameter gradients
        g = self._g_update()
        return torch.stack([d[0], g, d[1], d[2]])

    def _ema_for_use(self) -> nn.Module | None:
        """The EMA generator, with its standing BN statistics recomputed for this step when
        the config asks (in place: the next update copies G's statistics over them again,
        so training and resume are unaffected)."""
        tc = self.cfg.train
        if self.ema_G is not None and tc.ema_standing_stats and self._standing_step != self.step:
            # a seed of their own per step: no training RNG stream is drawn from
            standing_statistics(self.ema_G, self.cfg, seed=tc.seed + self.step)
            self._standing_step = self.step
        return self.ema_G

    # --- the loop -----------------------------------------------------------------------

    def fit(self, resume_from: Path | str | None = None) -> TrainResult:
        if resume_from is not None:
            self.load_state(load_checkpoint(resume_from, map_location=self.device))
            log.info("resumed from %s at step %d", resume_from, self.step)
            if self.best is not None:  # the record may be past the checkpoint resumed from
                self.sinks.on_best(*self.best)
        self.netG.train()
        self.netD.train()
        tc = self.cfg.train
        self._last_flush_time, self._last_flush_step = time.perf_counter(), self.step
        last_ckpt: Path | None = None
        while self.step < tc.steps:
            lr = self.cfg.train.lr_g * self._lr_factor(self.step)
            losses = self.train_step()
            self.step += 1
            self._pending.append((self.step, losses, lr))
            s = self.step
            final = s == tc.steps
            ckpt_due = final or _every(s, self.cfg.checkpoint_every)
            sample_due = final or _every(s, self.cfg.sample_every)
            eval_due = self.cfg.eval.every > 0 and (final or _every(s, self.cfg.eval.every))
            stop = self.sinks.should_stop()
            if stop or ckpt_due or sample_due or eval_due or len(self._pending) >= tc.log_every:
                self._flush_metrics()
            if sample_due:
                self._write_sample_grid()
            new_best = eval_due and self._evaluate()
            if ckpt_due or stop or new_best:  # a new best FID gets its checkpoint, pinned
                last_ckpt = self._write_checkpoint()
            if new_best:
                assert self.best is not None
                self.sinks.on_best(*self.best)
            if stop:
                return TrainResult(self.step, True, last_ckpt)
        if last_ckpt is None:  # resumed at the final step: nothing to do
            last_ckpt = self.ckpt_dir / checkpoint_name(self.step)
        return TrainResult(self.step, False, last_ckpt)

    def _flush_metrics(self) -> None:
        if not self._pending:
            return
        values = torch.stack([p[1] for p in self._pending]).double().cpu()  # one sync
        now = time.perf_counter()
        rate = (self.step - self._last_flush_step) / max(now - self._last_flush_time, 1e-9)
        self._last_flush_time, self._last_flush_step = now, self.step
        pending, self._pending = self._pending, []
        for (step, _, lr), row in zip(pending, values.tolist(), strict=True):
            metrics = dict(zip(LOSS_NAMES, row, strict=True))
            if not all(map(math.isfinite, row)):
                raise DivergedError(step, metrics)
            metrics["lr"] = lr
            metrics["steps_per_s"] = rate
            self.sinks.on_metrics(step, metrics)

    @torch.no_grad()
    def _write_sample_grid(self) -> None:
        netG = self._ema_for_use() or self.netG
        was_training = netG.training
        netG.eval()
        try:
            with self._autocast():
                x = netG(self.fixed_z, self.fixed_y)
        finally:
            netG.train(was_training)
        self.sample_dir.mkdir(parents=True, exist_ok=True)
        path = self.sample_dir / f"step_{self.step:08d}.png"
        tmp = path.with_name(f".{path.name}.tmp")
        save_png(image_grid(to_uint8(x), nrow=8), str(tmp))
        tmp.replace(path)
        self.sinks.on_sample_grid(self.step, path)

    def _evaluate(self) -> bool:
        """Evaluate G, and the EMA generator when there is one (its metrics named with
        `EMA_SUFFIX`, with its standing BN statistics when configured); True when G's FID
        improved on the best so far."""
        assert self.evaluator is not None
        # its own seeded generator: the training RNG stream is not drawn from, and both
        # generators get the same noise (the difference measures them, not the draw); the
        # real features are computed once, the second call reads the evaluator's copy
        seed = self.cfg.train.seed
        ev, key = self.evaluator, self.eval_key
        metrics = ev.evaluate(self.netG, self.cfg, self.dataset, key, seed=seed)
        ema_G = self._ema_for_use()
        if ema_G is not None:
            averaged = ev.evaluate(ema_G, self.cfg, self.dataset, key, seed=seed)
            metrics.update({name + EMA_SUFFIX: value for name, value in averaged.items()})
        self.sinks.on_metrics(self.step, metrics)
        # the best checkpoint follows G's FID, EMA or not: the run (which EMA never feeds
        # back into) keeps the same checkpoints and `best` whatever its EMA options
        fid = metrics.get("fid")
        if fid is None or (self.best is not None and fid >= self.best[1]):
            return False
        self.best = (self.step, fid)
        return True

    # --- state ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "format": 1,
            "config": self.cfg.to_dict(),
            "step": self.step,
            "netG": self.netG.state_dict(),
            "netD": self.netD.state_dict(),
            "ema_G": self.ema_G.state_dict() if self.ema_G is not None else None,
            "optG": self.optG.state_dict(),
            "optD": self.optD.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_python": list(random.getstate()[1]),
            "rng_python_version": random.getstate()[0],
            "best": list(self.best) if self.best is not None else None,
        }
        if torch.cuda.is_available():
            state["rng_cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        # the LR is not read back: it is a function of the step and the config (older
        # checkpoints also hold "schedG"/"schedD" entries saying so; they are ignored)
        self.netG.load_state_dict(state["netG"])
        self.netD.load_state_dict(state["netD"])
        if self.ema_G is not None and state.get("ema_G") is not None:
            self.ema_G.load_state_dict(state["ema_G"])
        for opt, saved in ((self.optG, state["optG"]), (self.optD, state["optD"])):
            lrs = [g["lr"] for g in opt.param_groups]  # keep this run's LR holders
            opt.load_state_dict(saved)
            for g, lr in zip(opt.param_groups, lrs, strict=True):
                g["lr"] = lr
        self.step = int(state["step"])
        best = state.get("best")
        self.best = (int(best[0]), float(best[1])) if best is not None else None
        torch.set_rng_state(state["rng_cpu"].cpu())
        random.setstate((state["rng_python_version"], tuple(state["rng_python"]), None))
        if "rng_cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["rng_cuda"]])

    def _write_checkpoint(self) -> Path:
        path = self.ckpt_dir / checkpoint_name(self.step)
        self._ema_for_use()  # the EMA weights are stored with their own BN statistics
        sha, size = save_checkpoint(self.state_dict(), path)
        self.sinks.on_checkpoint(self.step, path, sha, size)
        self._prune_checkpoints()
        return path

    def _prune_checkpoints(self) -> None:
        existing = list_checkpoints(self.ckpt_dir)
        keep = {s for s, _ in existing[-max(1, self.cfg.keep_last) :]} | self.pinned_steps
        if self.best is not None:
            keep.add(self.best[0])
        for step, path in existing:
            if step not in keep:
                remove_checkpoint(path)
                self.sinks.on_checkpoint_removed(step, path)


def _every(step: int, period: int) -> bool:
    """Whether a periodic action is due; a period of 0 turns it off (the last step still
    gets its checkpoint and grid)."""
    return period > 0 and step % period == 0


def _full(x: torch.Tensor) -> torch.Tensor:
    """Losses in at least fp32: bf16 autocast outputs are upcast, fp64 stays fp64."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x
