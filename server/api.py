"""REST resources: systems, jobs (+ cancel, SSE events), artifacts, models, kinds, API keys."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import re
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sse_starlette import EventSourceResponse

from boltzgen.client.models import (
    ArtifactInfo,
    ArtifactList,
    JobCreate,
    JobInfo,
    JobPage,
    KeyCreate,
    KeyInfo,
    KindInfo,
    ModelInfo,
    ModelPage,
    SystemCreate,
    SystemInfo,
    SystemPage,
)
from boltzgen.errors import BoltzgenError
from boltzgen.jobs import get_kind, job_kinds, validate_params
from server.auth import Principal
from server.problems import PROBLEM_JSON, Problem, boltzgen_problem
from server.store import STATUSES, TERMINAL, Store

router = APIRouter(prefix="/v1")

PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"content": {PROBLEM_JSON: {}}, "description": desc}
    for code, desc in {
        401: "missing or invalid API key",
        404: "not found (or owned by another key)",
        409: "conflict",
        413: "body too large",
        422: "invalid input",
        429: "too many active jobs",
    }.items()
}


# ---------------------------------------------------------------- dependencies and helpers


async def get_store(request: Request) -> Store:
    return request.app.state.store


async def get_principal(request: Request) -> Principal:
    # async: cheap (cached key lookups), and sync dependencies cost a threadpool hop each
    return request.app.state.authenticate(request)


StoreDep = Annotated[Store, Depends(get_store)]
Who = Annotated[Principal, Depends(get_principal)]


def _ts(x: float | None) -> datetime | None:
    return None if x is None else datetime.fromtimestamp(x, UTC)


def encode_cursor(seq: int | None) -> str | None:
    return (
        None if seq is None else base64.urlsafe_b64encode(f"s{seq}".encode()).decode().rstrip("=")
    )


def decode_cursor(cursor: str | None) -> int | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith("s"):
            raise ValueError
        return int(raw[1:])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Problem(
            422, "Invalid cursor", f"cursor {cursor!r} is not one this API issued"
        ) from None


def job_info(job: dict[str, Any]) -> JobInfo:
    base = f"/v1/jobs/{job['id']}"
    params = job.get("client_params")
    if params is None:
        params = {
            k: v for k, v in (job.get("params") or {}).items() if k not in ("system", "model")
        }
    return JobInfo(
        id=job["id"],
        kind=job["kind"],
        status=job["status"],
        progress=job["progress"],
        message=job["message"] or "",
        attempts=job["attempts"],
        max_attempts=job["max_attempts"],
        cancel_requested=bool(job["cancel_requested"]),
        system_id=job.get("system_id"),
        model_id=job.get("model_id"),
        params=params,
        created_at=_ts(job["created_at"]),
        updated_at=_ts(job["updated_at"]),
        started_at=_ts(job.get("started_at")),
        finished_at=_ts(job.get("finished_at")),
        result=job.get("result"),
        error=job.get("error"),
        last_error=job.get("last_error"),
        links={
            "self": base,
            "events": f"{base}/events",
            "artifacts": f"{base}/artifacts",
            "cancel": f"{base}/cancel",
        },
    )


def system_info(s: dict[str, Any]) -> SystemInfo:
    return SystemInfo(
        id=s["id"],
        name=s["name"],
        n_atoms=s["n_atoms"],
        solvent=s["solvent"],
        temperature=s["temperature"],
        forcefield=list(s["forcefield"]),
        created_at=_ts(s["created_at"]),
    )


def artifact_info(a: dict[str, Any]) -> ArtifactInfo:
    return ArtifactInfo(
        id=a["id"],
        job_id=a["job_id"],
        name=a["name"],
        size=a["size"],
        media_type=a["media_type"],
        created_at=_ts(a["created_at"]),
        links={"self": f"/v1/artifacts/{a['id']}", "content": f"/v1/artifacts/{a['id']}/content"},
    )


def model_info(m: dict[str, Any]) -> ModelInfo:
    return ModelInfo(
        id=m["id"],
        name=m["name"],
        system_id=m["system_id"],
        job_id=m["job_id"],
        size=m["size"],
        summary=m["summary"],
        created_at=_ts(m["created_at"]),
        links={"self": f"/v1/models/{m['id']}", "content": f"/v1/models/{m['id']}/content"},
    )


def not_found(what: str, ident: str) -> Problem:
    return Problem(404, "Not Found", f"no {what} {ident!r}")


def _request_hash(path: str, payload: Any) -> str:
    blob = json.dumps({"path": path, "body": payload}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


Made = tuple[int, Any, str | None, dict[str, str]]


def idempotent(
    store: Store,
    who: Principal,
    key: str | None,
    path: str,
    payload: Any,
    make: Callable[[Connection], Made],
) -> JSONResponse:
    """Run ``make(conn)`` in one write transaction, at most once per (key owner,
    Idempotency-Key): the same key with the same body replays the first response (header
    ``Idempotent-Replayed: true``); with a different body it is a 422. Requests that fail
    record nothing, so the key can be retried."""

    def respond(
        status: int, body: Any, location: str | None, extra: dict[str, str]
    ) -> JSONResponse:
        headers = dict(extra)
        if location:
            headers["Location"] = location
        return JSONResponse(body, status_code=status, headers=headers)

    def replay(row: dict[str, Any]) -> JSONResponse:
        if row["request_hash"] != digest:
            raise Problem(
                422,
                "Idempotency-Key reused",
                "this Idempotency-Key was used with a different request body",
                type_="idempotency-key-reused",
            )
        extra = {"Idempotent-Replayed": "true"}
        if row["status_code"] == 202:
            extra["Retry-After"] = "1"
        return respond(row["status_code"], row["body"], row["location"], extra)

    if not key:
        with store.transaction() as conn:
            return respond(*make(conn))
    if len(key) > 200:
        raise Problem(422, "Invalid Idempotency-Key", "Idempotency-Key is longer than 200 chars")
    digest = _request_hash(path, payload)
    try:
        with store.transaction() as conn:
            row = store.idem_get(who.owner, key, conn)
            if row is not None:
                return replay(row)
            status, body, location, extra = make(conn)
            store.idem_put(conn, who.owner, key, digest, status, body, location)
    except IntegrityError:  # a concurrent request with the same key committed first
        row = store.idem_get(who.owner, key)
        if row is None:
            raise
        return replay(row)
    return respond(status, body, location, extra)


# ---------------------------------------------------------------- systems


async def _read_system_request(request: Request) -> SystemCreate:
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("pdb") or form.get("file")
        if upload is None or isinstance(upload, str):
            text = upload if isinstance(upload, str) else None
        else:
            text = (await upload.read()).decode("utf-8", errors="replace")
        if not text:
            raise Problem(422, "Missing PDB", "send the structure as multipart field 'pdb'")
        ff = form.getlist("forcefield")
        ffs = [f.strip() for item in ff for f in str(item).split(",") if f.strip()]
        fields: dict[str, Any] = {"pdb": text}
        if ffs:
            fields["forcefield"] = ffs
        for name in ("name", "solvent", "temperature", "constraints"):
            if form.get(name) not in (None, ""):
                fields[name] = form.get(name)
    else:
        try:
            fields = json.loads(await request.body())
        except ValueError as exc:
            raise Problem(422, "Invalid JSON", str(exc)) from None
        if not isinstance(fields, dict):
            raise Problem(422, "Invalid JSON", "the body must be a JSON object")
    from pydantic import ValidationError

    try:
        return SystemCreate.model_validate(fields)
    except ValidationError as exc:
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise Problem(422, "Request validation failed", detail, type_="validation") from None


_FF_NAME = re.compile(r"[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*\.xml")


def _count_atoms(pdb: str) -> int:
    return sum(1 for line in pdb.splitlines() if line.startswith(("ATOM", "HETATM")))


@router.post(
    "/systems",
    status_code=201,
    response_model=SystemInfo,
    responses=PROBLEM_RESPONSES,
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {"schema": SystemCreate.model_json_schema()},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "pdb": {"type": "string", "format": "binary"},
                            "name": {"type": "string"},
                            "forcefield": {"type": "string"},
                            "solvent": {"type": "string"},
                            "temperature": {"type": "number"},
                        },
                        "required": ["pdb"],
                    }
                },
            }
        }
    },
)
async def create_system(
    request: Request,
    store: StoreDep,
    who: Who,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    """Upload a PDB with force field, solvent and temperature; validated by building the
    OpenMM system (``boltzgen.systems.System.from_pdb``)."""
    req = await _read_system_request(request)
    settings = request.app.state.settings
    n = _count_atoms(req.pdb)
    if n > settings.max_atoms:
        raise Problem(
            422,
            "Too many atoms",
            f"the PDB has {n} atoms; this server accepts at most {settings.max_atoms}",
            type_="limit-atoms",
        )

    for ff in req.forcefield:
        if not _FF_NAME.fullmatch(ff) or ".." in ff:
            raise Problem(
                422,
                "Invalid force field",
                f"force field {ff!r}: give a file name shipped with OpenMM, e.g. amber99sbildn.xml",
                type_="ForceFieldError",
            )
    # text without a newline would be read as a *path* on the server: never allow that
    pdb_text = req.pdb if "\n" in req.pdb else req.pdb + "\n"

    def build():
        from boltzgen.systems import System

        try:
            system = System.from_pdb(
                pdb_text,
                forcefield=tuple(req.forcefield),
                solvent=req.solvent,
                temperature=req.temperature,
                constraints=req.constraints,
            )
        except BoltzgenError as exc:
            raise boltzgen_problem(exc) from None
        except (ValueError, KeyError) as exc:  # OpenMM's own parse errors
            raise Problem(
                422, "Invalid structure", f"{type(exc).__name__}: {exc}", type_="structure"
            ) from None
        if system.n_atoms > settings.max_atoms:
            raise Problem(
                422,
                "Too many atoms",
                f"{system.n_atoms} > {settings.max_atoms}",
                type_="limit-atoms",
            )
        return system

    def run() -> JSONResponse:
        # building the force field is the slow part: not inside the write transaction, and
        # not at all when the Idempotency-Key has been answered before
        replay = idempotency_key and store.idem_get(who.owner, idempotency_key)
        system = None if replay else build()
        return idempotent(
            store, who, idempotency_key, "/v1/systems", req.model_dump(), partial(insert, system)
        )

    def insert(system, conn: Connection) -> Made:
        row = store.add_system(
            who.owner,
            conn,
            name=req.name or f"system-{system.n_atoms}-atoms",
            n_atoms=int(system.n_atoms),
            solvent=str(system.solvent),
            temperature=float(system.temperature),
            forcefield=list(req.forcefield),
            spec=system.to_spec(),
        )
        return 201, system_info(row).model_dump(mode="json"), f"/v1/systems/{row['id']}", {}

    return await run_in_threadpool(run)


@router.get("/systems", response_model=SystemPage, responses=PROBLEM_RESPONSES)
def list_systems(
    request: Request,
    store: StoreDep,
    who: Who,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> SystemPage:
    limit = min(limit, request.app.state.settings.page_size_max)
    items, nxt = store.list_systems(who.scope, decode_cursor(cursor), limit)
    return SystemPage(items=[system_info(s) for s in items], next_cursor=encode_cursor(nxt))


@router.get("/systems/{system_id}", response_model=SystemInfo, responses=PROBLEM_RESPONSES)
def get_system(system_id: str, store: StoreDep, who: Who) -> SystemInfo:
    s = store.get_system(system_id, who.scope)
    if s is None:
        raise not_found("system", system_id)
    return system_info(s)


@router.delete("/systems/{system_id}", status_code=204, responses=PROBLEM_RESPONSES)
def delete_system(system_id: str, store: StoreDep, who: Who) -> Response:
    if not store.delete_system(system_id, who.scope):
        raise not_found("system", system_id)
    return Response(status_code=204)


# ---------------------------------------------------------------- jobs


def _check_limits(settings, params: dict[str, Any]) -> None:
    n = params.get("n_samples")
    if isinstance(n, int) and n > settings.max_samples:
        raise Problem(
            422,
            "Too many samples",
            f"n_samples={n}; this server allows at most {settings.max_samples}",
            type_="limit-samples",
        )
    n = params.get("n_steps")
    if isinstance(n, int) and n > settings.max_md_steps:
        raise Problem(
            422,
            "Too many MD steps",
            f"n_steps={n}; this server allows at most {settings.max_md_steps}",
            type_="limit-steps",
        )


def _resolve_job(
    store: Store, who: Principal, settings, body: JobCreate, conn: Connection
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
    _check_limits(settings, body.params)
    params = dict(body.params)
    system_id, model_id = body.system_id, body.model_id
    if kind.needs_model:
        if not model_id:
            raise Problem(422, "Missing model_id", f"job kind {kind.name!r} needs a model_id")
        model = store.get_model(model_id, who.scope, conn)
        if model is None:
            raise Problem(422, "Unknown model", f"no model {model_id!r}")
        params["model"] = model["path"]
        system_id = system_id or model["system_id"]
    if kind.needs_system:
        if not system_id:
            raise Problem(422, "Missing system_id", f"job kind {kind.name!r} needs a system_id")
        system = store.get_system(system_id, who.scope, conn)
        if system is None:
            raise Problem(422, "Unknown system", f"no system {system_id!r}")
        params["system"] = system["spec"]
    for name in kind.artifact_fields:
        ref = params.get(name)
        if ref is None:
            continue
        art = store.get_artifact(str(ref), who.scope, conn) if isinstance(ref, str) else None
        if art is None:
            raise Problem(
                422, "Unknown artifact", f"params.{name}: no artifact {ref!r} (give an artifact id)"
            )
        params[name] = art["path"]
    try:
        validate_params(kind, params)
    except BoltzgenError as exc:
        raise boltzgen_problem(exc) from None
    return {
        "kind": kind.name,
        "params": params,
        "client_params": dict(body.params),
        "system_id": system_id if kind.needs_system else None,
        "model_id": model_id if kind.needs_model else None,
        "max_attempts": body.max_attempts or settings.max_attempts,
    }


@router.post(
    "/jobs",
    status_code=202,
    response_model=JobInfo,
    responses=PROBLEM_RESPONSES,
)
def submit_job(
    body: JobCreate,
    request: Request,
    store: StoreDep,
    who: Who,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    """Submit a job: 202 with ``Location`` (the job) and ``Retry-After`` (poll interval)."""
    settings = request.app.state.settings

    def make(conn: Connection) -> Made:
        fields = _resolve_job(store, who, settings, body, conn)
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
        request.app.state.metrics.jobs_submitted.labels(kind=job["kind"]).inc()
        return (
            202,
            job_info(job).model_dump(mode="json"),
            f"/v1/jobs/{job['id']}",
            {"Retry-After": str(settings.retry_after_seconds)},
        )

    # a thread (sync endpoint): a write may wait for another process's SQLite lock, and that
    # must not stall the event loop (measured: inline was no faster under load)
    return idempotent(store, who, idempotency_key, "/v1/jobs", body.model_dump(), make)


@router.get("/jobs", response_model=JobPage, responses=PROBLEM_RESPONSES)
def list_jobs(
    request: Request,
    store: StoreDep,
    who: Who,
    status: Annotated[
        list[str] | None, Query(description="filter; repeat or comma-separate: queued,running")
    ] = None,
    kind: str | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> JobPage:
    """Newest first. ``next_cursor`` is None on the last page."""
    statuses = [s.strip() for item in status or [] for s in item.split(",") if s.strip()]
    bad = [s for s in statuses if s not in STATUSES]
    if bad:
        raise Problem(422, "Invalid status filter", f"unknown status {bad}; use {list(STATUSES)}")
    limit = min(limit, request.app.state.settings.page_size_max)
    items, nxt = store.list_jobs(
        who.scope, statuses=statuses, kind=kind, cursor=decode_cursor(cursor), limit=limit
    )
    return JobPage(items=[job_info(j) for j in items], next_cursor=encode_cursor(nxt))


@router.get("/jobs/{job_id}", response_model=JobInfo, responses=PROBLEM_RESPONSES)
async def get_job(job_id: str, request: Request, store: StoreDep, who: Who) -> JSONResponse:
    """One job. While it is active, ``Retry-After`` suggests when to poll again."""
    # the hot polling path: one indexed SQLite read, run inline (sub-millisecond)
    job = store.get_job(job_id, who.scope)
    if job is None:
        raise not_found("job", job_id)
    headers = None
    if job["status"] not in TERMINAL:
        headers = {"Retry-After": str(request.app.state.settings.retry_after_seconds)}
    return JSONResponse(job_info(job).model_dump(mode="json"), headers=headers)


@router.post(
    "/jobs/{job_id}/cancel", status_code=202, response_model=JobInfo, responses=PROBLEM_RESPONSES
)
def cancel_job(job_id: str, store: StoreDep, who: Who) -> JobInfo:
    """Cancel: a queued job at once; a running one has its process killed by its worker
    (``cancel_requested`` is true until then). Cancelling a finished job changes nothing."""
    job = store.request_cancel(job_id, who.scope)
    if job is None:
        raise not_found("job", job_id)
    return job_info(job)


@router.delete("/jobs/{job_id}", status_code=204, responses=PROBLEM_RESPONSES)
def delete_job(job_id: str, request: Request, store: StoreDep, who: Who) -> Response:
    """Delete a finished job with its artifacts (409 while it is queued or running)."""
    try:
        paths = store.delete_job(job_id, who.scope)
    except ValueError as exc:
        raise Problem(409, "Job is active", str(exc)) from None
    if paths is None:
        raise not_found("job", job_id)
    from server.worker import job_root

    shutil.rmtree(job_root(request.app.state.settings, job_id), ignore_errors=True)
    return Response(status_code=204)


@router.get(
    "/jobs/{job_id}/events",
    responses={200: {"content": {"text/event-stream": {}}}, **PROBLEM_RESPONSES},
)
async def job_events(
    job_id: str,
    request: Request,
    store: StoreDep,
    who: Who,
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventSourceResponse:
    """Server-sent events: ``status``, ``progress`` (and ``cancel_requested``); each has an
    ``id``; reconnect with ``Last-Event-ID`` to resume. The stream ends after a final status."""
    job = await run_in_threadpool(store.get_job, job_id, who.scope)
    if job is None:
        raise not_found("job", job_id)
    try:
        after = int(last_event_id or request.query_params.get("last_event_id") or 0)
    except ValueError:
        raise Problem(422, "Invalid Last-Event-ID", "Last-Event-ID must be an event id") from None
    poll = request.app.state.settings.poll_seconds

    async def stream():
        last = after
        while True:
            # status before events: a job's final status and its event commit together, so
            # once the status reads terminal the events read after it holds the final event
            current = await run_in_threadpool(store.get_job, job_id, None)
            events = await run_in_threadpool(store.events_after, job_id, last)
            for e in events:
                last = e["id"]
                yield _sse(e, job_id)
                if e["type"] == "status" and e["data"].get("status") in TERMINAL:
                    return
            if current is None or current["status"] in TERMINAL:
                return
            if not events:
                await asyncio.sleep(poll)

    return EventSourceResponse(stream(), ping=15)


def _sse(event: dict, job_id: str) -> dict[str, str]:
    """A stored job event as one server-sent event."""
    data = {**event["data"], "job_id": job_id, "ts": event["ts"]}
    return {"id": str(event["id"]), "event": event["type"], "data": json.dumps(data)}


# ---------------------------------------------------------------- artifacts


@router.get("/jobs/{job_id}/artifacts", response_model=ArtifactList, responses=PROBLEM_RESPONSES)
def list_artifacts(job_id: str, store: StoreDep, who: Who) -> ArtifactList:
    if store.get_job(job_id, who.scope) is None:
        raise not_found("job", job_id)
    return ArtifactList(items=[artifact_info(a) for a in store.list_artifacts(job_id, who.scope)])


@router.get("/artifacts/{artifact_id}", response_model=ArtifactInfo, responses=PROBLEM_RESPONSES)
def get_artifact(artifact_id: str, store: StoreDep, who: Who) -> ArtifactInfo:
    a = store.get_artifact(artifact_id, who.scope)
    if a is None:
        raise not_found("artifact", artifact_id)
    return artifact_info(a)


def _file(path: str, media_type: str, filename: str) -> FileResponse:
    if not Path(path).is_file():
        raise Problem(410, "Gone", f"the file of {filename!r} is no longer on disk")
    return FileResponse(path, media_type=media_type, filename=filename)


@router.get(
    "/artifacts/{artifact_id}/content",
    response_class=FileResponse,
    responses={206: {"description": "partial content (Range)"}, **PROBLEM_RESPONSES},
)
def download_artifact(artifact_id: str, store: StoreDep, who: Who) -> FileResponse:
    """The file; honours ``Range: bytes=a-b`` (206) and ``If-Range``."""
    a = store.get_artifact(artifact_id, who.scope)
    if a is None:
        raise not_found("artifact", artifact_id)
    return _file(a["path"], a["media_type"], Path(a["name"]).name)


# ---------------------------------------------------------------- models


@router.get("/models", response_model=ModelPage, responses=PROBLEM_RESPONSES)
def list_models(
    request: Request,
    store: StoreDep,
    who: Who,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> ModelPage:
    limit = min(limit, request.app.state.settings.page_size_max)
    items, nxt = store.list_models(who.scope, decode_cursor(cursor), limit)
    return ModelPage(items=[model_info(m) for m in items], next_cursor=encode_cursor(nxt))


@router.get("/models/{model_id}", response_model=ModelInfo, responses=PROBLEM_RESPONSES)
def get_model(model_id: str, store: StoreDep, who: Who) -> ModelInfo:
    m = store.get_model(model_id, who.scope)
    if m is None:
        raise not_found("model", model_id)
    return model_info(m)


@router.get("/models/{model_id}/content", response_class=FileResponse, responses=PROBLEM_RESPONSES)
def download_model(model_id: str, store: StoreDep, who: Who) -> FileResponse:
    m = store.get_model(model_id, who.scope)
    if m is None:
        raise not_found("model", model_id)
    return _file(m["path"], "application/octet-stream", Path(m["path"]).name)


@router.delete("/models/{model_id}", status_code=204, responses=PROBLEM_RESPONSES)
def delete_model(model_id: str, store: StoreDep, who: Who) -> Response:
    path = store.delete_model(model_id, who.scope)
    if path is None:
        raise not_found("model", model_id)
    Path(path).unlink(missing_ok=True)
    return Response(status_code=204)


# ---------------------------------------------------------------- kinds and keys


@router.get("/kinds", response_model=list[KindInfo])
def list_kinds(who: Who) -> list[KindInfo]:
    """Registered job kinds with the JSON schema of the parameters a client sends."""
    return [
        KindInfo(
            name=k.name,
            description=k.description,
            gpu=k.gpu,
            needs_system=k.needs_system,
            needs_model=k.needs_model,
            params_schema=k.client_schema(),
        )
        for k in job_kinds().values()
    ]


def _admin(who: Principal) -> None:
    if not who.is_admin:
        raise Problem(403, "Forbidden", "only the admin key manages API keys")


@router.post("/keys", status_code=201, response_model=KeyInfo, responses=PROBLEM_RESPONSES)
def create_key(body: KeyCreate, store: StoreDep, who: Who) -> KeyInfo:
    """Admin: issue an API key. The plaintext key is in this response only."""
    _admin(who)
    key_id, key = store.create_key(body.name)
    return KeyInfo(id=key_id, name=body.name, created_at=datetime.now(UTC), key=key)


@router.get("/keys", response_model=list[KeyInfo], responses=PROBLEM_RESPONSES)
def list_keys(store: StoreDep, who: Who) -> list[KeyInfo]:
    _admin(who)
    return [KeyInfo(**{**k, "created_at": _ts(k["created_at"])}) for k in store.list_keys()]


@router.delete("/keys/{key_id}", status_code=204, responses=PROBLEM_RESPONSES)
def revoke_key(key_id: str, store: StoreDep, who: Who) -> Response:
    _admin(who)
    if not store.revoke_key(key_id):
        raise not_found("key", key_id)
    return Response(status_code=204)
