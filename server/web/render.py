"""Rendering the pages: the Jinja2 environment (autoescape on: every value a page shows is
escaped), the path prefix behind a reverse proxy, the security headers every page carries,
and the small formatters the templates use (age, size, percent)."""

from __future__ import annotations

import hashlib
import json
import re
import time
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from boltzgen import __version__

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

# no inline script or style anywhere: scripts and styles come from /ui/static only
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}
PAGE_HEADERS = {**SECURITY_HEADERS, "Cache-Control": "no-store"}

_PREFIX = re.compile(r"(/[A-Za-z0-9._~\-]+)*")


def base_path(request: Request) -> str:
    """The path the app is mounted under: ASGI ``root_path`` (``uvicorn --root-path``), else a
    proxy's ``X-Forwarded-Prefix`` (a path of plain segments only; anything else is ignored)."""
    root = str(request.scope.get("root_path") or "").rstrip("/")
    if root:
        return root
    fwd = request.headers.get("x-forwarded-prefix", "").strip().rstrip("/")
    return fwd if _PREFIX.fullmatch(fwd) else ""


def age(value: datetime | float | None) -> str:
    """'5 s', '3 min', '2 h', '4 d' since ``value``."""
    if value is None:
        return "-"
    t = value.timestamp() if isinstance(value, datetime) else float(value)
    s = max(0.0, time.time() - t)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s / size:.0f} {unit}"
    return f"{s:.0f} s"


def when(value: datetime | float | None) -> str:
    """'2026-12-04 19:12:47 UTC' (a datetime or Unix seconds)."""
    if value is None:
        return "-"
    t = value.timestamp() if isinstance(value, datetime) else float(value)
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def clock(value: float | None) -> str:
    """'19:12:47' (UTC) of Unix seconds: the log's time column."""
    return "-" if value is None else datetime.fromtimestamp(float(value), UTC).strftime("%H:%M:%S")


def size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def percent(x: float | None) -> str:
    return "-" if x is None else f"{100 * float(x):.0f} %"


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


@cache
def static_version() -> str:
    """A digest of the static files: their URLs change when they do (long cache lifetimes)."""
    h = hashlib.sha256(__version__.encode())
    for p in sorted(STATIC.iterdir()):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()[:12]


@cache
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        age=age, when=when, clock=clock, size=size, percent=percent, pretty_json=pretty_json
    )
    env.globals.update(version=__version__)
    return env


def page(
    request: Request,
    template: str,
    code: int = 200,
    extra_headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """A rendered page with the security headers. Templates get ``base`` (the prefix: every
    link is ``{{ base }}/ui/...``) and ``static`` (the versioned static URL prefix)."""
    base = base_path(request)
    html = (
        environment()
        .get_template(template)
        .render(
            request=request,
            base=base,
            static=f"{base}/ui/static",
            static_v=static_version(),
            **context,
        )
    )
    return HTMLResponse(html, status_code=code, headers={**PAGE_HEADERS, **(extra_headers or {})})
