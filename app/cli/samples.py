"""`sngan samples`: generate images from a job's checkpoint over HTTP and write them to a file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from app.cli.client import DEFAULT_URL, Api, KeyOpt, UrlOpt
from app.cli.console import err, fail, out
from app.core.formats import SAMPLE_SUFFIX


def samples(
    job_id: str,
    n: Annotated[int, typer.Option("-n", help="How many images.")] = 64,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="File to write (default by format).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Noise seed (same seed, same images).")] = 0,
    fmt: Annotated[str, typer.Option("--format", help="grid, png, zip or npy.")] = "grid",
    checkpoint: Annotated[str, typer.Option(help="Checkpoint step or 'latest'.")] = "latest",
    labels: Annotated[
        str | None, typer.Option(help="Class labels, comma separated (conditional models).")
    ] = None,
    ema: Annotated[bool, typer.Option("--ema/--no-ema", help="Use EMA weights if any.")] = True,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = None,
) -> None:
    """Generate images now from a job's checkpoint and write them to a file."""
    if fmt not in SAMPLE_SUFFIX:
        fail(f"--format must be one of {', '.join(SAMPLE_SUFFIX)}")
    params: dict[str, Any] = {
        "n": n,
        "seed": seed,
        "format": fmt,
        "checkpoint": checkpoint,
        "ema": str(ema).lower(),
    }
    if labels:
        params["labels"] = labels
    response = Api(url, key, timeout=300.0).request(
        "GET", f"/v1/jobs/{job_id}/samples", params=params
    )
    path = output or Path(f"samples-{job_id}{SAMPLE_SUFFIX[fmt]}")
    path.write_bytes(response.content)
    err.print(f"wrote {n} image(s) ({fmt}, {len(response.content)} bytes)")
    out.print(str(path))
