"""Sample quality of the plain generator against each EMA variant, judged by a classifier.

On two families the project generates (models/quality.py): the synthetic shapes (4 classes)
and digit glyphs rendered with Pillow (10 classes). Per family and seed, one unconditional
cnn32 run with a constant learning rate; at each run length the plain G and every EMA
variant draw the same noise, and a classifier trained on the real images scores them: the
share recognised with confidence > 0.9 ("confident") and the smallest class share among
those ("min share", 0 when a class is never made). EMA never feeds back into training, so
every variant is read off the same run:

- old: decay 0.999 from step 1, BN statistics copied from G (what the trainer did);
- old+standing: the same weights, BN statistics recomputed for them (standing statistics);
- ramped: the half-life capped at `--rampup` x the steps done (stylegan2-ada's ema_rampup);
- ramped+standing: both.

The ramped average is the trainer's own EMA (train.ema_rampup), the old one a second average
kept here with the same update (models/ema.py).

    nice -n 10 python bench/quality.py                       # ~25 minutes on 2 busy cores
    python bench/quality.py --lengths 100 200 --seeds 0 --families shapes   # a smoke run
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import ImageDataset, RunConfig, Trainer  # noqa: E402
from models.ema import standing_statistics, update_ema  # noqa: E402
from models.quality import (  # noqa: E402
    FAMILIES,
    classifier_statistics,
    judge,
    train_classifier,
)

VARIANTS = ("plain", "old", "old+standing", "ramped", "ramped+standing")


def run_config(args: argparse.Namespace, seed: int, steps: int) -> RunConfig:
    return RunConfig.from_dict(
        {
            "model": {"arch": "cnn32", "g_ch": args.width, "d_ch": args.width, "z_dim": 64},
            "train": {
                "steps": steps,
                "batch_size": args.batch_size,
                "n_dis": 1,
                "betas": [0.5, 0.999],
                "lr_decay": "none",  # constant: the state at step s is a run of length s
                "ema_decay": args.decay,
                "ema_rampup": args.rampup,
                "seed": seed,
                "precision": "fp32",
            },
            "checkpoint_every": 0,
            "sample_every": 0,
        }
    )


def one_run(
    args: argparse.Namespace, family: str, seed: int, classifier: torch.nn.Module
) -> dict[int, dict[str, dict[str, float]]]:
    """{length: {variant: statistics}} of one training run."""
    make, num_classes = FAMILIES[family]
    images, labels = make(args.num_images, 32, seed)
    data = ImageDataset(torch.from_numpy(images), torch.from_numpy(labels), num_classes)
    cfg = run_config(args, seed, max(args.lengths))
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(cfg, out, device="cpu", dataset=data)
        assert trainer.ema_G is not None
        old = copy.deepcopy(trainer.ema_G)  # the fixed-decay average, updated below
        old_weight = torch.tensor(1.0 - args.decay)
        trainer.netG.train()
        trainer.netD.train()
        found: dict[int, dict[str, dict[str, float]]] = {}
        while trainer.step < max(args.lengths):
            trainer.train_step()
            trainer.step += 1
            update_ema(old, trainer.netG, old_weight)
            if trainer.step in args.lengths:
                nets = {"plain": trainer.netG, "old": old, "ramped": trainer.ema_G}
                for name in ("old", "ramped"):
                    standing = copy.deepcopy(nets[name])
                    standing_statistics(standing, cfg, seed=10_000 + trainer.step)
                    nets[f"{name}+standing"] = standing
                found[trainer.step] = {
                    v: judge(nets[v], cfg, classifier, args.samples) for v in VARIANTS
                }
                scores = ", ".join(
                    f"{v} {found[trainer.step][v]['confident']:.2f}" for v in VARIANTS
                )
                print(f"  {family} seed {seed} step {trainer.step}: {scores}", flush=True)
    return found


def table(results: dict[str, dict[int, dict[str, list[dict[str, float]]]]]) -> list[str]:
    head = "| family | steps | " + " | ".join(VARIANTS) + " |"
    lines = [head, "|" + " --- |" * (2 + len(VARIANTS))]
    for family, by_length in results.items():
        for length, by_variant in sorted(by_length.items()):
            cells = []
            for v in VARIANTS:
                conf = [r["confident"] for r in by_variant[v]]
                share = min(r["min_class_share"] for r in by_variant[v])
                sd = statistics.stdev(conf) if len(conf) > 1 else 0.0
                cells.append(f"{statistics.mean(conf):.2f} ± {sd:.2f} ({share:.2f})")
            lines.append(f"| {family} | {length} | " + " | ".join(cells) + " |")
    return lines


def report(runs_file: Path) -> list[str]:
    """The table of every run recorded in `runs_file` (one JSON line per family, seed)."""
    results: dict[str, dict[int, dict[str, list[dict[str, float]]]]] = {}
    for line in runs_file.read_text().splitlines():
        run = json.loads(line)
        for length, stats in run["found"].items():
            by_variant = results.setdefault(run["family"], {}).setdefault(int(length), {})
            for v, st in stats.items():
                by_variant.setdefault(v, []).append(st)
    return table(results)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    p.add_argument("--lengths", nargs="+", type=int, default=[150, 300])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--width", type=int, default=16, help="g_ch and d_ch")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--num-images", type=int, default=4000)
    p.add_argument("--samples", type=int, default=500, help="images judged per variant")
    p.add_argument("--decay", type=float, default=0.999)
    p.add_argument("--rampup", type=float, default=0.05)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--runs-file",
        type=Path,
        help="append each run's results here (JSON lines), so runs split over processes "
        "make one table with --report",
    )
    p.add_argument("--report", type=Path, help="print the table of a runs file and exit")
    args = p.parse_args()
    if args.report is not None:
        print("\n".join(report(args.report)))
        return
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    results: dict[str, dict[int, dict[str, list[dict[str, float]]]]] = {}
    for family in args.families:
        classifier = train_classifier(family, steps=150 if family == "shapes" else 400)
        real, real_labels = FAMILIES[family][0](args.samples, 32, 99)
        yardstick = classifier_statistics(classifier, real.transpose(0, 2, 3, 1), real_labels)
        print(f"{family}: real images {yardstick}", flush=True)
        by_length: dict[int, dict[str, list[dict[str, float]]]] = {}
        for seed in args.seeds:
            found = one_run(args, family, seed, classifier)
            if args.runs_file is not None:
                with args.runs_file.open("a") as f:
                    f.write(json.dumps({"family": family, "seed": seed, "found": found}) + "\n")
            for length, stats in found.items():
                for v, st in stats.items():
                    by_length.setdefault(length, {}).setdefault(v, []).append(st)
        results[family] = by_length
    elapsed = time.perf_counter() - start
    load = os.getloadavg()
    print("\n".join(table(results)))
    print(
        f"seeds {args.seeds}; cnn32 g_ch=d_ch={args.width}, batch {args.batch_size}, n_dis 1, "
        f"Adam(2e-4, 0.5, 0.999) constant, unconditional, decay {args.decay}, rampup "
        f"{args.rampup}, {args.samples} samples per variant; {elapsed / 60:.1f} min on CPU "
        f"({args.threads} thread), load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )


if __name__ == "__main__":
    main()
