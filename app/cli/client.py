"""The HTTP client the API commands share: the --url/--key/--json options and `Api`, which
turns the API's error bodies into one-line failures."""

from __future__ import annotations

import json
from typing import Annotated, Any

import httpx
import typer
from rich.table import Column

from app.cli.console import fail

UrlOpt = Annotated[str, typer.Option("--url", envvar="SNGAN_URL", help="Base URL of the API.")]
KeyOpt = Annotated[
    str | None,
    typer.Option("--key", envvar="SNGAN_API_KEY", help="API key (Bearer).", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the whole JSON object.")]
DEFAULT_URL = "http://127.0.0.1:8000"


class Api:
    """A thin httpx client that turns the API's error bodies into one-line failures."""

    def __init__(self, url: str, key: str | None, timeout: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.url = url.rstrip("/")
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            fail(f"cannot reach the API at {self.url}: {exc}")
        if response.is_error:
            fail(error_message(response))
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()


def error_message(response: httpx.Response) -> str:
    """The message of an API error body ``{"error": {"code", "message", "details"}}``."""
    try:
        body = response.json()
        error = body["error"]
        message = f"{error['message']} ({error['code']}, HTTP {response.status_code})"
        if error.get("details"):
            message += f"\n{json.dumps(error['details'], indent=2)}"
        return message
    except (ValueError, KeyError, TypeError):
        text = response.text.strip()[:500] or response.reason_phrase
        return f"HTTP {response.status_code}: {text}"


def id_column() -> Column:
    # Ids are for copying: never cut or wrapped, whatever the width.
    return Column("id", no_wrap=True, min_width=32)


def when(timestamp: str | None) -> str:
    return (timestamp or "")[:19].replace("T", " ")
