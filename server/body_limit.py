"""Request body size limit as pure ASGI middleware: it also counts bodies streamed without a
Content-Length, which a check in a route (after the body is read) could not stop."""

from __future__ import annotations

from server.problems import problem_response


class BodyLimit:
    """Pure ASGI middleware: 413 problem+json for bodies over ``limit`` bytes (declared
    Content-Length or counted while streaming)."""

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = None
        for k, v in scope["headers"]:
            if k == b"content-length":
                try:
                    declared = int(v)
                except ValueError:
                    declared = None
        if declared is not None and declared > self.limit:
            return await self._reject(scope, receive, send)
        seen = 0
        started = False

        class TooLarge(Exception):
            pass

        async def counting_receive():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise TooLarge
            return msg

        async def tracking_send(msg):
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except TooLarge:
            if not started:
                await self._reject(scope, receive, send)

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
