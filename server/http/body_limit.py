"""Request body size limit as pure ASGI middleware: it also counts bodies streamed without a
Content-Length, which a check in a route (after the body is read) could not stop."""

from __future__ import annotations

import re

from server.http.problems import is_json_type, problem_response

# JSON tokens that matter for the guard: whole strings (skipped, so brackets inside them do not
# count), brackets, and the NaN/Infinity literals Python's json module accepts but JSON has not
_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]|NaN|-?Infinity')


def json_body_problem(body: bytes, max_depth: int) -> str | None:
    """Why ``body`` must not reach a JSON parser, or None: nesting deeper than ``max_depth``
    (Python's parser would raise RecursionError) or a NaN/Infinity literal (not JSON; it would
    come back as null)."""
    if (
        body.count(b"[") + body.count(b"{") <= max_depth
        and b"NaN" not in body
        and b"Infinity" not in body
    ):
        return None
    depth = 0
    for m in _TOKENS.finditer(body):
        t = m.group()
        if t[:1] == b'"':
            continue
        if t in (b"[", b"{"):
            depth += 1
            if depth > max_depth:
                return f"the JSON body is nested deeper than {max_depth} levels"
        elif t in (b"]", b"}"):
            depth -= 1
        else:
            return f"{t.decode()} is not a JSON value (numbers must be finite)"
    return None


class BodyLimit:
    """Pure ASGI middleware in front of every route: 413 problem+json for bodies over ``limit``
    bytes, declared (Content-Length, rejected before reading) or counted while a chunked body
    streams in; then 400 problem+json for a JSON body nested deeper than ``max_json_depth`` or
    holding NaN/Infinity literals. The body is read here, whole (it is at most ``limit``
    bytes), and replayed to the app, so every route, whether FastAPI parses its body or the
    route reads it itself, sees the same limits."""

    def __init__(self, app, limit: int, max_json_depth: int = 64) -> None:
        self.app = app
        self.limit = limit
        self.max_json_depth = max_json_depth

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = None
        ctype = ""
        for k, v in scope["headers"]:
            if k == b"content-length":
                try:
                    declared = int(v)
                except ValueError:
                    declared = None
            elif k == b"content-type":
                ctype = v.decode("latin-1")
        if declared is not None and declared > self.limit:
            return await self._reject(scope, receive, send)
        chunks: list[bytes] = []
        seen = 0
        while True:
            msg = await receive()
            if msg["type"] != "http.request":  # the client went away
                return
            body = msg.get("body", b"")
            seen += len(body)
            if seen > self.limit:
                return await self._reject(scope, receive, send)
            chunks.append(body)
            if not msg.get("more_body", False):
                break
        body = b"".join(chunks)
        if body and (not ctype or is_json_type(ctype)):
            why = json_body_problem(body, self.max_json_depth)
            if why:
                resp = problem_response(
                    400,
                    "Invalid JSON",
                    why,
                    type_="urn:boltzgen:problem:invalid-json",
                    instance=scope.get("path"),
                )
                return await resp(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, scope, receive, send):
        resp = problem_response(
            413,
            "Content Too Large",
            f"the request body exceeds {self.limit} bytes",
            type_="urn:boltzgen:problem:limit-body",
            instance=scope.get("path"),
            headers={"Connection": "close"},
        )
        await resp(scope, receive, send)
