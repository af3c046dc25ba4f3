"""RFC 9457 problem+json errors: one exception type, the app's exception handlers, and the
error responses the routes declare in the OpenAPI document."""

from __future__ import annotations

import logging
from typing import Any, TypeVar

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


# what each error status means, for the OpenAPI document (every one is problem+json)
PROBLEM_DESCRIPTIONS: dict[int, str] = {
    400: "unparsable request: invalid JSON, JSON nested too deeply, NaN/Infinity literals, "
    "a malformed Range or cursor",
    401: "missing or invalid API key",
    403: "the API key may not do this (e.g. a non-admin key on /v1/keys)",
    404: "not found (or owned by another key)",
    405: "method not allowed on this path (see the Allow header)",
    409: "conflict (e.g. deleting a queued or running job)",
    410: "the file is no longer on disk",
    413: "request body too large (declared or streamed)",
    415: "unsupported request content type",
    416: "Range not satisfiable (past the end of the file)",
    422: "invalid input, with the field named in detail (and in errors)",
    429: "too many active jobs for this key",
    500: "unexpected server error (problem+json; the connection stays usable)",
    503: "not ready",
}


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route that may answer with these error statuses (plus 400,
    401, 500, which every API route may give). The schema (``Problem``) is filled in by
    ``server.http.openapi``."""
    every = {400, 401, 500, *codes}
    return {
        code: {"content": {PROBLEM_JSON: {}}, "description": PROBLEM_DESCRIPTIONS[code]}
        for code in sorted(every)
    }


# routes that read one resource of the caller by id; write routes add 413/415/422
PROBLEM_RESPONSES = problem_responses(404, 422)
BODY_PROBLEMS = (413, 415, 422)


def not_found(what: str, ident: str) -> Problem:
    """404 for a resource that is absent or owned by another key (indistinguishable)."""
    return Problem(404, "Not Found", f"no {what} {ident!r}")


T = TypeVar("T")


def found(row: T | None, what: str, ident: str) -> T:
    """``row`` (a store lookup of the caller's ``what`` ``ident``), or :func:`not_found`."""
    if row is None:
        raise not_found(what, ident)
    return row


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
    # every problem has a detail: a client (or a fuzzer) always gets a message
    body: dict[str, Any] = {"type": type_, "title": title, "status": status}
    body["detail"] = detail or title
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
        if detail is None and exc.status_code == 404:
            detail = f"no route {request.url.path!r}; the API is under /v1 (see /docs)"
        elif detail is None and exc.status_code == 405:
            allow = (getattr(exc, "headers", None) or {}).get("Allow", "")
            detail = f"{request.method} is not allowed on {request.url.path}; allowed: {allow}"
        return problem_response(
            exc.status_code,
            title,
            detail,
            instance=request.url.path,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        raw = exc.errors()
        bad_json = [e for e in raw if e.get("type") == "json_invalid"]
        if bad_json:  # the body is not JSON at all: 400, not a field problem
            why = "; ".join(str((e.get("ctx") or {}).get("error", "")) for e in bad_json)
            return problem_response(
                400,
                "Invalid JSON",
                f"the request body is not valid JSON: {why or 'decode error'}",
                type_="urn:boltzgen:problem:invalid-json",
                instance=request.url.path,
            )
        ctype = request.headers.get("content-type", "")
        if (
            ctype
            and not is_json_type(ctype)
            and any(tuple(e.get("loc", ())) == ("body",) for e in raw)
        ):
            return problem_response(
                415,
                "Unsupported Media Type",
                f"send the body as application/json, not {ctype.split(';')[0]!r}",
                type_="urn:boltzgen:problem:media-type",
                instance=request.url.path,
            )
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in raw
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
        return internal_error(request.url.path, exc)


def is_json_type(content_type: str) -> bool:
    """``application/json`` or ``application/<x>+json`` (parameters ignored)."""
    mt = content_type.split(";", 1)[0].strip().lower()
    return mt == "application/json" or (mt.startswith("application/") and mt.endswith("+json"))


def internal_error(path: str | None, exc: BaseException) -> JSONResponse:
    return problem_response(
        500,
        "Internal Server Error",
        f"unexpected {type(exc).__name__}; the error was logged",
        type_="urn:boltzgen:problem:internal",
        instance=path,
    )


class CatchAll:
    """Pure ASGI middleware, outermost of the app's own: an exception no handler took becomes a
    problem+json 500 and is *not* re-raised. (Starlette's ServerErrorMiddleware answers too, but
    then re-raises, and uvicorn closes the keep-alive connection, so the client's next request
    on it fails as well.) If the response had already started there is nothing to send; the
    error is logged and the server closes the response as incomplete."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(msg):
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            log.exception("unhandled error on %s", scope.get("path"))
            if not started:
                await internal_error(scope.get("path"), exc)(scope, receive, send)
