"""The FastAPI application factory: ``create_app(settings)``; ``app_from_env()`` for uvicorn.

    uvicorn --factory server.app:app_from_env      # or: boltzgen serve

The embedded default needs no other server: a SQLite (WAL) store under ``state_dir`` and a
local worker pool thread (``workers`` processes at a time). ``executor="none"`` serves the API
only (run ``boltzgen worker`` elsewhere); ``executor="ray"`` runs jobs as Ray tasks.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from boltzgen import __version__
from boltzgen.jobs import load_plugins
from server.api import router
from server.auth import Authenticator
from server.problems import install_handlers, problem_response
from server.settings import Settings
from server.store import Store

log = logging.getLogger("boltzgen.server")


class Metrics:
    """Prometheus metrics of one app (own registry, so several apps can live in one process)."""

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


class BodyLimit:
    """Pure ASGI middleware: 413 problem+json for bodies over ``limit`` bytes (declared
    Content-Length or counted while streaming)."""

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = None
        for k, v in scope["headers"]:
            if k == b"content-length":
                try:
                    declared = int(v)
                except ValueError:
                    declared = None
        if declared is not None and declared > self.limit:
            return await self._reject(scope, receive, send)
        seen = 0
        started = False

        class TooLarge(Exception):
            pass

        async def counting_receive():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise TooLarge
            return msg

        async def tracking_send(msg):
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except TooLarge:
            if not started:
                await self._reject(scope, receive, send)

    async def _reject(self, scope, receive, send):
        resp = problem_response(
            413,
            "Content Too Large",
            f"the request body exceeds {self.limit} bytes",
            type_="urn:boltzgen:problem:limit-body",
            instance=scope.get("path"),
            headers={"Connection": "close"},
        )
        await resp(scope, receive, send)


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


def create_app(settings: Settings | None = None, *, store: Store | None = None) -> FastAPI:
    """Build the app. ``store`` may be passed (tests); otherwise one is made from settings."""
    settings = settings or Settings()
    if settings.auth and settings.admin_key is None:
        log.warning("no BOLTZGEN_ADMIN_KEY: only API keys already in the store will work")
    Path(settings.state_dir).mkdir(parents=True, exist_ok=True)
    if settings.job_modules:
        os.environ.setdefault("BOLTZGEN_JOB_MODULES", settings.job_modules)
        load_plugins(settings.job_modules)
    store = store or Store(settings.sqlalchemy_url)
    store.create_all()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        pool = None
        if settings.executor != "none" and settings.workers > 0:
            from server.worker import WorkerPool

            pool = WorkerPool(settings, store)
            pool.start()
        app.state.pool = pool
        try:
            yield
        finally:
            if pool is not None:
                await run_in_threadpool(pool.stop)

    app = FastAPI(
        title="boltzgen",
        version=__version__,
        description="Boltzmann generators as a service: upload systems, run MD / training / "
        "sampling / free-energy jobs, download artifacts. Errors are RFC 9457 problem+json; "
        "long jobs follow the 202 + Location + Retry-After pattern.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.authenticate = Authenticator(settings, store)
    app.state.metrics = metrics = Metrics(store)
    app.state.pool = None
    install_handlers(app)
    app.include_router(router)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok", "version": __version__}

    @app.get("/readyz", tags=["ops"])
    def readyz(request: Request) -> Response:
        """Readiness: the store answers, the state directory is writable, workers run."""
        checks: dict[str, str] = {}
        try:
            store.ping()
            checks["store"] = "ok"
        except Exception as exc:
            checks["store"] = f"error: {type(exc).__name__}"
        checks["state_dir"] = "ok" if os.access(settings.state_dir, os.W_OK) else "not writable"
        pool = request.app.state.pool
        if settings.executor != "none" and settings.workers > 0:
            checks["workers"] = "ok" if pool is not None and pool.alive else "not running"
        if all(v == "ok" for v in checks.values()):
            return Response(
                content=__import__("json").dumps({"status": "ready", "checks": checks}),
                media_type="application/json",
            )
        return problem_response(503, "Not ready", str(checks), checks=checks)

    @app.get("/metrics", tags=["ops"], response_class=Response)
    def metrics_endpoint() -> Response:
        """Prometheus text format."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    return app


def app_from_env() -> FastAPI:
    """uvicorn factory: settings from ``BOLTZGEN_*``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return create_app(Settings())
