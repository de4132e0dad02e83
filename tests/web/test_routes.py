"""The dashboard's routes over HTTP: pages never cached, static files under a version and
cached for good, plotly.js from the installed package (npm's basic build, else the `plotly`
wheel's bundle), nothing outside static/."""

from __future__ import annotations

import gzip
import re
from importlib import resources
from pathlib import Path

import httpx
import pytest

from app.web import routes

WHEEL_BUNDLE = Path(str(resources.files("plotly").joinpath("package_data/plotly.min.js")))


def _plotly_installed() -> Path:
    """The plotly.js the app should serve: the basic build scripts/setup installs with npm,
    else the plotly wheel's."""
    npm_build = routes.NODE_MODULES / "plotly.js-basic-dist-min" / "plotly-basic.min.js"
    return npm_build if npm_build.is_file() else WHEEL_BUNDLE


def test_plotly_is_the_npm_basic_build_else_the_wheels(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    name = "vendor/plotly.min.js"
    wheel = routes.VENDOR[name][1]
    monkeypatch.setitem(routes.VENDOR, name, (tmp_path / "missing.js", wheel))
    assert routes._vendor_path(name) == WHEEL_BUNDLE
    build = tmp_path / "plotly-basic.min.js"
    build.write_text("/* a build */")
    monkeypatch.setitem(routes.VENDOR, name, (build, wheel))
    assert routes._vendor_path(name) == build


def test_pages_and_static_files(live) -> None:  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=live.url, timeout=60) as http:
        page = http.get("/jobs/any-id")  # the page itself needs no key: its data does
        assert page.status_code == 200 and page.headers["cache-control"] == "no-cache"
        prefix = re.search(r'src="(/static/[0-9a-f]+)/js/job.js"', page.text)
        assert prefix is not None
        static = prefix.group(1)

        script = http.get(f"{static}/js/api.js", headers={"Accept-Encoding": "gzip"})
        assert script.status_code == 200
        assert script.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert script.headers["content-type"].startswith("text/javascript")
        assert "export function followEvents" in script.text

        plotly = http.get(f"{static}/vendor/plotly.min.js", headers={"Accept-Encoding": "gzip"})
        assert plotly.headers["content-encoding"] == "gzip"
        bundle = _plotly_installed().read_bytes()
        assert plotly.content == bundle  # httpx undid the gzip
        raw = http.get(f"{static}/vendor/plotly.min.js", headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in raw.headers and raw.content == bundle
        assert len(gzip.compress(bundle)) < len(bundle) / 2

        # a page loaded before an upgrade asks for an old version: today's file, not cached
        old = http.get("/static/0123456789ab/css/app.css")
        assert old.status_code == 200 and old.headers["cache-control"] == "no-cache"

        # (a plain "../" is resolved by the client before it is sent; encoded, it arrives)
        for outside in ("..%2Froutes.py", "js%2F..%2F..%2Froutes.py", "%2Fetc%2Fpasswd", "nope.js"):
            response = http.get(f"{static}/{outside}")
            assert response.status_code == 404, outside
            assert response.json()["error"]["code"] == "not_found"
