"""The pages of the other resources: artifact and model downloads for the browser (the API's
download routes want an Authorization header, a browser sends its session cookie), the
systems (the PDB's residues and atoms, the jobs that used it) and the models."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from server.http.convert import job_info, model_info, system_info
from server.http.deps import StoreDep
from server.http.files import RangeRequest, Ranges, StoredFile, artifact_file, model_file
from server.http.pagination import PageRequest, Paging, read_page
from server.http.problems import found
from server.storage.store import Store
from server.web.guard import PageSession
from server.web.pdb_view import read_pdb
from server.web.render import SECURITY_HEADERS, page

router = APIRouter()

# shown in the page (img src) rather than downloaded; anything else is an attachment
INLINE_TYPES = {"image/png", "image/jpeg", "image/gif"}
# a downloaded file is never a page: no script, no plugin, even if it holds HTML or SVG
DOWNLOAD_HEADERS = {
    **SECURITY_HEADERS,
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Cache-Control": "private, max-age=3600",
}
JOBS_SCANNED = 1000


def _download(file: StoredFile, ranges: RangeRequest) -> Response:
    resp = file.response(ranges)
    if file.media_type in INLINE_TYPES:
        disposition = resp.headers["content-disposition"]
        resp.headers["content-disposition"] = disposition.replace("attachment", "inline", 1)
    resp.headers.update(DOWNLOAD_HEADERS)
    return resp


@router.get("/ui/artifacts/{artifact_id}/content")
def artifact_content(
    artifact_id: str,
    session: PageSession,
    store: StoreDep,
    ranges: Ranges,
) -> Response:
    file = artifact_file(store, artifact_id, session.principal.scope)
    return _download(file, ranges)


@router.get("/ui/models/{model_id}/content")
def model_content(
    model_id: str,
    session: PageSession,
    store: StoreDep,
    ranges: Ranges,
) -> Response:
    return _download(model_file(store, model_id, session.principal.scope), ranges)


def _list_page(request, session, what: str, list_rows, convert, paging: PageRequest):
    """A paged list page (``<what>.html`` with ``<what>`` = the converted rows): the caller's
    rows from ``list_rows(scope, cursor, limit)``, paged like the API."""
    rows = read_page(list_rows, session.principal.scope, paging, convert)
    return page(
        request,
        f"{what}.html",
        session=session,
        **{what: rows.items},
        next_cursor=rows.next_cursor,
        limit=rows.limit,
    )


@router.get("/ui/systems")
def system_list(
    request: Request, session: PageSession, store: StoreDep, paging: Paging
) -> Response:
    return _list_page(request, session, "systems", store.list_systems, system_info, paging)


def _jobs_using(store: Store, scope: str | None, field: str, value: str) -> list[Any]:
    """The caller's jobs whose ``field`` is ``value``, newest first, among its newest
    ``JOBS_SCANNED`` jobs (the store has no index on it; a page shows a few)."""
    using, cursor, seen = [], None, 0
    while seen < JOBS_SCANNED:
        items, cursor = store.list_jobs(scope, cursor=cursor, limit=200)
        seen += len(items)
        using += [job_info(j) for j in items if j.get(field) == value]
        if cursor is None:
            break
    return using


@router.get("/ui/systems/{system_id}")
def system_page(
    request: Request, system_id: str, session: PageSession, store: StoreDep
) -> Response:
    scope = session.principal.scope
    row = found(store.get_system(system_id, scope), "system", system_id)
    pdb = read_pdb(str((row.get("spec") or {}).get("pdb", "")))
    return page(
        request,
        "system.html",
        session=session,
        system=system_info(row),
        pdb=pdb,
        jobs=_jobs_using(store, scope, "system_id", system_id),
        jobs_scanned=JOBS_SCANNED,
    )


@router.get("/ui/models")
def model_list(request: Request, session: PageSession, store: StoreDep, paging: Paging) -> Response:
    return _list_page(request, session, "models", store.list_models, model_info, paging)


@router.get("/ui/models/{model_id}")
def model_page(request: Request, model_id: str, session: PageSession, store: StoreDep) -> Response:
    scope = session.principal.scope
    model = model_info(found(store.get_model(model_id, scope), "model", model_id))
    system = store.get_system(model.system_id, scope) if model.system_id else None
    return page(
        request,
        "model.html",
        session=session,
        model=model,
        system=system,
        jobs=_jobs_using(store, scope, "model_id", model_id),
        jobs_scanned=JOBS_SCANNED,
    )
