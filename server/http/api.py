"""``api_router``: every REST resource router (each under ``/v1``, see ``server.http.routes``); the
ops routes of ``server.http.routes.health`` stay at the root, where probes and scrapers look."""

from __future__ import annotations

from fastapi import APIRouter

from server.http.routes import artifacts, jobs, keys, kinds, models, systems

api_router = APIRouter()
for module in (systems, jobs, artifacts, models, kinds, keys):
    api_router.include_router(module.router)
