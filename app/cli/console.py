"""Where the CLI writes: data to stdout, messages and progress chatter to stderr."""

from __future__ import annotations

import json
from typing import Any, NoReturn

import typer
from rich.console import Console

out = Console(highlight=False, soft_wrap=True)
if not out.is_terminal:  # pipes and logs: don't squeeze tables into 80 columns
    out.width = max(out.width, 140)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", markup=True)
    raise typer.Exit(code)


def print_json(obj: Any) -> None:
    if out.is_terminal:
        out.print_json(json.dumps(obj))
    else:
        print(json.dumps(obj, indent=2))
