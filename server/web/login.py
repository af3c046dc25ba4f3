"""``/ui/login`` and ``/ui/logout``: an API key entered once per browser session.

The key travels in a POST body only (never a URL), is checked by the API's ``Authenticator``
and is not kept: the session cookie carries its digest (``server.web.session``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from server.http.problems import Problem
from server.web.guard import checked_form, safe_next
from server.web.render import PAGE_HEADERS, base_path, page
from server.web.session import (
    check_csrf,
    check_key,
    current_session,
    end_session,
    login_nonce,
    login_token,
    set_login_cookie,
    start_session,
)

router = APIRouter()


def _login_form(request: Request, nxt: str | None, status: int = 200, error: str = "") -> Response:
    nonce, token = login_token(request)
    response = page(
        request,
        "login.html",
        status,
        next=safe_next(request, nxt),
        error=error,
        auth=request.app.state.settings.auth,
        csrf=nonce,
    )
    set_login_cookie(request, response, token, base_path(request))
    return response


@router.get("/ui")
async def ui_root(request: Request) -> Response:
    return RedirectResponse(f"{base_path(request)}/ui/jobs", 303, headers=PAGE_HEADERS)


@router.get("/ui/login")
async def login_page(request: Request, next: str | None = None) -> Response:
    if current_session(request) is not None:
        return RedirectResponse(safe_next(request, next), 303, headers=PAGE_HEADERS)
    return _login_form(request, next)


@router.post("/ui/login")
async def login(
    request: Request,
    csrf: Annotated[str, Form()] = "",
    key: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "",
) -> Response:
    check_csrf(request, login_nonce(request), csrf)
    auth = request.app.state.settings.auth
    key = key.strip()
    if auth:
        if not key:
            return _login_form(request, next, 401, "enter an API key")
        try:
            check_key(request, key)
        except Problem:
            return _login_form(request, next, 401, "unknown or revoked API key")
    response = RedirectResponse(safe_next(request, next), 303, headers=PAGE_HEADERS)
    start_session(request, response, key if auth else None, base_path(request))
    return response


@router.post("/ui/logout")
async def logout(
    request: Request, form: Annotated[dict[str, str], Depends(checked_form)]
) -> Response:
    response = RedirectResponse(f"{base_path(request)}/ui/login", 303, headers=PAGE_HEADERS)
    end_session(request, response, base_path(request))
    return response
