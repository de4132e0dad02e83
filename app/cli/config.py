"""`sngan config`: the effective settings, or their Markdown table for the README."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from app.cli.console import err, fail, out
from app.core.config import Settings, get_settings
from app.core.settings_doc import readme_with_settings, settings_table


def config_cmd(
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Print the Markdown table of every setting.")
    ] = False,
    readme: Annotated[
        Path | None,
        typer.Option(help="Rewrite the settings table between the markers of this README."),
    ] = None,
) -> None:
    """Show the effective settings (from SNGAN_ variables and .env)."""
    if markdown:
        print(settings_table())
        return
    if readme is not None:
        try:
            text = readme_with_settings(readme.read_text())
        except ValueError as exc:
            fail(str(exc))
        readme.write_text(text)
        err.print(f"updated the settings table in {readme}")
        return
    settings = get_settings()
    table = Table("setting", "value")
    for name in Settings.model_fields:
        table.add_row(f"SNGAN_{name.upper()}", str(getattr(settings, name)))
    out.print(table)
