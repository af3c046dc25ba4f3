"""The service's own web pages, under ``/ui`` of the same app: jobs (list, live progress,
cancel, retry, artifacts), run reports rendered with their figures, systems and models.

Server-rendered (Jinja2, autoescaped), one small script (``static/app.js``: live progress
over the API's server-sent events), no build step, nothing from a CDN. Logged in with the
API's keys (``server.web.session``), scoped like the API, CSRF-checked forms, a strict CSP.
Links carry the mount prefix (``root_path`` or ``X-Forwarded-Prefix``), so the pages work
behind a reverse proxy serving the app under a path such as ``/boltzgen/``.

``install_web(app)`` is the one hook ``server.app.create_app`` calls.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from starlette.staticfiles import StaticFiles

from server.web import jobs, login, resources
from server.web.guard import install_error_pages
from server.web.render import SECURITY_HEADERS, STATIC
from server.web.session import Signer, session_secret

__all__ = ["install_web", "web_router"]

web_router = APIRouter(include_in_schema=False)
for module in (login, jobs, resources):
    web_router.include_router(module.router)


class CachedStatic(StaticFiles):
    """Static files with cache headers: their URLs carry a digest of the files
    (``?v=``), so a browser may keep them a day and revalidate by ETag after."""

    def file_response(self, *args, **kwargs):
        resp = super().file_response(*args, **kwargs)
        resp.headers.update(SECURITY_HEADERS)
        resp.headers["Cache-Control"] = "public, max-age=86400"
        return resp


def install_web(app: FastAPI) -> None:
    """Add the pages, their static files and their error pages to ``app``."""
    app.state.web_signer = Signer(session_secret(app.state.settings.state_dir))
    app.include_router(web_router)
    app.mount("/ui/static", CachedStatic(directory=STATIC), name="ui-static")
    install_error_pages(app)
