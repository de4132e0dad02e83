"""The API served in this process through its ASGI app, for the tests' stacks (tests/stacks.py).

The API reads its settings from the environment (a cached ``get_settings()``) and its engines
from cached factories, so one app at a time is served: `serve` puts its settings in
``os.environ``, clears those caches, runs the app's lifespan (the reaper included) on an event
loop of its own, and undoes all of it on the way out.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import httpx
from anyio.from_thread import BlockingPortal, start_blocking_portal

if TYPE_CHECKING:
    from fastapi import FastAPI

BASE_URL = "http://testserver"  # in-process requests never leave this process


class PortalTransport(httpx.BaseTransport):
    """Synchronous requests into an ASGI app running on `portal`'s event loop (httpx's own
    ASGITransport is async only). The client's read timeout bounds the whole response, as a
    stalled server would be noticed over a socket."""

    def __init__(self, app: FastAPI, portal: BlockingPortal) -> None:
        self._asgi = httpx.ASGITransport(app=app)
        self._portal = portal

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()  # the body is now a byte stream, readable from the event loop too
        timeout = request.extensions.get("timeout", {}).get("read")

        async def call() -> httpx.Response:
            with anyio.fail_after(timeout):
                response = await self._asgi.handle_async_request(request)
                body = await response.aread()
            return httpx.Response(response.status_code, headers=response.headers, content=body)

        try:
            return self._portal.call(call)
        except TimeoutError:
            raise httpx.ReadTimeout(
                f"no full response within {timeout}s", request=request
            ) from None


@dataclass
class Served:
    """The app of a stack, running in this process until `Stack.serving` ends."""

    app: FastAPI
    portal: BlockingPortal

    def client(self, key: str | None = None, timeout: float = 60) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(
            transport=PortalTransport(self.app, self.portal),
            base_url=BASE_URL,
            headers=headers,
            timeout=timeout,
        )


_default_engine_of: list[str] = []  # the database of the engine cached for "no URL given"
_stack_urls: set[str] = set()  # the databases of the stacks alive, whose engines are cached


def _use_default_engine(database_url: str) -> None:
    """Make the engine the app builds without a URL (``get_engine()``, cached) be
    `database_url`'s. The engine cache can only be cleared whole: every engine in it is
    closed first (the app's and the stacks'; they are built again on use), so no pooled
    connection is left to the garbage collector. Kept while the same database is served
    again, so tests reuse its pooled connections."""
    from app.core.db import get_engine, session_factory

    if _default_engine_of == [database_url]:
        return
    if _default_engine_of:
        for engine in {get_engine(None), *map(get_engine, _stack_urls)}:
            engine.dispose()
        get_engine.cache_clear()
        session_factory.cache_clear()
        _default_engine_of.clear()
    _default_engine_of.append(database_url)


@contextlib.contextmanager
def engines_closed_after(database_url: str, env: Mapping[str, str]) -> Iterator[None]:
    """While a stack of `database_url` lives, its engine is one of those closed when the
    default engine changes; afterwards its engines (the app's among them) are closed."""
    from app.core.db import get_engine

    _stack_urls.add(database_url)
    try:
        yield
    finally:
        if _default_engine_of == [database_url]:
            with settings_environment(env):  # where get_engine(None) is this database's
                _use_default_engine("")  # closes the app's engine of it, and the others
        get_engine(database_url).dispose()
        _stack_urls.discard(database_url)


@contextlib.contextmanager
def settings_environment(env: Mapping[str, str]) -> Iterator[None]:
    """`env`'s SNGAN_ settings in ``os.environ`` instead of the caller's, with the cached
    settings cleared on the way in and out."""
    from app.core.config import get_settings

    saved = {k: v for k, v in os.environ.items() if k.startswith("SNGAN_")}
    for name in saved:
        del os.environ[name]
    os.environ.update({k: v for k, v in env.items() if k.startswith("SNGAN_")})
    get_settings.cache_clear()
    try:
        yield
    finally:
        for name in [k for k in os.environ if k.startswith("SNGAN_")]:
            del os.environ[name]
        os.environ.update(saved)
        get_settings.cache_clear()


_served: list[Served] = []  # the app whose settings are in force: one at a time


@contextlib.contextmanager
def serve(env: Mapping[str, str], log: Path) -> Iterator[Served]:
    """`create_app()` with `env`'s settings, its lifespan (the reaper included) running on an
    event loop of its own, its log records appended to `log`; afterwards the caller's
    settings are back."""
    if _served:
        raise RuntimeError("another app is being served in this process")
    handler = logging.FileHandler(log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    with settings_environment(env), start_blocking_portal() as portal:
        from app.core.config import get_settings
        from app.main import create_app

        _use_default_engine(str(get_settings().database_url))
        root.addHandler(handler)
        try:
            app = create_app()
            with portal.wrap_async_context_manager(app.router.lifespan_context(app)):
                _served.append(Served(app, portal))
                try:
                    yield _served[-1]
                finally:
                    _served.pop()
        finally:
            root.removeHandler(handler)
            handler.close()
