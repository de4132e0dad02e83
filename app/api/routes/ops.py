"""Operations: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from app.api.errors import error_body
from app.api.schemas import error_responses
from app.core import db, queue

log = logging.getLogger(__name__)

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up (nothing else is checked)."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={200: {"description": "Database and broker reachable"}, **error_responses(503)},
)
def readyz() -> JSONResponse:
    """Ready when the database and the broker answer; 503 naming what does not."""
    checks: dict[str, Any] = {}
    for name, probe in (("database", db.ping), ("broker", queue.broker_check)):
        try:
            probe()
            checks[name] = "ok"
        except Exception as e:
            log.warning("readiness: %s unreachable: %s", name, e)
            checks[name] = f"unreachable: {type(e).__name__}"
    failing = [name for name, state in checks.items() if state != "ok"]
    if failing:
        body = error_body("not_ready", f"{' and '.join(failing)} unreachable", details=checks)
        return JSONResponse(body, status_code=503)
    return JSONResponse({"status": "ready", "checks": checks})


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
)
def metrics(request: Request) -> Response:
    """Prometheus text format: requests, latencies, jobs by status, queue depth, batch sizes."""
    return Response(request.app.state.telemetry.render(), media_type=CONTENT_TYPE_LATEST)
