"""`sngan datasets`: upload and list datasets over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from app.cli.client import DEFAULT_URL, Api, JsonOpt, KeyOpt, UrlOpt, id_column, when
from app.cli.console import err, out, print_json

datasets_app = typer.Typer(help="Upload and list datasets.", no_args_is_help=True)


@datasets_app.command("upload")
def datasets_upload(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help=".npz or .zip")],
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Upload a dataset (.npz with `images`[, `labels`] or a .zip of images)."""
    api = Api(url, key, timeout=600.0)
    with file.open("rb") as fh:
        ds = api.json("POST", "/v1/datasets", files={"file": (file.name, fh)})
    if as_json:
        print_json(ds)
        return
    h, w = ds["image_size"]
    err.print(
        f"uploaded {file.name}: {ds['num_images']} images {h}x{w}, {ds['channels']} channel(s), "
        f"{ds['num_classes']} class(es)"
    )
    out.print(ds["id"])


@datasets_app.command("list")
def datasets_list(url: UrlOpt = DEFAULT_URL, key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """List your datasets."""
    body = Api(url, key).json("GET", "/v1/datasets")
    rows = body["data"] if isinstance(body, dict) else body
    if as_json:
        print_json(body)
        return
    table = Table(id_column(), "images", "size", "channels", "classes", "created")
    for ds in rows:
        h, w = ds["image_size"]
        table.add_row(
            ds["id"],
            str(ds["num_images"]),
            f"{h}x{w}",
            str(ds["channels"]),
            str(ds["num_classes"]),
            when(ds["created_at"]),
        )
    out.print(table)
