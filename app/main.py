"""The FastAPI application factory: ``uvicorn app.main:create_app --factory``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from app.api import openapi_links
from app.api.errors import install_error_handlers
from app.api.limits import RequestLimitsMiddleware
from app.api.observability import RequestMetricsMiddleware, Telemetry
from app.api.routes import datasets, generate, jobs, keys, ops, outputs, webhooks
from app.api.schemas import error_responses
from app.api.services import webhook_delivery
from app.api.services.datasets import sweep_incoming
from app.api.services.jobs import counts_by_status
from app.core import queue
from app.core.config import get_settings
from app.core.db import migrate, session_factory
from app.core.leases import reap
from app.web import docs
from app.web import router as web_router

log = logging.getLogger(__name__)


def configure_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("app").setLevel(level.upper())


def _job_counts() -> dict[str, int]:
    with session_factory()() as session:
        return counts_by_status(session)


def reap_once() -> None:
    report = reap(session_factory(), get_settings(), queue.enqueue_training)
    if report.requeued or report.canceled or report.enqueued:
        log.info(
            "reaper: re-queued %s, canceled %s, enqueued %s",
            report.requeued,
            report.canceled,
            report.enqueued,
        )


async def _reaper_loop(interval: float) -> None:
    while True:
        try:
            await run_in_threadpool(reap_once)
        except Exception:  # the database may be down for a while; try again next round
            log.exception("reaper round failed")
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    if settings.auth == "off":
        log.warning(
            "SNGAN_AUTH=off: authentication is disabled, every request acts as owner 'local'"
        )
    settings.datasets_dir.mkdir(parents=True, exist_ok=True)
    sweep_incoming(settings)  # temp uploads a crash left behind
    settings.jobs_dir.mkdir(parents=True, exist_ok=True)
    queue.ensure_broker_dirs(settings)
    if settings.migrate_on_startup:
        await run_in_threadpool(migrate)
    reaper = asyncio.create_task(_reaper_loop(settings.reaper_interval_s))
    # the webhook outbox's sender (why in this process: app/api/services/webhook_delivery.py)
    deliverer = asyncio.create_task(webhook_delivery.run(session_factory(), settings))
    try:
        yield
    finally:
        for task in (reaper, deliverer):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def create_app() -> FastAPI:
    settings = get_settings()
    configure_logging(settings.log_level)
    app = FastAPI(
        title="sngan-service",
        version="1",
        summary="Train Spectral-Normalization GANs as jobs and serve the images they generate.",
        lifespan=lifespan,
        docs_url=None,  # app.web.docs serves /docs and /redoc with their assets, no CDN
        redoc_url=None,
    )
    telemetry = Telemetry(counts=_job_counts, depth=queue.queue_depth)
    app.state.telemetry = telemetry
    install_error_handlers(app)
    openapi_links.install(app)  # ids from creates link to the routes that take them
    app.add_middleware(RequestLimitsMiddleware)  # body size, NUL bytes: before any route
    app.add_middleware(RequestMetricsMiddleware, telemetry=telemetry)
    for module in (datasets, jobs, outputs, generate, webhooks, keys):
        # any authenticated route may answer 429 (rate limit) or 503 (database unreachable)
        app.include_router(module.router, responses=error_responses(429, 503))
    app.include_router(ops.router)
    app.include_router(web_router)  # the dashboard: pages at /, /jobs/{id}; /static/
    app.include_router(docs.router)
    return app
