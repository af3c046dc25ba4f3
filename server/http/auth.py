"""API-key authentication: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.

Keys are stored as sha256 hashes and compared with ``hmac.compare_digest``; the admin key comes
from settings. Each key owns what it creates and sees nothing else (404); the admin sees all and
manages keys. Every request looks its key up in the store (one indexed SELECT, about 0.1 ms on
SQLite and on a local PostgreSQL: see docs/RELIABILITY.md), so a revoked key is refused at
once, by every server process sharing the store. There is no lookup cache to invalidate.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import Request

from server.http.problems import Problem
from server.storage.store import hash_key


@dataclass(frozen=True)
class Principal:
    owner: str
    is_admin: bool = False

    @property
    def scope(self) -> str | None:
        """Owner filter for store queries: None (everything) for the admin."""
        return None if self.is_admin else self.owner


ANONYMOUS = Principal("local", is_admin=True)


def _presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return request.headers.get("x-api-key")


class Authenticator:
    def __init__(self, settings, store) -> None:
        self.settings = settings
        self.store = store
        self._admin_digest = (
            hash_key(settings.admin_key.get_secret_value()) if settings.admin_key else None
        )

    def __call__(self, request: Request) -> Principal:
        if not self.settings.auth:
            return ANONYMOUS
        key = _presented_key(request)
        if not key:
            raise Problem(
                401,
                "Unauthorized",
                "send an API key as 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        digest = hash_key(key)
        if self._admin_digest is not None and hmac.compare_digest(digest, self._admin_digest):
            return Principal("admin", is_admin=True)
        owner = self.store.lookup_key(key)
        if owner is None:
            raise Problem(
                401,
                "Unauthorized",
                "unknown or revoked API key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return Principal(owner)
