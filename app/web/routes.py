"""Routes of the dashboard: the pages, their static files, and plotly.js from a registry package.

Static URLs carry a version (``/static/<version>/js/api.js``), a hash of every file under
``static/`` and of the installed plotly, so they can be cached for a year: a changed file
changes the version, and the pages (never cached) name the new one. ES modules import each
other by relative paths, which keeps them under the same version.

The pages carry no data and need no key: every byte of a job comes from ``/v1`` with the
key the page holds, exactly as a script would get it.
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse

from app.api.errors import ApiError

WEB_DIR = Path(__file__).resolve().parent
PAGES_DIR = WEB_DIR / "pages"
STATIC_DIR = WEB_DIR / "static"
# plotly.js, never from a CDN or a copy in the repository: its basic build (scatter, bar, pie:
# all the pages draw; 1.2 MB, which starts in a fraction of the full bundle's time) where
# `scripts/setup` installed it from the npm registry (app/web/package-lock.json), else the
# full 4.8 MB bundle of the installed `plotly` wheel (same API), so a machine with Python
# alone still has a dashboard.
NODE_MODULES = WEB_DIR / "node_modules"
VENDOR = {
    "vendor/plotly.min.js": (
        NODE_MODULES / "plotly.js-basic-dist-min" / "plotly-basic.min.js",
        ("plotly", "package_data/plotly.min.js"),
    )
}

_IMMUTABLE = "public, max-age=31536000, immutable"
_MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes
    media_type: str


def _vendor_path(name: str) -> Path:
    npm_file, (package, inside) = VENDOR[name]
    if npm_file.is_file():
        return npm_file
    return Path(str(resources.files(package).joinpath(inside)))


@cache
def static_version() -> str:
    """A short hash of the static files and the vendored bundles (computed once a process)."""
    digest = hashlib.sha256()
    for path in sorted(STATIC_DIR.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(STATIC_DIR).as_posix().encode())
            digest.update(path.read_bytes())
    for name in sorted(VENDOR):
        digest.update(name.encode())
        digest.update(str(_vendor_path(name).stat().st_size).encode())
    return digest.hexdigest()[:12]


_assets: dict[str, Asset] = {}  # only files that exist: a request cannot grow it


def _asset(name: str) -> Asset | None:
    """A static file by its path under ``static/`` (or a vendored one), read and gzipped once;
    None when there is no such file. Paths never leave ``static/``."""
    if name in _assets:
        return _assets[name]
    if name in VENDOR:
        path = _vendor_path(name)
    else:
        path = (STATIC_DIR / name).resolve()
        if not path.is_relative_to(STATIC_DIR) or not path.is_file():
            return None
    body = path.read_bytes()
    media_type = _MEDIA_TYPES.get(path.suffix) or (
        mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    )
    asset = Asset(body, gzip.compress(body, compresslevel=6, mtime=0), media_type)
    _assets[name] = asset
    return asset


@cache
def render_page(name: str) -> str:
    """``pages/<name>.html`` with ``{{static}}`` replaced by the versioned static prefix."""
    html = (PAGES_DIR / f"{name}.html").read_text(encoding="utf-8")
    return html.replace("{{static}}", f"/static/{static_version()}")


def _page(name: str) -> HTMLResponse:
    # never cached: a page names the current static version
    return HTMLResponse(render_page(name), headers={"Cache-Control": "no-cache"})


@router.get("/")
def jobs_page() -> HTMLResponse:
    """The key's jobs and the new-job form."""
    return _page("jobs")


@router.get("/jobs/{job_id}")
def job_page(job_id: str) -> HTMLResponse:
    """One job: curves, sample timeline, generate panel, checkpoints. The script reads the id
    from the URL; a job this key cannot see is a 404 from the API, shown on the page."""
    return _page("job")


@router.get("/compare")
def compare_page() -> HTMLResponse:
    """2 to 8 jobs (``?jobs=a,b``): curves on shared step axes, grids at one step."""
    return _page("compare")


@router.get("/static/{version}/{name:path}")
def static_file(version: str, name: str, request: Request) -> Response:
    asset = _asset(name)
    if asset is None:
        raise ApiError(404, "not_found", f"no static file {name}")
    # an old version's URL (a page loaded before an upgrade) gets today's file, uncached
    cache_control = _IMMUTABLE if version == static_version() else "no-cache"
    headers = {"Cache-Control": cache_control, "Vary": "Accept-Encoding"}
    if "gzip" in request.headers.get("accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return Response(asset.gzipped, media_type=asset.media_type, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)
