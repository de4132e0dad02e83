"""/docs (Swagger UI) and /redoc with their assets served by the app, not from a CDN, so the
API's documentation opens on a machine without internet.

The bundles come from the installed ``fastapi-offline`` package (its ``static/`` folder); the
pages are FastAPI's own (`get_swagger_ui_html`, `get_redoc_html`) pointed at them. Asset URLs
carry the package's version, so browsers may keep them until it is upgraded. ``create_app``
turns FastAPI's CDN-backed pages off (``docs_url=None``, ``redoc_url=None``).
"""

from __future__ import annotations

from functools import cache
from importlib import metadata, resources
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from app.api.errors import not_found

PACKAGE = "fastapi_offline"
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}

router = APIRouter(include_in_schema=False)


@cache
def _prefix() -> str:
    return f"/docs/assets/{metadata.version('fastapi-offline')}"


def _asset_path(name: str) -> Path:
    return Path(str(resources.files(PACKAGE).joinpath("static", name)))


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI over the app's OpenAPI document; "Authorize" takes an API key."""
    app = request.app
    return get_swagger_ui_html(
        openapi_url=app.openapi_url,
        title=f"{app.title} - Swagger UI",
        swagger_js_url=f"{_prefix()}/swagger-ui-bundle.js",
        swagger_css_url=f"{_prefix()}/swagger-ui.css",
        swagger_favicon_url=f"{_prefix()}/favicon.png",
        swagger_ui_parameters=app.swagger_ui_parameters,
    )


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    app = request.app
    return get_redoc_html(
        openapi_url=app.openapi_url,
        title=f"{app.title} - ReDoc",
        redoc_js_url=f"{_prefix()}/redoc.standalone.js",
        redoc_favicon_url=f"{_prefix()}/favicon.png",
        with_google_fonts=False,  # fonts.googleapis.com is the internet too
    )


@router.get("/docs/assets/{version}/{name}")
def docs_asset(version: str, name: str) -> FileResponse:
    """One of the bundles; only the four named files, from the package's folder."""
    if name not in ASSETS:
        raise not_found("docs asset", name)
    current = f"/docs/assets/{version}" == _prefix()
    # a page from before an upgrade gets today's file, not cached
    cache_control = "public, max-age=31536000, immutable" if current else "no-cache"
    return FileResponse(
        _asset_path(name), media_type=ASSETS[name], headers={"Cache-Control": cache_control}
    )
