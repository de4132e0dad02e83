"""/docs and /redoc open with every request to another host refused: their assets are served
by the app itself (from the fastapi-offline package), so they work without internet."""

from __future__ import annotations

from urllib.parse import urlsplit

from tests.web.conftest import VIEWPORT

LOCAL_HOSTS = {"127.0.0.1", "localhost"}
REDOCLY_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


def offline_page(browser, refused: list[str]):  # type: ignore[no-untyped-def]
    """A page whose requests to any host but this machine are aborted (and listed): routed
    before it opens, which conftest's open_page cannot do."""
    page = browser.new_page(viewport=VIEWPORT)

    def route(route) -> None:  # type: ignore[no-untyped-def]
        if urlsplit(route.request.url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort("internetdisconnected")

    page.route("**/*", route)
    return page


def test_swagger_ui_offline(live, browser, shot) -> None:  # type: ignore[no-untyped-def]
    refused: list[str] = []
    page = offline_page(browser, refused)
    try:
        response = page.goto(f"{live.url}/docs")
        assert response is not None and response.ok
        page.wait_for_selector(".opblock", timeout=30_000)
        paths = page.locator(".opblock .opblock-summary-path").all_inner_texts()
        assert "/v1/jobs" in paths, paths
        assert "/v1/jobs/{job_id}/dataset-preview" in paths, paths
        assert "/v1/datasets" in paths, paths
        shot(page, "swagger-ui")
    finally:
        page.close()
    assert refused == []  # nothing was even asked of another host


def test_redoc_offline(live, browser, shot) -> None:  # type: ignore[no-untyped-def]
    refused: list[str] = []
    page = offline_page(browser, refused)
    try:
        response = page.goto(f"{live.url}/redoc")
        assert response is not None and response.ok
        # ReDoc lists each operation in its side menu by summary, and its path in its panel
        page.get_by_role("menuitem").filter(has_text="Create Job").first.wait_for(timeout=30_000)
        assert "/v1/jobs/{job_id}/dataset-preview" in page.inner_text("body")
        shot(page, "redoc")
    finally:
        page.close()
    # ReDoc's bundle hard-codes one request: the Redocly logo of its menu footer, hidden when
    # it does not load; nothing on the page depends on it
    assert set(refused) <= {REDOCLY_LOGO}, refused


def test_assets_are_the_packages_files(live) -> None:  # type: ignore[no-untyped-def]
    from importlib import metadata, resources

    prefix = f"/docs/assets/{metadata.version('fastapi-offline')}"
    with live.client() as client:
        page = client.get("/docs")
        assert page.status_code == 200
        assert f"{prefix}/swagger-ui-bundle.js" in page.text
        assert "cdn.jsdelivr.net" not in page.text
        bundle = client.get(f"{prefix}/swagger-ui-bundle.js")
        assert bundle.status_code == 200
        assert bundle.headers["content-type"].startswith("text/javascript")
        assert "immutable" in bundle.headers["cache-control"]
        shipped = resources.files("fastapi_offline").joinpath("static", "swagger-ui-bundle.js")
        assert bundle.content == shipped.read_bytes()
        assert client.get(f"{prefix}/..%2F__init__.py").status_code == 404
        assert client.get(f"{prefix}/core.py").status_code == 404
