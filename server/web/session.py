"""Browser sessions of the web pages: an API key entered once on the login form becomes a
signed, expiring session cookie (HttpOnly, SameSite=Strict, scoped to the pages' path).

The cookie holds no key: only the key's sha256 digest (what the store keeps too), the expiry
and the session's CSRF token, signed with HMAC-SHA256 under a secret kept in
``state_dir/web-session.secret`` (0600, made on first use, shared by every server process on
the state directory). Every request looks the digest up again, so a revoked key ends its
sessions at once, as it ends API access. Login checks the key with the API's own
``Authenticator``; afterwards the owner comes from the same ``api_keys`` row and the pages
scope every store call with ``Principal.scope``, like the REST routes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request, Response
from sqlalchemy import select
from starlette.datastructures import Headers

from server.http.auth import ANONYMOUS, Principal
from server.http.problems import Problem
from server.storage.store import hash_key
from server.storage.tables import api_keys

SESSION_COOKIE = "boltzgen_session"
LOGIN_COOKIE = "boltzgen_login"
SESSION_SECONDS = 8 * 3600
LOGIN_FORM_SECONDS = 3600
SECRET_FILE = "web-session.secret"


@dataclass(frozen=True)
class Session:
    principal: Principal
    csrf: str
    expires: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def session_secret(state_dir: Path) -> bytes:
    """The signing secret, created once (O_EXCL, mode 0600) and read by every process."""
    path = Path(state_dir) / SECRET_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # another process may be writing it right now
            text = path.read_text().strip()
            if text:
                return bytes.fromhex(text)
            time.sleep(0.01)
        raise RuntimeError(f"{path} is empty; delete it to make a new session secret") from None
    secret = secrets.token_bytes(32)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret.hex() + "\n")
    return secret


class Signer:
    """Signs and checks small JSON payloads with an expiry (``exp``, Unix seconds)."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _mac(self, purpose: str, body: str) -> str:
        msg = f"{purpose}.{body}".encode()
        return _b64(hmac.new(self._secret, msg, hashlib.sha256).digest())

    def dumps(self, purpose: str, payload: dict[str, Any]) -> str:
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        return f"{body}.{self._mac(purpose, body)}"

    def loads(self, purpose: str, token: str | None) -> dict[str, Any] | None:
        """The payload, or None when the token is absent, forged, malformed or expired."""
        if not token or token.count(".") != 1:
            return None
        body, mac = token.split(".")
        if not hmac.compare_digest(mac, self._mac(purpose, body)):
            return None
        try:
            payload = json.loads(_unb64(body))
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(payload, dict) or not payload.get("exp", 0) > time.time():
            return None
        return payload


def check_key(request: Request, key: str) -> Principal:
    """The principal of ``key`` by the API's own rule (``app.state.authenticate``); raises the
    API's 401 Problem for an unknown or revoked key."""
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": Headers({"authorization": f"Bearer {key}"}).raw,
        "app": request.app,
    }
    return request.app.state.authenticate(Request(scope))


def principal_of_digest(request: Request, digest: str) -> Principal | None:
    """Who the key with sha256 ``digest`` is now: the admin, a valid key's owner (its key id,
    as ``Authenticator`` gives), or None (revoked or unknown)."""
    settings = request.app.state.settings
    if not settings.auth:
        return ANONYMOUS
    admin = settings.admin_key
    if admin is not None and hmac.compare_digest(digest, hash_key(admin.get_secret_value())):
        return Principal("admin", is_admin=True)
    store = request.app.state.store
    with store.read() as conn:
        row = conn.execute(
            select(api_keys.c.id, api_keys.c.revoked).where(api_keys.c.key_hash == digest)
        ).first()
    if row is None or row.revoked:
        return None
    return Principal(row.id)


def signer(request: Request) -> Signer:
    return request.app.state.web_signer


def current_session(request: Request) -> Session | None:
    payload = signer(request).loads("session", request.cookies.get(SESSION_COOKIE))
    if payload is None or not isinstance(payload.get("kh"), str):
        return None
    principal = principal_of_digest(request, payload["kh"])
    if principal is None:
        return None
    return Session(principal, str(payload.get("csrf", "")), float(payload["exp"]))


def _cookie_args(request: Request, base: str) -> dict[str, Any]:
    return {
        "path": f"{base}/ui",
        "httponly": True,
        "samesite": "strict",
        "secure": request.url.scheme == "https",
    }


def start_session(request: Request, response: Response, key: str | None, base: str) -> None:
    """Set the session cookie for ``key`` (None: a server without API keys)."""
    digest = hash_key(key) if key is not None else ""
    exp = time.time() + SESSION_SECONDS
    token = signer(request).dumps(
        "session", {"kh": digest, "exp": exp, "csrf": secrets.token_urlsafe(24)}
    )
    response.set_cookie(
        SESSION_COOKIE, token, max_age=SESSION_SECONDS, **_cookie_args(request, base)
    )
    response.delete_cookie(LOGIN_COOKIE, **_cookie_args(request, base))


def end_session(request: Request, response: Response, base: str) -> None:
    response.delete_cookie(SESSION_COOKIE, **_cookie_args(request, base))


def login_token(request: Request) -> tuple[str, str]:
    """The CSRF token of the login form (against login CSRF: a forged login into the
    attacker's key), double-submitted: (form field value, signed cookie value); they must
    agree on POST (``login_nonce``)."""
    nonce = secrets.token_urlsafe(24)
    token = signer(request).dumps("login", {"n": nonce, "exp": time.time() + LOGIN_FORM_SECONDS})
    return nonce, token


def set_login_cookie(request: Request, response: Response, token: str, base: str) -> None:
    response.set_cookie(
        LOGIN_COOKIE, token, max_age=LOGIN_FORM_SECONDS, **_cookie_args(request, base)
    )


def _same_origin(request: Request) -> bool:
    """A browser's Origin (or Referer) must name this host; absent both, the token decides."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin or origin == "null":
        return origin is None
    host = request.headers.get("x-forwarded-host") or request.headers.get("host", "")
    rest = origin.split("://", 1)[-1]
    return rest.split("/", 1)[0] == host


def check_csrf(request: Request, expected: str | None, sent: Any) -> None:
    """403 unless the form's token equals the session's and the request is same-origin."""
    ok = (
        bool(expected)
        and isinstance(sent, str)
        and hmac.compare_digest(sent.encode(), str(expected).encode())
        and _same_origin(request)
    )
    if not ok:
        raise Problem(
            403,
            "Forbidden",
            "the form's CSRF token is missing or stale: reload the page and try again",
            type_="csrf",
        )


def login_nonce(request: Request) -> str | None:
    payload = signer(request).loads("login", request.cookies.get(LOGIN_COOKIE))
    return None if payload is None else str(payload.get("n", ""))
