"""What every page route depends on: the caller's session (or a redirect to the login form),
the CSRF check of state-changing forms, and the HTML rendering of errors on the pages (the API
keeps its problem+json; the handlers installed here answer for ``/ui`` paths only)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from server.http.problems import Problem
from server.web.render import PAGE_HEADERS, base_path, page
from server.web.session import Session, check_csrf, current_session


class LoginRequired(Exception):
    """No valid session: pages redirect to the login form, scripts' requests get 401."""

    def __init__(self, redirect: bool = True) -> None:
        self.redirect = redirect


def ui_path(request: Request) -> str:
    """The request's path without the mount prefix, for matching and ``next=`` links."""
    path = request.url.path
    root = str(request.scope.get("root_path") or "")
    return path[len(root) :] if root and path.startswith(root) else path


def is_page(request: Request) -> bool:
    path = ui_path(request)
    return path == "/ui" or path.startswith("/ui/")


async def page_session(request: Request) -> Session:
    session = current_session(request)
    if session is None:
        raise LoginRequired()
    return session


async def script_session(request: Request) -> Session:
    session = current_session(request)
    if session is None:
        raise LoginRequired(redirect=False)
    return session


PageSession = Annotated[Session, Depends(page_session)]
ScriptSession = Annotated[Session, Depends(script_session)]


async def checked_form(request: Request, session: PageSession) -> dict[str, str]:
    """The posted form of a logged-in caller, its CSRF token checked (403 otherwise)."""
    form = await request.form()
    check_csrf(request, session.csrf, form.get("csrf"))
    return {k: v for k, v in form.items() if isinstance(v, str)}


def safe_next(request: Request, target: str | None) -> str:
    """A post-login destination: a path of this app's pages only (no open redirect)."""
    base = base_path(request)
    default = f"{base}/ui/jobs"
    if (
        not target
        or not target.startswith(f"{base}/ui")
        or "//" in target
        or "\\" in target
        or ".." in target
    ):
        return default
    return target


def install_error_pages(app: FastAPI) -> None:
    """HTML errors for the pages; every other path keeps the API's handlers."""
    handlers = app.exception_handlers

    async def login_required(request: Request, exc: LoginRequired) -> Response:
        if not exc.redirect:
            return page(request, "error.html", 401, title="Unauthorized", detail="log in again")
        base = base_path(request)
        nxt = quote(
            base + ui_path(request) + (f"?{request.url.query}" if request.url.query else "")
        )
        return RedirectResponse(f"{base}/ui/login?next={nxt}", 303, headers=PAGE_HEADERS)

    def wrap(exc_type: type[Exception]):
        api_handler = handlers[exc_type]

        async def handler(request: Request, exc: Exception) -> Response:
            if not is_page(request):
                return await api_handler(request, exc)
            if isinstance(exc, Problem):
                status, title, detail = exc.status, exc.title, exc.detail
                headers = {k: v for k, v in (exc.headers or {}).items() if k != "WWW-Authenticate"}
            elif isinstance(exc, StarletteHTTPException):
                status, title, detail, headers = exc.status_code, "Error", str(exc.detail), {}
                if status == 404:
                    title, detail = "Not Found", f"no page {ui_path(request)}"
            else:
                status, title, headers = 422, "Invalid request", {}
                detail = "; ".join(
                    f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                    for e in exc.errors()  # type: ignore[attr-defined]
                )
            return page(request, "error.html", status, headers, title=title, detail=detail)

        return handler

    for exc_type in (Problem, StarletteHTTPException, RequestValidationError):
        app.add_exception_handler(exc_type, wrap(exc_type))
    app.add_exception_handler(LoginRequired, login_required)
