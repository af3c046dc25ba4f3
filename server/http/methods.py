"""Methods per path: ``OPTIONS`` answers 204 with an ``Allow`` header listing every method of
the path, and a method the path does not have is a 405 problem+json whose ``Allow`` lists them
all. (Starlette alone answers OPTIONS with 405, and takes ``Allow`` from the first route that
matches the path only, so ``GET /v1/jobs`` went missing from a 405 on ``/v1/jobs``.)"""

from __future__ import annotations

from starlette.routing import Match

from server.http.problems import problem_response

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _match(routes, scope, method: str) -> Match:
    """The best match of any route for ``scope`` with ``method`` (routers nested by
    ``include_router`` answer for their routes)."""
    probe = {**scope, "method": method}
    best = Match.NONE
    for route in routes:
        match, _ = route.matches(probe)
        if match == Match.FULL:
            return match
        if match == Match.PARTIAL:
            best = match
    return best


def path_methods(routes, scope) -> set[str]:
    """Every method some route serves on the path of ``scope`` (empty: no such path)."""
    return {m for m in METHODS if _match(routes, scope, m) == Match.FULL}


class AllowedMethods:
    """Pure ASGI middleware; ``router`` is the app's router (read at request time, so routes
    added after the app was built count too)."""

    def __init__(self, app, router) -> None:
        self.app = app
        self.router = router

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        method = scope["method"].upper()
        # the common case costs one routing pass: a route takes this method on this path
        if method != "OPTIONS" and _match(self.router.routes, scope, method) != Match.PARTIAL:
            return await self.app(scope, receive, send)
        methods = path_methods(self.router.routes, scope)
        if not methods or method in methods:
            return await self.app(scope, receive, send)
        allow = ", ".join(sorted(methods | {"OPTIONS"}))
        if method == "OPTIONS":
            await send(
                {
                    "type": "http.response.start",
                    "status": 204,
                    "headers": [(b"allow", allow.encode()), (b"content-length", b"0")],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        resp = problem_response(
            405,
            "Method Not Allowed",
            f"{method} is not allowed on {scope.get('path')}; allowed: {allow}",
            instance=scope.get("path"),
            headers={"Allow": allow},
        )
        await resp(scope, receive, send)
