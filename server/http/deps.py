"""Shared route dependencies (``Annotated[..., Depends(...)]``): the store, the caller, the
settings and the metrics of the app. Everything comes from ``app.state``, set once by
``create_app``; tests swap any of them with ``app.dependency_overrides[get_...]``.

The getters are async on purpose: they are cheap (a key lookup is ~0.1 ms on SQLite), and a sync
dependency costs a threadpool hop on every request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from server.http.auth import Principal
from server.http.metrics import Metrics
from server.settings import Settings
from server.storage.store import Store


async def get_store(request: Request) -> Store:
    return request.app.state.store


async def get_principal(request: Request) -> Principal:
    return request.app.state.authenticate(request)


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


StoreDep = Annotated[Store, Depends(get_store)]
Who = Annotated[Principal, Depends(get_principal)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
