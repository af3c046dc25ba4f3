"""A revoked API key is refused on the very next request, by this server and by another
server process sharing the store (no lookup cache to go stale)."""

from __future__ import annotations

from _server_fixtures import ADMIN, settings_for
from fastapi.testclient import TestClient

from server.app import create_app


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_revocation_is_immediate_across_servers(tmp_path):
    settings = settings_for(tmp_path)
    with TestClient(create_app(settings)) as a, TestClient(create_app(settings)) as b:
        made = a.post("/v1/keys", json={"name": "eve"}, headers=_auth(ADMIN)).json()
        key = made["key"]
        for _ in range(3):  # warm whatever a cache would hold
            assert a.get("/v1/jobs", headers=_auth(key)).status_code == 200
            assert b.get("/v1/jobs", headers=_auth(key)).status_code == 200
        assert a.delete(f"/v1/keys/{made['id']}", headers=_auth(ADMIN)).status_code == 204
        assert a.get("/v1/jobs", headers=_auth(key)).status_code == 401
        assert b.get("/v1/jobs", headers=_auth(key)).status_code == 401
        listed = {k["id"]: k for k in b.get("/v1/keys", headers=_auth(ADMIN)).json()}
        assert listed[made["id"]]["revoked"] is True
