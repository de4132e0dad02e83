"""`sngan jobs submit`'s spec flags come from models/config.py: the same names as before, one
per scalar field a request sets, each with the field's help text, each reaching the job."""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer

from app.cli import app
from app.cli.spec_flags import spec_flags
from models.config import SECTIONS, RunConfig, request_fields
from tests.cli.cli_helpers import Server, run_sngan

# the flags `jobs submit` had when they were written by hand, and their value types
LEGACY_FLAGS: dict[str, type] = {
    "--arch": str,
    "--z-dim": int,
    "--g-ch": int,
    "--d-ch": int,
    "--conditional": bool,
    "--unconditional": bool,
    "--steps": int,
    "--batch-size": int,
    "--n-dis": int,
    "--loss": str,
    "--lr-g": float,
    "--lr-d": float,
    "--lr-decay": str,
    "--ema-decay": float,
    "--seed": int,
    "--precision": str,
    "--eval-every": int,
    "--eval-samples": int,
    "--checkpoint-every": int,
    "--sample-every": int,
}


SCALARS = (str, int, float, bool, types.NoneType)


def _submit_options() -> dict[str, Any]:
    """The submit command's options as typer builds them, by each of their flags."""
    jobs = typer.main.get_command(app).commands["jobs"]  # type: ignore[attr-defined]
    options = {}
    for param in jobs.commands["submit"].params:
        for opt in (*param.opts, *param.secondary_opts):
            options[opt] = param
    return options


def test_the_flags_written_by_hand_keep_their_names_and_types() -> None:
    options = _submit_options()
    for flag, kind in LEGACY_FLAGS.items():
        assert flag in options, flag
        assert options[flag].bare_type() == kind.__name__, flag


def test_every_scalar_request_field_is_a_flag_with_its_help() -> None:
    options = _submit_options()
    flags = {flag.path: flag for flag in spec_flags()}
    for name, kind in SECTIONS.items():
        if name not in {f.name for f in request_fields(RunConfig)}:
            continue  # data and speed: not part of a request
        hints = typing.get_type_hints(kind)
        for f in request_fields(kind):
            hint = hints[f.name]
            union = typing.get_origin(hint) in (typing.Union, types.UnionType)
            scalar = all(a in SCALARS for a in (typing.get_args(hint) if union else (hint,)))
            assert (f"{name}.{f.name}" in flags) == scalar, f"{name}.{f.name}"
    for flag in flags.values():
        option = options[flag.decls[0].split("/")[0]]
        assert option.help == flag.help
    assert {"checkpoint_every", "sample_every"} <= set(flags)


@pytest.mark.slow
def test_every_spec_flag_reaches_the_job(server_factory: Callable[..., Server]) -> None:
    server = server_factory()
    server.start()
    values = {
        "--arch": "cnn48",
        "--z-dim": "32",
        "--g-ch": "8",
        "--d-ch": "12",
        "--steps": "5",
        "--batch-size": "4",
        "--n-dis": "2",
        "--loss": "ns",
        "--lr-g": "0.001",
        "--lr-d": "0.0003",
        "--lr-decay": "none",
        "--ema-decay": "0.9",
        "--seed": "7",
        "--precision": "fp32",
        "--eval-samples": "50",
        "--checkpoint-every": "2",
        "--sample-every": "3",
    }
    args = [part for flag, value in values.items() for part in (flag, value)]
    submit = run_sngan(
        "jobs", "submit", "--source", "synthetic", "--conditional", *args, "--url", server.url,
        env=server.env, cwd=Path(server.workdir),
    )  # fmt: skip
    assert submit.returncode == 0, submit.stderr
    job_id = submit.stdout.strip().splitlines()[-1]
    config = httpx.get(f"{server.url}/v1/jobs/{job_id}", timeout=10).json()["config"]
    httpx.post(f"{server.url}/v1/jobs/{job_id}/cancel", timeout=10)

    by_flag = {flag.decls[0].split("/")[0]: flag.path for flag in spec_flags()}
    for flag, value in values.items():
        section, _, key = by_flag[flag].rpartition(".")
        stored = config[section][key] if section else config[key]
        assert str(stored) == value or stored == float(value), (flag, stored)
    assert config["model"]["conditional"] is True
