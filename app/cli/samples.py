"""`sngan samples` (images, class sheets and latent walks from a job's checkpoint) and
`sngan export` (its generator as ONNX or a torch.export program), over HTTP, to a file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from app.cli.client import DEFAULT_URL, Api, KeyOpt, UrlOpt
from app.cli.console import err, fail, out
from app.core.formats import EXPORT_SUFFIX, SAMPLE_SUFFIX, WALK_MEDIA_TYPES

CheckpointOpt = Annotated[
    str, typer.Option(help="Checkpoint step, 'latest' or 'best' (lowest FID).")
]
EmaOpt = Annotated[
    bool | None,
    typer.Option(
        "--ema/--no-ema",
        help="The EMA generator (default: when the job trains one) or the plain one.",
    ),
]


def samples(
    job_id: str,
    n: Annotated[int, typer.Option("-n", help="How many images (a class sheet: per class).")] = 64,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            help="File to write (default by format; its suffix "
            "picks the format when --format is not given).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Noise seed (same seed, same images).")] = 0,
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="grid, png, zip or npy; with --walk: gif, webp, png or npy."),
    ] = None,
    checkpoint: CheckpointOpt = "latest",
    labels: Annotated[
        str | None,
        typer.Option(
            help="Class labels, comma separated (conditional models); 'all': a class sheet "
            "(n of each class, one grid row per class); with --walk: one, or one per seed."
        ),
    ] = None,
    truncation: Annotated[
        float | None, typer.Option(help="Truncate z to [-t, t] (the truncation trick).")
    ] = None,
    walk: Annotated[
        str | None,
        typer.Option(help="A latent walk through these seeds instead, e.g. 3,17,42."),
    ] = None,
    frames: Annotated[int, typer.Option(help="With --walk: frames per segment.")] = 16,
    loop: Annotated[bool, typer.Option(help="With --walk: walk back to the first seed.")] = False,
    fps: Annotated[float, typer.Option(help="With --walk: frames a second (gif/webp).")] = 12.0,
    ema: EmaOpt = None,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = None,
) -> None:
    """Generate images (or a latent walk) now from a job's checkpoint and write them to a
    file."""
    formats = WALK_MEDIA_TYPES if walk else SAMPLE_SUFFIX
    suffix = output.suffix.lstrip(".").lower() if output else ""
    chosen = fmt or (suffix if walk and suffix in formats else None) or ("gif" if walk else "grid")
    if chosen not in formats:
        fail(f"--format must be one of {', '.join(formats)}")
    params: dict[str, Any] = {"format": chosen, "checkpoint": checkpoint}
    if ema is not None:
        params["ema"] = str(ema).lower()
    if labels:
        params["labels"] = labels
    if truncation is not None:
        params["truncation"] = truncation
    if walk:
        params.update(seeds=walk, frames=frames, loop=str(loop).lower(), fps=fps)
        route, default = "interpolations", Path(f"walk-{job_id}.{chosen}")
    else:
        params.update(n=n, seed=seed)
        route, default = "samples", Path(f"samples-{job_id}{SAMPLE_SUFFIX[chosen]}")
    response = Api(url, key, timeout=300.0).request(
        "GET", f"/v1/jobs/{job_id}/{route}", params=params
    )
    path = output or default
    path.write_bytes(response.content)
    what = f"a walk of {response.headers.get('X-Walk-Frames')} frames" if walk else "image(s)"
    err.print(f"wrote {what} ({chosen}, {len(response.content)} bytes)")
    out.print(str(path))


def export(
    job_id: str,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="File to write; a .pt2 suffix picks that format."),
    ] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="onnx (default) or pt2 (torch.export).")
    ] = None,
    checkpoint: CheckpointOpt = "latest",
    ema: EmaOpt = None,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = None,
) -> None:
    """Download a job's generator as a standalone file: ONNX (onnxruntime) or a torch.export
    program (torch.export.load), with inputs z [, y] and images in [-1, 1] out."""
    suffix = output.suffix.lstrip(".").lower() if output else ""
    chosen = fmt or (suffix if suffix in EXPORT_SUFFIX else "onnx")
    if chosen not in EXPORT_SUFFIX:
        fail(f"--format must be one of {', '.join(EXPORT_SUFFIX)}")
    params = {"format": chosen, "checkpoint": checkpoint}
    if ema is not None:
        params["ema"] = str(ema).lower()
    # the first export of a checkpoint is built on the server (ONNX: up to a minute or so)
    response = Api(url, key, timeout=900.0).request(
        "GET", f"/v1/jobs/{job_id}/export", params=params
    )
    path = output or Path(f"generator-{job_id}{EXPORT_SUFFIX[chosen]}")
    path.write_bytes(response.content)
    meta = {
        k[len("x-generator-") :]: v
        for k, v in response.headers.items()
        if k.lower().startswith("x-generator-")
    }
    err.print(
        f"wrote the generator of step {meta.get('step')} ({chosen}, {len(response.content)} "
        f"bytes): inputs {meta.get('inputs')}, z_dim {meta.get('z-dim')}, "
        f"classes {meta.get('num-classes')}"
    )
    out.print(str(path))
