"""``Idempotency-Key`` handling for POSTs: run a create at most once per (key owner, key).

The response is recorded in the same transaction as the create, so a crash cannot leave a
resource without its record (or a record without its resource).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from fastapi.responses import JSONResponse
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from server.http.auth import Principal
from server.http.problems import Problem
from server.storage.store import Store

# what a create returns: (status, JSON body, Location or None, extra headers)
Made = tuple[int, Any, str | None, dict[str, str]]


def request_hash(path: str, payload: Any) -> str:
    blob = json.dumps({"path": path, "body": payload}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def idempotent(
    store: Store,
    who: Principal,
    key: str | None,
    path: str,
    payload: Any,
    make: Callable[[Connection], Made],
) -> JSONResponse:
    """Run ``make(conn)`` in one write transaction, at most once per (key owner,
    Idempotency-Key): the same key with the same body replays the first response (header
    ``Idempotent-Replayed: true``); with a different body it is a 422. Requests that fail
    record nothing, so the key can be retried."""

    def respond(
        status: int, body: Any, location: str | None, extra: dict[str, str]
    ) -> JSONResponse:
        headers = dict(extra)
        if location:
            headers["Location"] = location
        return JSONResponse(body, status_code=status, headers=headers)

    def replay(row: dict[str, Any]) -> JSONResponse:
        if row["request_hash"] != digest:
            raise Problem(
                422,
                "Idempotency-Key reused",
                "this Idempotency-Key was used with a different request body",
                type_="idempotency-key-reused",
            )
        extra = {"Idempotent-Replayed": "true"}
        if row["status_code"] == 202:
            extra["Retry-After"] = "1"
        return respond(row["status_code"], row["body"], row["location"], extra)

    if not key:
        with store.transaction() as conn:
            return respond(*make(conn))
    if len(key) > 200:
        raise Problem(422, "Invalid Idempotency-Key", "Idempotency-Key is longer than 200 chars")
    digest = request_hash(path, payload)
    try:
        with store.transaction() as conn:
            row = store.idem_get(who.owner, key, conn)
            if row is not None:
                return replay(row)
            status, body, location, extra = make(conn)
            store.idem_put(conn, who.owner, key, digest, status, body, location)
    except IntegrityError:  # a concurrent request with the same key committed first
        row = store.idem_get(who.owner, key)
        if row is None:
            raise
        return replay(row)
    return respond(status, body, location, extra)
