"""A corpus of bad requests (``tests/data/bad/*.json``), each answered with a 4xx problem+json
that names the problem, with nothing enqueued; plus the server-level failure modes a fuzzer
found: deep nesting and unexpected exceptions on a real keep-alive connection, and input errors
in the worker that must never be retried.

A corpus item is a JSON file::

    {"description": "...", "method": "POST", "path": "/v1/jobs",
     "json": {...} | "raw": "text" | "file": "name in files/" | "multipart": {...}
             | "generate": {"deep": N} | {"oversize": bytes, "chunked": bool} | {"atoms": N},
     "as_field": "pdb",            # with "file": send {"pdb": <file text>} as JSON
     "headers": {...}, "key": "user" | "admin" | "none" | "bad",
     "status": 422, "needle": "text the problem's title, detail or type must contain"}

``{system_id}``, ``{job_id}``, ``{model_id}``, ``{artifact_id}`` (the fixture's, owned by the
calling key), ``{other_system_id}``, ``{other_job_id}`` (another key's) are filled in, and the
string ``"@ADP"`` stands for the alanine-dipeptide PDB text.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import torch
from _server_fixtures import ADMIN, ADP, LiveServer, settings_for
from fastapi.testclient import TestClient

from server.app import create_app

torch.set_num_threads(1)

BAD = Path(__file__).resolve().parent / "data" / "bad"
ITEMS = sorted(BAD.glob("*.json"))
PROBLEM = "application/problem+json"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _finish(app, tmp: Path, files: dict[str, bytes], outcome: dict, code: int = 0) -> None:
    """Let a worker record the end of the oldest queued job's attempt (its directory holding
    ``files`` and ``outcome``) without running it."""
    from server.runner.executors import LocalExecutor
    from server.runner.worker import WorkerPool, _Run

    pool = WorkerPool(
        app.state.settings, app.state.store, executor=LocalExecutor(app.state.settings), slots=0
    )
    claimed = pool.queue.claim(pool.worker_id, 30)
    assert claimed is not None
    jobdir = tmp / f"attempt-{claimed['id']}"
    (jobdir / "work").mkdir(parents=True)
    for name, data in files.items():
        (jobdir / "work" / name).write_bytes(data)
    if outcome:
        (jobdir / "result.json").write_text(json.dumps(outcome))
    pool._finish(_Run(job=claimed, handle=None, jobdir=jobdir), code)
    return claimed


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    app = create_app(
        settings_for(tmp, max_body_bytes=300_000, max_atoms=1000, max_active_jobs_per_key=1000)
    )
    with TestClient(app) as c:
        user = c.post("/v1/keys", json={"name": "user"}, headers=auth(ADMIN)).json()["key"]
        other = c.post("/v1/keys", json={"name": "other"}, headers=auth(ADMIN)).json()["key"]
        sys_a = c.post("/v1/systems", json={"pdb": ADP.read_text()}, headers=auth(user)).json()
        sys_b = c.post("/v1/systems", json={"pdb": ADP.read_text()}, headers=auth(other)).json()
        # a finished job of the user's with an artifact and a model
        r = c.post(
            "/v1/jobs", json={"kind": "energy", "system_id": sys_a["id"]}, headers=auth(user)
        )
        producer = r.json()["id"]
        outcome = {"status": "succeeded", "result": {"model_file": "model.pt"}}
        _finish(app, tmp, {"model.pt": b"weights", "energies.npz": b"0123456789"}, outcome)
        job = c.get(f"/v1/jobs/{producer}", headers=auth(user)).json()
        arts = c.get(f"/v1/jobs/{producer}/artifacts", headers=auth(user)).json()["items"]
        ids = {
            "system_id": sys_a["id"],
            "job_id": producer,
            "model_id": job["result"]["model_id"],
            "artifact_id": next(a["id"] for a in arts if a["name"] == "energies.npz"),
            "other_system_id": sys_b["id"],
            "other_job_id": c.post(
                "/v1/jobs", json={"kind": "energy", "system_id": sys_b["id"]}, headers=auth(other)
            ).json()["id"],
        }
        yield {"client": c, "app": app, "user": user, "ids": ids}


def _fill(value, ids: dict[str, str]):
    if isinstance(value, str):
        if value == "@ADP":
            return ADP.read_text()
        for k, v in ids.items():
            value = value.replace("{" + k + "}", v)
        return value
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    return value


def _generated(spec: dict) -> tuple[bytes, dict[str, str]]:
    if "deep" in spec:
        n = spec["deep"]
        body = spec.get("open", "[") * n + "1" + spec.get("close", "]") * n
        return body.encode(), {"content-type": "application/json"}
    if "oversize" in spec:
        return json.dumps({"pdb": "x" * spec["oversize"]}).encode(), {
            "content-type": "application/json"
        }
    if "atoms" in spec:
        line = "ATOM  {:5d}  C   GLY A   1       0.000   0.000   0.000  1.00  0.00           C"
        pdb = "\n".join(line.format(i % 100000) for i in range(spec["atoms"])) + "\nEND\n"
        return json.dumps({"pdb": pdb}).encode(), {"content-type": "application/json"}
    raise ValueError(spec)


def send(env, item: dict) -> httpx.Response:
    c, ids = env["client"], env["ids"]
    headers = {k: _fill(v, ids) for k, v in item.get("headers", {}).items()}
    key = {"user": env["user"], "admin": ADMIN, "bad": "bgk_never_issued", "none": None}[
        item.get("key", "user")
    ]
    if key:
        headers.update(auth(key))
    method, path = item["method"], _fill(item["path"], ids)
    if "json" in item:
        return c.request(method, path, json=_fill(item["json"], ids), headers=headers)
    if "raw" in item:
        return c.request(method, path, content=item["raw"].encode(), headers=headers)
    if "file" in item:
        data = (BAD / "files" / item["file"]).read_bytes()
        if "as_field" in item:
            return c.request(method, path, json={item["as_field"]: data.decode()}, headers=headers)
        return c.request(method, path, content=data, headers=headers)
    if "multipart" in item:
        mp = item["multipart"]
        files = {}
        for field, name in mp.get("files", {}).items():
            data = ADP.read_bytes() if name == "@ADP" else (BAD / "files" / name).read_bytes()
            files[field] = (name, data, "chemical/x-pdb")
        return c.request(
            method, path, files=files or None, data=mp.get("fields") or {"x": ""}, headers=headers
        )
    if "generate" in item:
        body, extra = _generated(item["generate"])
        headers = {**extra, **headers}
        if item["generate"].get("chunked"):

            def chunks():
                for i in range(0, len(body), 16384):
                    yield body[i : i + 16384]

            return c.request(method, path, content=chunks(), headers=headers)
        return c.request(method, path, content=body, headers=headers)
    return c.request(method, path, headers=headers)


def test_corpus_is_large_and_small():
    assert len(ITEMS) >= 40
    assert all(p.stat().st_size < 4096 for p in BAD.rglob("*") if p.is_file())


@pytest.mark.parametrize("path", ITEMS, ids=lambda p: p.stem)
def test_bad_input_is_a_named_4xx_problem(env, path):
    item = json.loads(path.read_text())
    store = env["app"].state.store
    before = store.count_by_status()
    r = send(env, item)
    assert r.status_code == item["status"], (item["description"], r.status_code, r.text[:500])
    assert 400 <= r.status_code < 500
    assert r.headers["content-type"] == PROBLEM, r.headers["content-type"]
    p = r.json()
    assert p["status"] == r.status_code and p["title"] and p["detail"], p
    text = f"{p['title']} {p['detail']} {p['type']}".lower()
    assert item["needle"].lower() in text, (item["needle"], p)
    assert "null" not in json.dumps(p.get("errors", []))  # no NaN came back as null
    # nothing enqueued, nothing started or retried
    assert store.count_by_status() == before
    assert all(
        j["attempts"] == 0 for j in store.list_jobs(None, limit=1000)[0] if j["status"] == "queued"
    )


def test_limits_hold_after_coercion_and_values_are_echoed_coerced(env):
    c, sid = env["client"], env["ids"]["system_id"]
    for n in (5000.0, "5000", "5e3"):
        body = {"kind": "simulate", "system_id": sid, "params": {"n_steps": n}}
        r = c.post("/v1/jobs", json=body, headers=auth(env["user"]))
        if n == "5e3":  # pydantic does not read "5e3" as an integer: a 422 naming the field
            assert r.status_code == 422 and "n_steps" in r.json()["detail"]
            continue
        assert r.status_code == 202, r.text
        assert r.json()["params"] == {"n_steps": 5000}
        c.post(f"/v1/jobs/{r.json()['id']}/cancel", headers=auth(env["user"]))


def test_input_errors_in_the_worker_are_never_retried(env, tmp_path):
    """A job that fails on bad input (a BoltzgenError, which the job protocol reports as not
    retryable, or exit code 3 without a readable result) fails at once; a crash is retried."""
    c, app, user, sid = env["client"], env["app"], env["user"], env["ids"]["system_id"]
    for outcome, code, expected in (
        (
            {
                "status": "failed",
                "retryable": False,
                "error": {"type": "ShapeError", "message": "x"},
            },
            3,
            "failed",
        ),
        ({}, 3, "failed"),
        ({}, -9, "queued"),  # killed: retried
    ):
        body = {"kind": "energy", "system_id": sid, "params": {}}
        job_id = c.post("/v1/jobs", json=body, headers=auth(user)).json()["id"]
        # the oldest queued job is claimed: make this one the only queued one
        for j in c.get("/v1/jobs?status=queued&limit=200", headers=auth(ADMIN)).json()["items"]:
            if j["id"] != job_id:
                c.post(f"/v1/jobs/{j['id']}/cancel", headers=auth(ADMIN))
        claimed = _finish(app, tmp_path, {}, outcome, code)
        assert claimed["id"] == job_id
        job = c.get(f"/v1/jobs/{job_id}", headers=auth(user)).json()
        assert job["status"] == expected, job
        assert job["attempts"] == 1
        c.post(f"/v1/jobs/{job_id}/cancel", headers=auth(user))


def test_unknown_kind_at_launch_is_not_retried(tmp_path):
    """A kind the worker cannot find (a plugin missing there) fails the job without retries."""
    from server.runner.executors import LocalExecutor
    from server.runner.worker import WorkerPool

    app = create_app(settings_for(tmp_path))
    store = app.state.store
    row = store.create_job(
        "someone", kind="no-such-kind", params={}, client_params={}, max_attempts=3
    )
    pool = WorkerPool(
        app.state.settings, store, executor=LocalExecutor(app.state.settings), slots=0
    )
    job = pool.queue.claim(pool.worker_id, 30)
    assert job["id"] == row["id"]
    pool._launch(job)
    after = store.get_job(row["id"], None)
    assert after["status"] == "failed" and after["attempts"] == 1, after
    store.dispose()


def test_deep_nesting_and_unexpected_errors_keep_the_connection(tmp_path):
    """Over a real keep-alive connection (uvicorn): deep nesting is a 400, an unexpected
    exception a problem+json 500, and the next request on the same connection still works."""
    with LiveServer(settings_for(tmp_path)) as live:

        def boom():
            raise RuntimeError("kaboom")

        live.app.router.add_api_route("/v1/boom", boom, methods=["GET"])
        with live.client() as c:
            r1 = c.post(
                "/v1/systems",
                content=b"[" * 200_000 + b"]" * 200_000,
                headers={"content-type": "application/json"},
            )
            assert r1.status_code == 400 and r1.headers["content-type"] == PROBLEM
            assert "nested" in r1.json()["detail"]
            r2 = c.get("/v1/boom")
            assert r2.status_code == 500 and r2.headers["content-type"] == PROBLEM
            assert r2.json()["detail"] and "kaboom" not in r2.text  # no internals leak
            r3 = c.get("/v1/kinds")
            assert r3.status_code == 200
            r4 = c.get("/healthz")
            assert r4.status_code == 200
            # one connection served all four
            assert len(c._transport._pool.connections) == 1
