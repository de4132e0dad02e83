"""`sngan jobs submit`'s job spec flags, made from models/config.py's dataclasses.

Every field a job request sets, with a scalar type, becomes an option named after it
(``train.batch_size`` -> ``--batch-size``; the `flag` metadata names the others:
``eval.every`` -> ``--eval-every``), typed as the field, with the field's help text. A field
added to the config is a flag without an edit here.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import Field, dataclass
from types import NoneType, UnionType
from typing import Annotated, Any, TypeVar, Union

import typer

from models.config import SECTIONS, RunConfig, request_fields

F = TypeVar("F", bound=Callable[..., Any])
SCALARS = (bool, int, float, str)


@dataclass(frozen=True)
class SpecFlag:
    param: str  # the Python parameter's name
    path: str  # where the value goes in the job body, dotted: "train.batch_size"
    kind: type
    decls: tuple[str, ...]  # "--batch-size", or "--conditional/--unconditional"
    help: str


def spec_flags() -> list[SpecFlag]:
    """One flag per scalar request field of the run config: the sections' first, in order."""
    fields: list[tuple[str, Field[Any], Any]] = []
    top: list[tuple[str, Field[Any], Any]] = []
    hints = typing.get_type_hints(RunConfig)
    for f in request_fields(RunConfig):
        if f.name in SECTIONS:
            kind = SECTIONS[f.name]
            section_hints = typing.get_type_hints(kind)
            fields += [(f"{f.name}.", g, section_hints[g.name]) for g in request_fields(kind)]
        else:
            top.append(("", f, hints[f.name]))
    flags = (_flag(prefix, f, hint) for prefix, f, hint in [*fields, *top])
    return [flag for flag in flags if flag is not None]


def _flag(prefix: str, f: Field[Any], hint: Any) -> SpecFlag | None:
    kind = _scalar(hint)
    if kind is None:  # a list or a tuple (eval.metrics, train.betas): job files only
        return None
    names = (f.metadata.get("flag") or f.name.replace("_", "-")).split("/")
    decls = "/".join(f"--{n}" for n in names)
    return SpecFlag(names[0].replace("-", "_"), prefix + f.name, kind, (decls,), f.metadata["doc"])


def _scalar(hint: Any) -> type | None:
    """`int` for ``int`` and ``int | None``; None for anything else."""
    if typing.get_origin(hint) in (Union, UnionType):
        args = [a for a in typing.get_args(hint) if a is not NoneType]
        hint = args[0] if len(args) == 1 else None
    return hint if hint in SCALARS else None


def with_spec_flags(func: F) -> F:
    """Add the spec flags to a command with a ``spec`` parameter: typer reads the signature
    made here, and the command gets ``spec`` as {dotted path: value or None (not given)}."""
    flags = spec_flags()
    by_param = {flag.param: flag for flag in flags}
    signature = inspect.signature(func, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "spec"]
    clash = {p.name for p in own} & set(by_param)
    assert not clash, f"spec flags clash with the command's own options: {clash}"
    added = [
        inspect.Parameter(
            flag.param,
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[flag.kind | None, typer.Option(*flag.decls, help=flag.help)],
        )
        for flag in flags
    ]

    @functools.wraps(func)
    def command(**kwargs: Any) -> Any:
        spec = {by_param[k].path: kwargs.pop(k) for k in list(kwargs) if k in by_param}
        return func(**kwargs, spec=spec)

    # the command's own options first, in their order, then the spec's
    params = [*own, *added]
    command.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    return typing.cast(F, command)
