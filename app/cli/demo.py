"""`sngan demo`: train a small SN-GAN on the synthetic shapes locally, no server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.cli.console import err, fail, out


def demo(
    steps: Annotated[int, typer.Option(help="Generator updates.")] = 1000,
    out_dir: Annotated[Path, typer.Option("--out", help="Where to write the run.")] = Path(
        "demo-run"
    ),
    arch: Annotated[str, typer.Option(help="cnn32, resnet32, cnn48 or resnet48.")] = "cnn32",
    ch: Annotated[int, typer.Option(help="Base width of G and D (small for CPU).")] = 32,
    z_dim: Annotated[int, typer.Option(help="Noise dimension.")] = 64,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 32,
    n_dis: Annotated[int, typer.Option(help="D updates per G update.")] = 1,
    conditional: Annotated[
        bool,
        typer.Option("--conditional/--unconditional", help="One shape class per grid row pair."),
    ] = True,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
) -> None:
    """Train a small SN-GAN on the synthetic shapes, no server, and write a sample grid.

    The defaults are a CPU-sized variant of the paper's CNN (Adam betas 0.5/0.999, constant
    learning rate): coloured discs, squares, triangles and crosses appear within minutes.
    """
    from app.cli.demo_progress import DemoProgress
    from models import (
        ARCHS,
        DataSpec,
        RunConfig,
        Trainer,
        generate_images,
        image_grid,
        load_dataset,
        load_generator,
        save_png,
    )

    if arch not in ARCHS:
        fail(f"--arch must be one of {', '.join(ARCHS)}")
    dataset = load_dataset(DataSpec(source="synthetic"), ARCHS[arch])
    config = RunConfig.from_dict(
        {
            "model": {
                "arch": arch,
                "g_ch": ch,
                "d_ch": ch,
                "z_dim": z_dim,
                "conditional": conditional,
                "channels": dataset.channels,
                "num_classes": dataset.num_classes,
            },
            "train": {
                "steps": steps,
                "batch_size": batch_size,
                "n_dis": n_dis,
                "betas": [0.5, 0.999],
                "lr_decay": "none",
                "seed": seed,
            },
            "eval": {"every": 0},
            "data": {"source": "synthetic"},
            "checkpoint_every": steps,
            "sample_every": max(steps // 5, 1),
            "keep_last": 1,
        }
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    err.print(
        f"training {arch} (width {ch}, {'conditional' if conditional else 'unconditional'}) "
        f"on {len(dataset)} synthetic images for {steps} steps, batch {batch_size}, "
        f"n_dis {n_dis}, on {device}"
    )

    trainer = Trainer(config, out_dir, sinks=DemoProgress(steps), device=device, dataset=dataset)
    result = trainer.fit()
    if result.checkpoint is None:
        fail("training ended without a checkpoint")
    netG, cfg = load_generator(result.checkpoint)
    n = 64
    # Two rows of 8 per class, in class order, when the model is conditional.
    labels = [i * cfg.model.num_classes // n for i in range(n)] if conditional else None
    images = generate_images(netG, cfg, n, seed=seed, labels=labels)
    grid_path = out_dir / "grid.png"
    save_png(image_grid(images, nrow=8), str(grid_path))
    err.print(f"checkpoint: {result.checkpoint}")
    out.print(f"sample grid: {grid_path}")
