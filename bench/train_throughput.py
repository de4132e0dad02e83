"""Training throughput: our trainer against a common public-style loop, in one process.

The baseline is written here the way common public SN-GAN implementations are: hook-based
`torch.nn.utils.spectral_norm`, eager fp32, D called separately on the real and the fake
batch, unfused Adam, a `.item()` per step for logging. It uses the same architectures (our
modules with their spectral-norm parametrizations swapped for the hook), the same batch
sizes and n_dis, and data already on the device, so the ratio isolates the loop itself.

    python bench/train_throughput.py                 # paper widths on a GPU, small on a CPU
    python bench/train_throughput.py --steps 200 --archs resnet32

Prints generator steps/s, the ratio to the baseline, and the fraction of the device's peak
bf16 (GPU) or fp32 (CPU) matmul rate measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import (  # noqa: E402
    ImageDataset,
    RunConfig,
    SpeedConfig,
    Trainer,
    TrainerSinks,
    build_discriminator,
    build_generator,
    synthetic_shapes,
)

BASELINE = "baseline (hook SN, fp32, 2 D fwd)"
# (arch, batch size, n_dis) as the paper and the reference measurements use them
SETTINGS = {"cnn32": (128, 1), "resnet32": (64, 5)}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_matmul_flops(device: torch.device) -> tuple[float, str]:
    """Measured peak of a large matmul: bf16 on CUDA, fp32 on CPU."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    reps = 50 if device.type == "cuda" else 10
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0), str(dtype).replace("torch.", "")


def hook_sn(netD: nn.Module) -> nn.Module:
    """Swap each spectral-norm parametrization for the old hook-based spectral norm."""
    for m in list(netD.modules()):
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)
            torch.nn.utils.spectral_norm(m)
    return netD


def baseline_steps_per_s(
    cfg: RunConfig, data: torch.Tensor, device: torch.device, warmup: int, steps: int
) -> float:
    torch.manual_seed(0)
    netG = build_generator(cfg.model).to(device)
    netD = hook_sn(build_discriminator(cfg.model)).to(device)
    tc = cfg.train
    optG = torch.optim.Adam(netG.parameters(), tc.lr_g, betas=tc.betas, foreach=False)
    optD = torch.optim.Adam(netD.parameters(), tc.lr_d, betas=tc.betas, foreach=False)
    B = tc.batch_size

    def step() -> None:
        for _ in range(tc.n_dis):
            real = data[torch.randint(len(data), (B,), device=device)].float() / 127.5 - 1
            with torch.no_grad():
                fake = netG(torch.randn(B, cfg.model.z_dim, device=device))
            loss_D = F.relu(1 - netD(real)).mean() + F.relu(1 + netD(fake)).mean()
            optD.zero_grad()
            loss_D.backward()
            optD.step()
        loss_G = -netD(netG(torch.randn(2 * B, cfg.model.z_dim, device=device))).mean()
        optG.zero_grad()
        loss_G.backward()
        optG.step()
        loss_D.item(), loss_G.item()  # logged every step, as such loops do

    for _ in range(warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps / (time.perf_counter() - t0)


class _Clock(TrainerSinks):
    """Timestamps the read-backs at the end of warm-up and at the end of the run."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.marks: dict[int, float] = {}

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        if step == self.warmup or step not in self.marks:
            self.marks[step] = time.perf_counter()


def trainer_steps_per_s(
    cfg: RunConfig, dataset: ImageDataset, device: torch.device, warmup: int, steps: int
) -> tuple[float, float]:
    """(steps/s of Trainer.fit, FLOPs of one generator step)."""
    cfg.train.steps = warmup + steps
    cfg.train.log_every = warmup  # read back at the warm-up boundary and at the end
    cfg.checkpoint_every = cfg.sample_every = 10**9  # only the final checkpoint
    with tempfile.TemporaryDirectory() as out:
        # count on an eager twin: graph capture and compiled code are opaque to the counter
        eager_twin = _with_speed(cfg, cuda_graphs=False, compile=False)
        probe = Trainer(eager_twin, out, device=device, dataset=dataset)
        with FlopCounterMode(display=False) as counter:
            probe.train_step()
        flops = float(counter.get_total_flops())
        del probe
        clock = _Clock(warmup)
        trainer = Trainer(cfg, out, sinks=clock, device=device, dataset=dataset)
        sync(device)
        trainer.fit()
        sync(device)
        end = time.perf_counter()
    return steps / (end - clock.marks[warmup]), flops


def _with_speed(cfg: RunConfig, **kw: bool) -> RunConfig:
    d = cfg.to_dict()
    d["speed"].update(kw)
    return RunConfig.from_dict(d)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--archs", default="cnn32,resnet32")
    ap.add_argument(
        "--steps", type=int, default=None, help="timed steps (default: 100 GPU, 10 CPU)"
    )
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument(
        "--width",
        type=int,
        default=None,
        help="g_ch = d_ch for both archs (default: the paper's on GPU, 32 on CPU)",
    )
    ap.add_argument("--eager", action="store_true", help="also time our trainer in eager mode")
    ap.add_argument(
        "--compile", action="store_true", help="also time the fast path without torch.compile"
    )
    ap.add_argument("--repeats", type=int, default=None, help="default: 1 GPU, 3 CPU")
    args = ap.parse_args()
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    gpu = device.type == "cuda"
    steps = args.steps or (100 if gpu else 10)
    warmup = args.warmup or (20 if gpu else 3)
    repeats = args.repeats or (1 if gpu else 3)
    width = args.width if args.width is not None else (None if gpu else 32)
    peak, peak_dtype = peak_matmul_flops(device)
    unit = 1e12 if gpu else 1e9
    unit_name = "TFLOP" if gpu else "GFLOP"
    name = torch.cuda.get_device_name(device) if gpu else f"CPU ({torch.get_num_threads()} threads)"
    print(
        f"device: {name}; torch {torch.__version__}; peak {peak_dtype} matmul "
        f"{peak / unit:.2f} {unit_name}/s; widths {'paper' if width is None else width}; "
        f"{steps} timed steps after {warmup} warm-up; median of {repeats} interleaved runs"
    )
    print()
    print(f"| model | batch | n_dis | loop | steps/s | vs baseline | {unit_name}/step | of peak |")
    print("|---|---|---|---|---|---|---|---|")
    for arch in args.archs.split(","):
        B, n_dis = SETTINGS[arch]
        cfg = RunConfig.from_dict(
            {
                "model": {"arch": arch, "g_ch": width, "d_ch": width},
                "train": {"batch_size": B, "n_dis": n_dis, "seed": 0},
            }
        )
        images, labels = synthetic_shapes(10_000, cfg.model.resolution)
        dataset = ImageDataset(torch.from_numpy(images), torch.from_numpy(labels), 4)
        data = dataset.images.to(device)
        modes = [("ours (default fast path)", cfg)]
        if args.compile:  # on CUDA the default already compiles: this adds the graphs-only row
            modes.append(("ours (fast path, no torch.compile)", _with_speed(cfg, compile=False)))
        if args.eager or not gpu:
            eager = RunConfig.from_dict({**cfg.to_dict(), "speed": vars(SpeedConfig.eager())})
            eager.train.precision = "fp32"
            modes.append(("ours (eager fp32)", eager))
        # interleave the loops and keep each one's median, so drift in the machine's load
        # affects all of them alike
        rates: dict[str, list[float]] = {BASELINE: []}
        flops_of: dict[str, float] = {}
        for _ in range(repeats):
            rates[BASELINE].append(baseline_steps_per_s(cfg, data, device, warmup, steps))
            for label, c in modes:
                try:
                    rate, flops_of[label] = trainer_steps_per_s(c, dataset, device, warmup, steps)
                except Exception as e:  # report the row, keep measuring the others
                    print(f"| {arch} | {B} | {n_dis} | {label} | failed: {e!r} | | | |")
                    continue
                rates.setdefault(label, []).append(rate)
        base = statistics.median(rates[BASELINE])
        rows = [(label, statistics.median(r), flops_of.get(label)) for label, r in rates.items()]
        for label, rate, flops in rows:
            tf = f"{flops / unit:.2f}" if flops else ""
            frac = f"{rate * flops / peak:.1%}" if flops else ""
            print(
                f"| {arch} | {B} | {n_dis} | {label} | {rate:.2f} | {rate / base:.2f}x | "
                f"{tf} | {frac} |"
            )


if __name__ == "__main__":
    main()
