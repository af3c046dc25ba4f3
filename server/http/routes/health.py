"""Operations routes at the root, no API key: ``/healthz`` (liveness), ``/readyz`` (store,
state directory, workers) and ``/metrics`` (Prometheus)."""

from __future__ import annotations

import os

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from boltzgen import __version__
from server.http.deps import MetricsDep, SettingsDep, StoreDep
from server.http.problems import problem_response

router = APIRouter(tags=["ops"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok", "version": __version__}


@router.get("/readyz")
def readyz(request: Request, store: StoreDep, settings: SettingsDep) -> Response:
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
        return JSONResponse({"status": "ready", "checks": checks})
    return problem_response(503, "Not ready", str(checks), checks=checks)


@router.get("/metrics", response_class=Response)
def metrics_endpoint(metrics: MetricsDep) -> Response:
    """Prometheus text format."""
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
