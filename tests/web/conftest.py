"""Fixtures of the browser tests: Debian's Chromium driven by Playwright (sync API), pages
opened against the live stacks of tests/conftest.py, and a folder of screenshots.

Each test saves a screenshot of the page it checked under ``$SNGAN_SCREENSHOTS`` (default: a
folder in pytest's temp directory); the folder is printed at the end of the run.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("SNGAN_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 900}
KEY_STORAGE = "sngan.apiKey"  # api.js keeps the key under this sessionStorage name

_shots_dir: Path | None = None


@pytest.fixture(scope="session")
def browser() -> Iterator:  # type: ignore[type-arg]
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        message = (
            f"the browser tests need Chromium at {CHROMIUM}: `apt-get install chromium` "
            "(./scripts/run test installs it when run as root), or set SNGAN_CHROMIUM"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    global _shots_dir
    folder = os.environ.get("SNGAN_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    _shots_dir = path
    return path


@pytest.fixture
def open_page(browser):  # type: ignore[no-untyped-def]
    """open_page(url, key=None, setup=None) -> a Playwright page in a fresh browser context
    (its own sessionStorage), holding `key` as if the user had typed it into the key form;
    `setup(page)` runs before it navigates. Errors the page's scripts throw fail the test."""
    contexts = []
    errors: list[str] = []

    def open_(url: str, key: str | None = None, setup=None):  # type: ignore[no-untyped-def]
        context = browser.new_context(viewport=VIEWPORT)
        contexts.append(context)
        if key is not None:
            context.add_init_script(
                f"sessionStorage.setItem({json.dumps(KEY_STORAGE)}, {json.dumps(key)})"
            )
        page = context.new_page()
        page.set_default_timeout(90_000)  # training on a shared 2-core box
        page.on("pageerror", lambda e: errors.append(str(e)))
        if setup is not None:
            setup(page)  # e.g. routes, before the first request
        page.goto(url)
        return page

    yield open_
    for context in contexts:
        context.close()
    assert not errors, f"errors thrown by the page's scripts: {errors}"


@pytest.fixture
def shot(screenshots: Path, request: pytest.FixtureRequest) -> Callable[..., Path]:
    """shot(page, name): save a full-page screenshot as <folder>/<test>-<name>.png."""

    def save(page, name: str = "page") -> Path:  # type: ignore[no-untyped-def]
        test = request.node.name.replace("[", "-").replace("]", "").replace("/", "_")
        path = screenshots / f"{test}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return save


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    # with $SNGAN_SCREENSHOTS set, tests/conftest.py says where (also under pytest-xdist,
    # whose controller never loads this file)
    if _shots_dir is not None and not os.environ.get("SNGAN_SCREENSHOTS"):
        terminalreporter.write_line(f"browser test screenshots: {_shots_dir}")


@pytest.fixture(scope="session")
def live(stack):  # type: ignore[no-untyped-def]
    """The stack (tests/conftest.py's, both kinds) reached over real HTTP, with a worker."""
    from tests.web.helpers import live_api

    return live_api(stack)
