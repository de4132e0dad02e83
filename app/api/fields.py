"""The building blocks of the request and response schemas (app/api/schemas.py): the values
the trainer accepts, as types; the database's integer domains; body fields that are strict,
bounded and free of NUL; limits read from the settings when a request is validated; and job
spec fields whose default and description are models/config.py's."""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, Strict
from pydantic_core import PydanticCustomError

from app.core.config import get_settings

# the values models/config.py accepts (ARCHS, LOSSES, ...), as types; test_job_spec.py checks
Arch = Literal["cnn32", "resnet32", "cnn48", "resnet48"]
Loss = Literal["hinge", "ns"]
LrDecay = Literal["linear", "none"]
Precision = Literal["auto", "fp32", "bf16"]
EvalMetric = Literal["is", "fid", "kid"]
BuiltinSource = Literal["cifar10", "stl10", "synthetic"]


def at_most(setting: str) -> AfterValidator:
    """Bound a value by ``settings.<setting>``; the message names the limit and its variable."""

    def check(value: Any) -> Any:
        limit = getattr(get_settings(), setting)
        size = len(value) if isinstance(value, str | list) else value
        if size is not None and size > limit:
            raise PydanticCustomError(
                "too_large",
                "must be at most {limit} (server limit SNGAN_{env})",
                {"limit": limit, "env": setting.upper()},
            )
        return value

    return AfterValidator(check)


# The database's integer domains: a value outside them is a 422 here, never an overflow in the
# driver (a 500). Query and path integers take Int64; stored labels and class counts Int32.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INT32_MAX = 2**31 - 1
Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
# Steps are 32-bit columns (metrics, checkpoints, grids): a step, or a number compared with
# steps in SQL (`every`), lies in [0, STEP_MAX]. Event ids are 64-bit.
STEP_MAX = INT32_MAX
# Body integers are also strict: JSON `true` is not the integer 1, nor "5" the integer 5.
# (no lower bound here: each field sets its own, which this would override)
BodyInt = Annotated[int, Strict(), Field(le=INT64_MAX)]
# Lists in a request body: bounded, so a body of a million entries is refused by its length
# before each entry is validated (and its errors echoed).
MAX_LIST_ITEMS = 16


def no_nul(value: str) -> str:
    if "\x00" in value:
        raise PydanticCustomError("nul_byte", "must not contain a NUL byte")
    return value


# Every string of a request body: PostgreSQL cannot store NUL in text (the URL and headers are
# checked by app.api.limits).
Text = Annotated[str, AfterValidator(no_nul)]


def strict(title: str) -> ConfigDict:
    return ConfigDict(extra="forbid", title=title)


def spec(config: type, name: str, **constraints: Any) -> Any:
    """A job spec field whose default and description are `config`'s (models/config.py)."""
    f = next(f for f in fields(config) if f.name == name)
    doc = f.metadata["doc"]
    if f.default_factory is not MISSING:
        return Field(default_factory=f.default_factory, description=doc, **constraints)
    return Field(default=f.default, description=doc, **constraints)
