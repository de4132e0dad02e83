"""Prometheus metrics of the API: requests, latencies, jobs by status, queue depth, the sizes
of generation batches and the API processes up. Each app gets its own registry, so factories
can run twice.

With several API processes (``sngan serve --workers N``) every process records into files
under ``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess mode, chosen when that
variable is set before the client is imported), and ``/metrics`` from any of them sums them.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.queue import TRAIN_QUEUE
from app.core.status import JobStatus

log = logging.getLogger(__name__)


class _StateCollector(Collector):
    """Reads job counts and queue depth when scraped (never from a background loop)."""

    def __init__(
        self,
        counts: Callable[[], dict[str, int]],
        depth: Callable[[], int | None],
    ) -> None:
        self._counts = counts
        self._depth = depth

    def collect(self) -> Iterable[Metric]:
        jobs = GaugeMetricFamily("sngan_jobs", "Jobs by status.", labels=["status"])
        try:
            counts = self._counts()
        except Exception as e:
            log.warning("job counts unavailable for /metrics: %s", e)
            counts = {}
        for status in JobStatus:
            jobs.add_metric([status], counts.get(status, 0))
        yield jobs
        depth = self._depth()
        queue = GaugeMetricFamily(
            "sngan_queue_depth", "Training messages waiting in the broker.", labels=["queue"]
        )
        if depth is not None:
            queue.add_metric([TRAIN_QUEUE], depth)
        yield queue


class Telemetry:
    def __init__(
        self, counts: Callable[[], dict[str, int]], depth: Callable[[], int | None]
    ) -> None:
        self.registry = CollectorRegistry()
        multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        # in multiprocess mode the values live in files, read back by the collector below
        own = None if multiprocess else self.registry
        if multiprocess:
            MultiProcessCollector(self.registry)
        self.requests = Counter(
            "sngan_http_requests",
            "HTTP requests answered.",
            ["method", "route", "status"],
            registry=own,
        )
        self.latency = Histogram(
            "sngan_http_request_duration_seconds",
            "Time to answer an HTTP request (to the last byte).",
            ["method", "route"],
            registry=own,
        )
        self.generation_batch = Histogram(
            "sngan_generation_batch_size",
            "Images generated per call to the generator.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=own,
        )
        self.generation_seconds = Histogram(
            "sngan_generation_duration_seconds",
            "Time to generate and encode one sample request.",
            registry=own,
        )
        self.processes = Gauge(
            "sngan_api_processes",
            "API processes serving (one sample per live process in multiprocess mode).",
            registry=own,
            multiprocess_mode="livesum",
        )
        self.processes.set(1)
        self.registry.register(_StateCollector(counts, depth))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetricsMiddleware:
    """Counts and times every request by its route template (``/v1/jobs/{job_id}``)."""

    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        recorded = False

        def record() -> None:
            nonlocal recorded
            if recorded:
                return
            recorded = True
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.telemetry.requests.labels(method, template, str(status)).inc()
            self.telemetry.latency.labels(method, template).observe(time.perf_counter() - start)

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                record()  # at the last byte, before the request's dependencies are closed

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            record()
