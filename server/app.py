"""The FastAPI application factory: ``create_app(settings)``; ``app_from_env()`` for uvicorn.

    uvicorn --factory server.app:app_from_env      # or: boltzgen serve

Settings are read once, by whoever starts the process (``app_from_env``, the CLI, a test), and
passed down: the app, its worker pool and the executors get the same object and never consult
the environment again. The embedded default needs no other server: a SQLite (WAL) store under
``state_dir`` and a local worker pool thread (``workers`` processes at a time).
``executor="none"`` serves the API only (run ``boltzgen worker`` elsewhere); ``executor="ray"``
runs jobs as Ray tasks.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from boltzgen import __version__
from boltzgen.jobs import job_kinds, load_plugins
from server.http.api import api_router
from server.http.auth import Authenticator
from server.http.body_limit import BodyLimit
from server.http.methods import AllowedMethods
from server.http.metrics import Metrics, MetricsMiddleware
from server.http.openapi import install_openapi
from server.http.problems import CatchAll, install_handlers
from server.http.routes import health
from server.settings import Settings
from server.storage.store import Store
from server.web import install_web

log = logging.getLogger("boltzgen.server")


def create_app(settings: Settings | None = None, *, store: Store | None = None) -> FastAPI:
    """Build the app. ``store`` may be passed (tests); otherwise one is made from settings."""
    settings = settings or Settings()
    if settings.auth and settings.admin_key is None:
        log.warning("no BOLTZGEN_ADMIN_KEY: only API keys already in the store will work")
    Path(settings.state_dir).mkdir(parents=True, exist_ok=True)
    if settings.job_modules:
        load_plugins(settings.job_modules)
    store = store or Store(settings.sqlalchemy_url)
    store.create_all()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        pool = None
        if settings.executor != "none" and settings.workers > 0:
            from server.runner.worker import WorkerPool

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
    app.include_router(api_router)
    app.include_router(health.router)
    install_web(app)  # the web pages under /ui (server.web)
    # the job-submit schema: a union over the kinds registered now (built-ins and plugins)
    install_openapi(app, job_kinds())
    # outermost last: CatchAll > BodyLimit > metrics > methods > routes
    app.add_middleware(AllowedMethods, router=app.router)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(
        BodyLimit, limit=settings.max_body_bytes, max_json_depth=settings.max_json_depth
    )
    app.add_middleware(CatchAll)
    return app


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")


def server_app(settings: Settings) -> FastAPI:
    """The app of a server process (logging configured): what ``boltzgen serve`` runs."""
    configure_logging()
    return create_app(settings)


def app_from_env() -> FastAPI:
    """uvicorn factory: settings from ``BOLTZGEN_*``."""
    return server_app(Settings())
