"""The ``sngan`` command: run the service, talk to it over HTTP, train a demo locally.

One module per command group: ``serve`` (running the service and supervising its children),
``keys`` (key admin on the database), ``datasets``, ``jobs``, ``samples`` and ``export`` (the
HTTP client, ``client.Api``), ``demo`` (local training) and ``config``. Heavy modules (torch,
the web app, the database layer) are imported inside the commands that need them, so the HTTP
client commands start in a fraction of a second.

Output convention: data goes to stdout (an id alone on the last line for the commands that
create something, so ``ID=$(sngan jobs submit ...)`` works; ``--json`` prints the whole
object instead); messages and progress chatter go to stderr.
"""

from __future__ import annotations

import typer

from app.cli.config import config_cmd
from app.cli.datasets import datasets_app
from app.cli.demo import demo
from app.cli.jobs import jobs_app
from app.cli.keys import keys_app
from app.cli.samples import export, samples
from app.cli.serve import serve, worker

__all__ = ["app", "main"]

app = typer.Typer(
    name="sngan",
    help="Train Spectral-Normalization GANs as jobs and serve the images they generate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# `sngan --help` lists the commands in this order, then the groups.
app.command()(serve)
app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(worker)
app.command()(samples)
app.command()(export)
app.command()(demo)
app.command("config")(config_cmd)
app.add_typer(keys_app, name="keys")
app.add_typer(datasets_app, name="datasets")
app.add_typer(jobs_app, name="jobs")


def main() -> None:
    app()
