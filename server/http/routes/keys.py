"""``/v1/keys``: API key management, admin only. A key's plaintext is returned once, at
creation; the store keeps only its hash."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Response

from boltzgen.schemas import KeyCreate, KeyInfo
from server.http.auth import Principal
from server.http.convert import key_info
from server.http.deps import StoreDep, Who
from server.http.problems import BODY_PROBLEMS, Problem, not_found, problem_responses
from server.http.routes import V1

router = APIRouter(prefix=V1, tags=["keys"])


def require_admin(who: Principal) -> None:
    if not who.is_admin:
        raise Problem(403, "Forbidden", "only the admin key manages API keys")


@router.post(
    "/keys",
    status_code=201,
    response_model=KeyInfo,
    responses=problem_responses(403, *BODY_PROBLEMS),
)
def create_key(body: KeyCreate, store: StoreDep, who: Who) -> KeyInfo:
    """Admin: issue an API key. The plaintext key is in this response only."""
    require_admin(who)
    key_id, key = store.create_key(body.name)
    return KeyInfo(id=key_id, name=body.name, created_at=datetime.now(UTC), key=key)


@router.get("/keys", response_model=list[KeyInfo], responses=problem_responses(403))
def list_keys(store: StoreDep, who: Who) -> list[KeyInfo]:
    require_admin(who)
    return [key_info(k) for k in store.list_keys()]


@router.delete("/keys/{key_id}", status_code=204, responses=problem_responses(403, 404))
def revoke_key(key_id: str, store: StoreDep, who: Who) -> Response:
    require_admin(who)
    if not store.revoke_key(key_id):
        raise not_found("key", key_id)
    return Response(status_code=204)
