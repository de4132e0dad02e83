"""The service's app as `bench/load_wrk.py` serves it: `app.main.create_app()` plus a bare
route, ``GET /bench/bare``, that answers the bytes last ``PUT`` there with no database, key
or schema work: the framework's ceiling on this machine for a body of that size. It lives
only in this benchmark's app instance, never in the public API.

    uvicorn wrk_app:create_app --factory --app-dir bench
"""

from __future__ import annotations

from fastapi import FastAPI, Request, Response

from app.main import create_app as create_service_app


def create_app() -> FastAPI:
    app = create_service_app()
    app.state.bare_body = b"{}"

    @app.put("/bench/bare", include_in_schema=False)
    async def set_bare(request: Request) -> Response:
        app.state.bare_body = await request.body()
        return Response(status_code=204)

    @app.get("/bench/bare", include_in_schema=False)
    async def bare() -> Response:
        return Response(app.state.bare_body, media_type="application/json")

    return app
