"""``/v1/jobs``: submit (202 + Location + Retry-After), list, get, cancel, delete, and the
server-sent event stream of a job's status and progress.

A submission is resolved here: ids of the caller's system, model and artifacts become the
system spec and file paths the job runs with, and the parameters are validated against the
job kind's schema, so bad input is a 422 now rather than a failed job later.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection
from sse_starlette import EventSourceResponse

from boltzgen.errors import BoltzgenError
from boltzgen.jobs import get_kind, iter_params, validate_params
from boltzgen.schemas import JobCreate, JobInfo, JobPage
from server.http.auth import Principal
from server.http.convert import job_info
from server.http.deps import MetricsDep, SettingsDep, StoreDep, Who
from server.http.idempotency import Made, idempotent
from server.http.pagination import Cursor, Limit, decode_cursor, encode_cursor
from server.http.problems import (
    BODY_PROBLEMS,
    Problem,
    boltzgen_problem,
    found,
    not_found,
    problem_responses,
)
from server.http.routes import V1
from server.settings import Settings
from server.storage.layout import job_root
from server.storage.store import Store
from server.storage.tables import STATUSES, TERMINAL

router = APIRouter(prefix=V1, tags=["jobs"])
# job statuses, comma-separated, blanks and empty items ignored: what list_jobs accepts (in the
# document only, so an unknown status gets list_jobs's message naming the known ones)
_STATUS = "({})?".format("|".join(STATUSES))
STATUS_FILTER = rf"^\s*{_STATUS}\s*(,\s*{_STATUS}\s*)*$"


# parameter name -> (settings field, problem title, problem type): checked wherever the name
# occurs in a job's parameters (nested models too), on the validated values
LIMITED = {
    "n_samples": ("max_samples", "Too many samples", "limit-samples"),
    "n_steps": ("max_md_steps", "Too many MD steps", "limit-steps"),
}


def _number(value: Any) -> float | None:
    """What a lax validator would make of ``value`` as a number (4e8, "4e8", "400000000")."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def check_limits(settings: Settings, params: dict[str, Any] | BaseModel) -> None:
    """422 naming the field when a limited parameter exceeds this server's limit: on the raw
    parameters (any number a validator would accept, strings included) and, once validated,
    on the coerced values anywhere in the parameters, so no spelling of a number slips by."""
    limited = (
        [(where, name, v) for where, name, v in iter_params(params) if name in LIMITED]
        if isinstance(params, BaseModel)
        else [(k, k, params[k]) for k in LIMITED if k in params]
    )
    for where, name, raw in limited:
        n = _number(raw)
        setting, title, type_ = LIMITED[name]
        limit = getattr(settings, setting)
        if n is not None and n > limit:
            shown = int(n) if isinstance(n, float) and n.is_integer() else n
            raise Problem(
                422,
                title,
                f"params.{where}={shown}; this server allows at most {limit} ({setting})",
                type_=type_,
            )


def _referenced(
    kind: str, what: str, ident: str | None, get: Callable[..., dict | None], *args: Any
) -> dict[str, Any]:
    """The caller's ``what`` (model, system) a job of ``kind`` names, ``get(ident, *args)``:
    422 if it names none or one this key does not have (a parameter of the job, not the
    path's resource: not a 404)."""
    if not ident:
        raise Problem(422, f"Missing {what}_id", f"job kind {kind!r} needs a {what}_id")
    row = get(ident, *args)
    if row is None:
        raise Problem(422, f"Unknown {what}", f"no {what} {ident!r}", type_=f"unknown-{what}")
    return row


def resolve_job(
    store: Store, who: Principal, settings: Settings, body: JobCreate, conn: Connection
) -> dict[str, Any]:
    """Validate a submission; returns the kwargs of ``Store.create_job``."""
    try:
        kind = get_kind(body.kind)
    except BoltzgenError as exc:
        raise boltzgen_problem(exc) from None
    for reserved in ("system", "model"):
        if reserved in body.params:
            raise Problem(
                422,
                "Reserved parameter",
                f"params.{reserved} is filled in by the server; send {reserved}_id instead",
            )
    check_limits(settings, body.params)
    params = dict(body.params)
    system_id, model_id = body.system_id, body.model_id
    if kind.needs_model:
        model = _referenced(kind.name, "model", model_id, store.get_model, who.scope, conn)
        params["model"] = model["path"]
        system_id = system_id or model["system_id"]
    if kind.needs_system:
        system = _referenced(kind.name, "system", system_id, store.get_system, who.scope, conn)
        params["system"] = system["spec"]
    for name in kind.artifact_fields:
        ref = params.get(name)
        if ref is None:
            continue
        art = store.get_artifact(str(ref), who.scope, conn) if isinstance(ref, str) else None
        if art is None:
            raise Problem(
                422,
                "Unknown artifact",
                f"params.{name}: no artifact {ref!r} (give an artifact id)",
                type_="unknown-artifact",
            )
        params[name] = art["path"]
    try:
        validated = validate_params(kind, params)
    except BoltzgenError as exc:
        raise boltzgen_problem(exc) from None
    check_limits(settings, validated)
    # the client's view, with the values as validated ("4e8" -> 400000000), artifact ids kept
    coerced = validated.model_dump(mode="json")
    client_params = {
        k: v if k in kind.artifact_fields else coerced.get(k, v) for k, v in body.params.items()
    }
    return {
        "kind": kind.name,
        "params": params,
        "client_params": client_params,
        "system_id": system_id if kind.needs_system else None,
        "model_id": model_id if kind.needs_model else None,
        "max_attempts": body.max_attempts or settings.max_attempts,
    }


@router.post(
    "/jobs",
    status_code=202,
    response_model=JobInfo,
    responses=problem_responses(*BODY_PROBLEMS, 429),
)
def submit_job(
    body: JobCreate,
    store: StoreDep,
    who: Who,
    settings: SettingsDep,
    metrics: MetricsDep,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    """Submit a job: 202 with ``Location`` (the job) and ``Retry-After`` (poll interval)."""

    def make(conn: Connection) -> Made:
        fields = resolve_job(store, who, settings, body, conn)
        active = store.count_active(who.owner, conn, at_most=settings.max_active_jobs_per_key)
        if active >= settings.max_active_jobs_per_key:
            raise Problem(
                429,
                "Too many active jobs",
                f"this key has {active} queued/running jobs (limit "
                f"{settings.max_active_jobs_per_key}); wait for some to finish",
                type_="limit-active-jobs",
                headers={"Retry-After": str(settings.retry_after_seconds * 5)},
            )
        job = store.create_job(who.owner, conn=conn, **fields)
        metrics.jobs_submitted.labels(kind=job["kind"]).inc()
        return (
            202,
            job_info(job).model_dump(mode="json"),
            f"/v1/jobs/{job['id']}",
            {"Retry-After": str(settings.retry_after_seconds)},
        )

    # a thread (sync endpoint): a write may wait for another process's SQLite lock, and that
    # must not stall the event loop (measured: inline was no faster under load)
    return idempotent(store, who, idempotency_key, "/v1/jobs", body.model_dump(), make)


@router.get("/jobs", response_model=JobPage, responses=problem_responses(422))
def list_jobs(
    store: StoreDep,
    who: Who,
    settings: SettingsDep,
    status: Annotated[
        list[Annotated[str, Field(json_schema_extra={"pattern": STATUS_FILTER})]] | None,
        Query(description="filter; repeat or comma-separate: queued,running"),
    ] = None,
    kind: str | None = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> JobPage:
    """Newest first. ``next_cursor`` is None on the last page."""
    statuses = [s.strip() for item in status or [] for s in item.split(",") if s.strip()]
    bad = [s for s in statuses if s not in STATUSES]
    if bad:
        raise Problem(422, "Invalid status filter", f"unknown status {bad}; use {list(STATUSES)}")
    limit = min(limit, settings.page_size_max)
    items, nxt = store.list_jobs(
        who.scope, statuses=statuses, kind=kind, cursor=decode_cursor(cursor), limit=limit
    )
    return JobPage(items=[job_info(j) for j in items], next_cursor=encode_cursor(nxt))


@router.get("/jobs/{job_id}", response_model=JobInfo, responses=problem_responses(404))
async def get_job(job_id: str, store: StoreDep, who: Who, settings: SettingsDep) -> JSONResponse:
    """One job. While it is active, ``Retry-After`` suggests when to poll again."""
    # the hot polling path: one indexed SQLite read, run inline (sub-millisecond)
    job = found(store.get_job(job_id, who.scope), "job", job_id)
    headers = None
    if job["status"] not in TERMINAL:
        headers = {"Retry-After": str(settings.retry_after_seconds)}
    return JSONResponse(job_info(job).model_dump(mode="json"), headers=headers)


@router.post(
    "/jobs/{job_id}/cancel",
    status_code=202,
    response_model=JobInfo,
    responses=problem_responses(404),
)
def cancel_job(job_id: str, store: StoreDep, who: Who) -> JobInfo:
    """Cancel: a queued job at once; a running one has its process killed by its worker
    (``cancel_requested`` is true until then). Cancelling a finished job changes nothing."""
    return job_info(found(store.request_cancel(job_id, who.scope), "job", job_id))


@router.delete("/jobs/{job_id}", status_code=204, responses=problem_responses(404, 409))
def delete_job(job_id: str, store: StoreDep, who: Who, settings: SettingsDep) -> Response:
    """Delete a finished job with its artifacts (409 while it is queued or running)."""
    try:
        paths = store.delete_job(job_id, who.scope)
    except ValueError as exc:
        raise Problem(409, "Job is active", str(exc)) from None
    if paths is None:
        raise not_found("job", job_id)
    shutil.rmtree(job_root(settings, job_id), ignore_errors=True)
    return Response(status_code=204)


@router.get(
    "/jobs/{job_id}/events",
    responses={200: {"content": {"text/event-stream": {}}}, **problem_responses(404, 422)},
)
async def job_events(
    job_id: str,
    request: Request,
    store: StoreDep,
    who: Who,
    settings: SettingsDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventSourceResponse:
    """Server-sent events: ``status``, ``progress`` (and ``cancel_requested``); each has an
    ``id``; reconnect with ``Last-Event-ID`` to resume. The stream ends after a final status."""
    found(await run_in_threadpool(store.get_job, job_id, who.scope), "job", job_id)
    try:
        after = int(last_event_id or request.query_params.get("last_event_id") or 0)
    except ValueError:
        raise Problem(422, "Invalid Last-Event-ID", "Last-Event-ID must be an event id") from None
    poll = settings.poll_seconds

    async def stream():
        last = after
        while True:
            # status before events: a job's final status and its event commit together, so
            # once the status reads terminal the events read after it holds the final event
            current = await run_in_threadpool(store.get_job, job_id, None)
            events = await run_in_threadpool(store.events_after, job_id, last)
            for e in events:
                last = e["id"]
                yield sse_event(e, job_id)
                if e["type"] == "status" and e["data"].get("status") in TERMINAL:
                    return
            if current is None or current["status"] in TERMINAL:
                return
            if not events:
                await asyncio.sleep(poll)

    return EventSourceResponse(stream(), ping=15)


def sse_event(event: dict, job_id: str) -> dict[str, str]:
    """A stored job event as one server-sent event."""
    data = {**event["data"], "job_id": job_id, "ts": event["ts"]}
    return {"id": str(event["id"]), "event": event["type"], "data": json.dumps(data)}
