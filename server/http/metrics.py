"""Prometheus metrics: request counts and latency by route template, jobs submitted by kind,
and jobs in the store by status (counted at scrape time). Each app has its own registry, so
several apps can live in one process (tests)."""

from __future__ import annotations

import logging
import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from server.storage.store import Store

log = logging.getLogger("boltzgen.server")


class Metrics:
    """Prometheus metrics of one app."""

    def __init__(self, store: Store) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "boltzgen_http_requests_total",
            "HTTP requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "boltzgen_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
        )
        self.jobs_submitted = Counter(
            "boltzgen_jobs_submitted_total", "jobs submitted", ["kind"], registry=self.registry
        )
        store_ref = store

        class _JobsCollector:
            def collect(self):
                g = GaugeMetricFamily(
                    "boltzgen_jobs", "jobs in the store by status", labels=["status"]
                )
                try:
                    for status, n in store_ref.count_by_status().items():
                        g.add_metric([status], n)
                except Exception:  # a scrape must not fail because the DB is busy
                    log.exception("metrics: counting jobs failed")
                yield g

        self.registry.register(_JobsCollector())


class MetricsMiddleware:
    """Pure ASGI middleware counting requests by route template and timing them."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = 500

        async def send_wrapper(msg):
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(scope["method"], path, str(status)).inc()
            self.metrics.latency.labels(scope["method"], path).observe(time.perf_counter() - t0)
