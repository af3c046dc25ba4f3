"""RFC 9457 problem+json errors: one exception type, the app's exception handlers, and the
error responses the routes declare in the OpenAPI document."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from boltzgen.errors import BoltzgenError

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("boltzgen.server")


class Problem(Exception):
    """Raise to answer with problem+json. ``type_`` is a short slug (``urn:boltzgen:problem:``
    is prefixed) or ``about:blank``; ``extra`` adds members (e.g. ``errors``)."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        *,
        type_: str = "about:blank",
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type_ if type_ == "about:blank" else f"urn:boltzgen:problem:{type_}"
        self.headers = headers or {}
        self.extra = extra


# the error responses every resource route may give, for the OpenAPI document
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


def not_found(what: str, ident: str) -> Problem:
    """404 for a resource that is absent or owned by another key (indistinguishable)."""
    return Problem(404, "Not Found", f"no {what} {ident!r}")


def problem_response(
    status: int,
    title: str,
    detail: str | None = None,
    *,
    type_: str = "about:blank",
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {"type": type_, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    body.update(extra)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def boltzgen_problem(exc: BoltzgenError) -> Problem:
    """Map a library error to 422 with the error class as problem type."""
    return Problem(
        422, "Invalid input", str(exc), type_=type(exc).__name__, error=type(exc).__name__
    )


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(
            exc.status,
            exc.title,
            exc.detail,
            type_=exc.type,
            instance=request.url.path,
            headers=exc.headers,
            **exc.extra,
        )

    @app.exception_handler(BoltzgenError)
    async def _boltzgen(request: Request, exc: BoltzgenError) -> JSONResponse:
        return await _problem(request, boltzgen_problem(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        from http import HTTPStatus

        try:
            title = HTTPStatus(exc.status_code).phrase
        except ValueError:
            title = "Error"
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail != title else None
        return problem_response(
            exc.status_code,
            title,
            detail,
            instance=request.url.path,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        return problem_response(
            422,
            "Request validation failed",
            detail,
            type_="urn:boltzgen:problem:validation",
            instance=request.url.path,
            errors=errors,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return problem_response(
            500, "Internal Server Error", type(exc).__name__, instance=request.url.path
        )
