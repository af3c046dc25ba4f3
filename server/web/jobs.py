"""The job pages: ``/ui/jobs`` (list, filter by state, cursor paging like the API),
``/ui/jobs/{id}`` (parameters, live progress and log tail over server-sent events, cancel
and retry, artifacts), its report (``/ui/jobs/{id}/report``) and the pieces its script
fetches (``events``: the API's event stream; ``panel``: the parts that change at the end).

Every read and write goes through the REST routes' own functions or the store calls they
make, scoped by the session's ``Principal``: the pages see exactly what the key sees."""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from boltzgen.schemas import JobCreate
from server.http.convert import artifact_info, job_info
from server.http.deps import MetricsDep, SettingsDep, StoreDep
from server.http.pagination import Cursor, Limit
from server.http.problems import Problem, found
from server.http.routes import jobs as jobs_api
from server.settings import Settings
from server.storage.store import Store
from server.storage.tables import STATUSES, TERMINAL
from server.web.guard import PageSession, ScriptSession, checked_form
from server.web.render import PAGE_HEADERS, base_path, page
from server.web.report import REPORT, SUMMARY, render_report, verdicts
from server.web.session import Session

router = APIRouter()

LOG_TAIL = 40
MAX_REPORT_BYTES = 5 * 1024 * 1024
CheckedForm = Annotated[dict[str, str], Depends(checked_form)]


def _job_list(
    request: Request,
    session: Session,
    store: Store,
    settings: Settings,
    template: str,
    status: str,
    kind: str,
    cursor: str | None,
    limit: int,
) -> Response:
    result = jobs_api.list_jobs(
        store,
        session.principal,
        settings,
        status=[status] if status else None,
        kind=kind or None,
        cursor=cursor,
        limit=limit,
    )
    return page(
        request,
        template,
        session=session,
        jobs=result.items,
        next_cursor=result.next_cursor,
        status=status,
        kind=kind,
        limit=limit,
        statuses=STATUSES,
        rows_query=urlencode(  # the current page's filters; empty ones left out
            {k: v for k, v in (("status", status), ("kind", kind), ("cursor", cursor)) if v}
            | {"limit": limit}
        ),
    )


@router.get("/ui/jobs")
def job_list(
    request: Request,
    session: PageSession,
    store: StoreDep,
    settings: SettingsDep,
    status: str = "",
    kind: str = "",
    cursor: Cursor = None,
    limit: Limit = 50,
) -> Response:
    return _job_list(request, session, store, settings, "jobs.html", status, kind, cursor, limit)


@router.get("/ui/jobs/rows")
def job_rows(
    request: Request,
    session: ScriptSession,
    store: StoreDep,
    settings: SettingsDep,
    status: str = "",
    kind: str = "",
    cursor: Cursor = None,
    limit: Limit = 50,
) -> Response:
    """The rows of the job list (the list's script refreshes them while jobs are active)."""
    return _job_list(
        request, session, store, settings, "_job_rows.html", status, kind, cursor, limit
    )


def _log_tail(store: Store, job_id: str) -> tuple[list[dict[str, Any]], int]:
    """The last ``LOG_TAIL`` events of a job and the id of the last one (where the page's
    event stream resumes)."""
    tail: deque[dict[str, Any]] = deque(maxlen=LOG_TAIL)
    last = 0
    for _ in range(200):  # 100k events at most; a job writes far fewer
        events = store.events_after(job_id, last)
        if not events:
            break
        tail.extend(events)
        last = events[-1]["id"]
    return list(tail), last


def _job_context(store: Store, session: Session, job_id: str) -> dict[str, Any]:
    who = session.principal
    job = job_info(found(store.get_job(job_id, who.scope), "job", job_id))
    artifacts = [artifact_info(a) for a in store.list_artifacts(job_id, who.scope)]
    system = store.get_system(job.system_id, who.scope) if job.system_id else None
    return {
        "job": job,
        "artifacts": artifacts,
        "has_report": any(a.name == REPORT for a in artifacts),
        "system": system,
        "terminal": job.status in TERMINAL,
        "session": session,
    }


@router.get("/ui/jobs/{job_id}")
def job_page(request: Request, job_id: str, session: PageSession, store: StoreDep) -> Response:
    context = _job_context(store, session, job_id)
    events, last_id = _log_tail(store, job_id)
    return page(request, "job.html", events=events, last_event_id=last_id, **context)


@router.get("/ui/jobs/{job_id}/panel")
def job_panel(request: Request, job_id: str, session: ScriptSession, store: StoreDep) -> Response:
    """The parts of the job page that change when the job ends (fetched by the script)."""
    return page(request, "_panel.html", **_job_context(store, session, job_id))


@router.get("/ui/jobs/{job_id}/events")
async def job_events(
    request: Request,
    job_id: str,
    session: ScriptSession,
    store: StoreDep,
    settings: SettingsDep,
) -> Response:
    """The API's event stream of the job (``Last-Event-ID`` or ``?last_event_id=`` resume)."""
    return await jobs_api.job_events(
        job_id,
        request,
        store,
        session.principal,
        settings,
        last_event_id=request.headers.get("last-event-id"),
    )


def _to_job(request: Request, job_id: str) -> Response:
    return RedirectResponse(f"{base_path(request)}/ui/jobs/{job_id}", 303, headers=PAGE_HEADERS)


@router.post("/ui/jobs/{job_id}/cancel")
def cancel_job(
    request: Request, job_id: str, form: CheckedForm, session: PageSession, store: StoreDep
) -> Response:
    jobs_api.cancel_job(job_id, store, session.principal)
    return _to_job(request, job_id)


@router.post("/ui/jobs/{job_id}/retry")
def retry_job(
    request: Request,
    job_id: str,
    form: CheckedForm,
    session: PageSession,
    store: StoreDep,
    settings: SettingsDep,
    metrics: MetricsDep,
) -> Response:
    """Submit the job again as a new job: same kind, parameters (as the client sent them),
    system and model, through the API's submission (same checks and limits)."""
    old = job_info(found(store.get_job(job_id, session.principal.scope), "job", job_id))
    if old.status not in TERMINAL:
        raise Problem(409, "Job is active", f"job {job_id} is {old.status}; retry it once it ends")
    body = JobCreate(
        kind=old.kind,
        params=old.params,
        system_id=old.system_id,
        model_id=old.model_id,
        max_attempts=old.max_attempts,
    )
    made = jobs_api.submit_job(body, store, session.principal, settings, metrics, None)
    return _to_job(request, json.loads(made.body)["id"])


@router.get("/ui/jobs/{job_id}/report")
async def job_report(
    request: Request, job_id: str, session: PageSession, store: StoreDep
) -> Response:
    """The job's report.md as HTML, its figures inline, verdicts beside the numbers."""
    who = session.principal
    context = await run_in_threadpool(_job_context, store, session, job_id)
    by_name = {a.name: a for a in context["artifacts"]}
    base = base_path(request)
    if REPORT not in by_name:
        raise Problem(404, "Not Found", f"job {job_id} has no {REPORT} (yet)")

    def read(name: str, limit: int) -> str | None:
        a = store.get_artifact(by_name[name].id, who.scope) if name in by_name else None
        p = Path(a["path"]) if a else None
        if p is None or not p.is_file() or p.stat().st_size > limit:
            return None
        return p.read_text(errors="replace")

    markdown = await run_in_threadpool(read, REPORT, MAX_REPORT_BYTES)
    if markdown is None:
        raise Problem(410, "Gone", f"the {REPORT} of job {job_id} is no longer on disk")
    summary = None
    summary_text = await run_in_threadpool(read, SUMMARY, MAX_REPORT_BYTES)
    if summary_text:
        try:
            summary = json.loads(summary_text)
        except ValueError:
            summary = None

    def url(name: str) -> str | None:
        a = by_name.get(name)
        return None if a is None else f"{base}/ui/artifacts/{a.id}/content"

    html = render_report(markdown, url, summary)
    return page(
        request,
        "report.html",
        report_html=html,
        verdicts=list(verdicts(summary)) if summary is not None else [],
        **context,
    )
