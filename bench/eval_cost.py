"""Seconds per IS/FID/KID evaluation, and what it adds to a training run.

Measures, on one device, the parts of one evaluation as the trainer runs it
(`models.evaluation.Evaluator`): generating `--samples` images in batches of 250 with the
default generator (resnet32), their Inception features (299x299, batches of 50), and the
metrics; plus the one-off cost of the real images' features (cached per dataset after). Then
a few training steps of the default config, to say what evaluating every `--every` steps adds.

Inception's cost does not depend on its weight values: without the real file, a stand-in made
by `python -m tests.models.inception_weights PATH` (same architecture) measures the same.
Run it where torch-fidelity imports (.venv-eval):

    .venv-eval/bin/python -m bench.eval_cost --weights PATH --samples 1000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from models import RunConfig, Trainer
from models.data import ImageDataset
from models.device import resolve_device
from models.evaluation import Evaluator
from models.nets import build_generator


def _timed(fn, *args):  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    out = fn(*args)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=os.environ.get("SNGAN_INCEPTION_WEIGHTS"))
    parser.add_argument("--samples", type=int, default=10_000, help="images per evaluation")
    parser.add_argument("--real", type=int, default=None, help="real images (default: samples)")
    parser.add_argument("--every", type=int, default=1000, help="eval.every to cost")
    parser.add_argument("--train-steps", type=int, default=3, help="training steps timed")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    if args.weights is None:
        parser.error("--weights (or SNGAN_INCEPTION_WEIGHTS) is needed")
    device = resolve_device(args.device)
    n, n_real = args.samples, args.real or args.samples

    cfg = RunConfig.from_dict(
        {"eval": {"every": args.every, "num_samples": n, "metrics": ["is", "fid", "kid"]}}
    )
    netG = build_generator(cfg.model).to(device).eval()
    g = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (n_real, 3, 32, 32), generator=g, dtype=torch.uint8)
    data = ImageDataset(real, torch.zeros(n_real, dtype=torch.long), 0)
    with tempfile.TemporaryDirectory() as tmp:
        ev, t_load = _timed(Evaluator, args.weights, device, Path(tmp))
        _, t_real = _timed(ev.real_features, data, "bench")
        from models.evaluation import generate_uint8

        fake, t_gen = _timed(generate_uint8, netG, cfg, n, device, 0)
        (pool, logits), t_feat = _timed(ev.features, fake)
        _, t_eval = _timed(ev.evaluate, netG, cfg, data, "bench", 0)
        t_metrics = t_eval - t_gen - t_feat

        train_cfg = RunConfig.from_dict(
            {"data": {"source": "synthetic", "num_images": 512}, "train": {"steps": 10**6}}
        )
        trainer = Trainer(train_cfg, Path(tmp) / "run", device=device)
        trainer.train_step()  # warm-up
        _, t_steps = _timed(lambda: [trainer.train_step() for _ in range(args.train_steps)])
        t_step = t_steps / args.train_steps

    per_img = t_feat / n
    rows = [
        (
            "device",
            f"{device} ({torch.get_num_threads()} threads)"
            if device.type == "cpu"
            else str(device),
        ),
        ("samples per evaluation", f"{n:,}"),
        ("load Inception (once per job)", f"{t_load:.1f} s"),
        (f"real features, {n_real:,} images (once per dataset)", f"{t_real:.1f} s"),
        ("generate samples", f"{t_gen:.1f} s"),
        ("Inception features of samples", f"{t_feat:.1f} s ({per_img * 1000:.0f} ms/image)"),
        ("IS + FID + KID from features", f"{max(t_metrics, 0):.1f} s"),
        ("one evaluation (measured end to end)", f"{t_eval:.1f} s"),
        (
            "one evaluation at 10k / 50k samples (extrapolated)",
            f"{t_eval / n * 1e4:.0f} s / {t_eval / n * 5e4:.0f} s",
        ),
        ("one training step (default config)", f"{t_step:.2f} s"),
        (
            f"added to a run evaluating every {args.every} steps",
            f"{100 * t_eval / (args.every * t_step):.1f} %",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"| {'what'.ljust(width)} | value |")
    print(f"| {'-' * width} | --- |")
    for what, value in rows:
        print(f"| {what.ljust(width)} | {value} |")


if __name__ == "__main__":
    main()
