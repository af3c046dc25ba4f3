"""Service API at unit level: FastAPI TestClient, no workers (jobs stay queued)."""

from __future__ import annotations

import re

import pytest
from _server_fixtures import ADMIN, ADP, settings_for
from fastapi.testclient import TestClient

from boltzgen.schemas import CONSTRAINT_NAMES, SOLVENT_NAMES
from boltzgen.systems import CONSTRAINTS, SOLVENTS
from server.app import create_app
from server.http.auth import Principal
from server.http.deps import get_principal

PROBLEM = "application/problem+json"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    settings = settings_for(
        tmp_path_factory.mktemp("api"), max_body_bytes=20_000, max_active_jobs_per_key=6
    )
    app = create_app(settings)
    with TestClient(app) as client:
        a = client.post("/v1/keys", json={"name": "alice"}, headers=auth(ADMIN)).json()["key"]
        b = client.post("/v1/keys", json={"name": "bob"}, headers=auth(ADMIN)).json()["key"]
        r = client.post("/v1/systems", json={"pdb": ADP.read_text()}, headers=auth(a))
        assert r.status_code == 201, r.text
        yield {"client": client, "app": app, "a": a, "b": b, "system": r.json()}


def submit(client, key, system_id, idem=None, **params):
    headers = auth(key) | ({"Idempotency-Key": idem} if idem else {})
    body = {"kind": "energy", "system_id": system_id, "params": params}
    return client.post("/v1/jobs", json=body, headers=headers)


def cancel_all(client, key):
    for j in client.get("/v1/jobs?status=queued&limit=200", headers=auth(key)).json()["items"]:
        client.post(f"/v1/jobs/{j['id']}/cancel", headers=auth(key))


def test_system_upload_validates_and_reports(env):
    s = env["system"]
    assert s["n_atoms"] == 22 and s["solvent"] == "vacuum" and s["temperature"] == 300.0
    r = env["client"].get(f"/v1/systems/{s['id']}", headers=auth(env["a"]))
    assert r.status_code == 200 and r.json()["id"] == s["id"]
    # multipart upload of the same file works too
    files = {"pdb": ("adp.pdb", ADP.read_bytes(), "chemical/x-pdb")}
    r = env["client"].post(
        "/v1/systems", files=files, data={"solvent": "obc2", "name": "adp"}, headers=auth(env["a"])
    )
    assert r.status_code == 201, r.text
    assert r.json()["solvent"] == "obc2" and r.json()["name"] == "adp"
    assert r.headers["location"] == f"/v1/systems/{r.json()['id']}"


@pytest.mark.parametrize(
    "body, error",
    [
        ({"pdb": "this is not a PDB file\nat all\n"}, "validation"),  # no atom record
        ({"pdb": "/etc/passwd"}, "validation"),  # never read as a server path
        ({"pdb": "ATOM  garbage\n"}, "MalformedPDBError"),  # schema-valid, still not a PDB
        ({"pdb": ADP.read_text(), "forcefield": [""]}, "validation"),  # the schema says .xml
        ({"pdb": ADP.read_text(), "solvent": "tip3p-box"}, "ForceFieldError"),
        ({"pdb": ADP.read_text(), "forcefield": ["/etc/passwd.xml"]}, "ForceFieldError"),
    ],
)
def test_bad_system_is_problem_json_422(env, body, error):
    r = env["client"].post("/v1/systems", json=body, headers=auth(env["a"]))
    assert r.status_code == 422
    assert r.headers["content-type"] == PROBLEM
    p = r.json()
    assert p["status"] == 422 and p["type"].endswith(error) and p["detail"]
    assert "root:" not in r.text


def test_missing_hydrogens_named_in_problem(env):
    no_h = "\n".join(
        line for line in ADP.read_text().splitlines() if not line[12:16].strip().startswith("H")
    )
    r = env["client"].post("/v1/systems", json={"pdb": no_h}, headers=auth(env["a"]))
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
    assert "hydrogen" in r.json()["detail"].lower()


def test_oversize_body_413(env):
    big = ADP.read_text() + "REMARK padding\n" * 2000  # > 20 kB limit
    r = env["client"].post("/v1/systems", json={"pdb": big}, headers=auth(env["a"]))
    assert r.status_code == 413 and r.headers["content-type"] == PROBLEM
    assert r.json()["status"] == 413

    def chunks():  # no Content-Length: counted while streaming
        for _ in range(30):
            yield b"x" * 1000

    r = env["client"].post(
        "/v1/systems",
        content=chunks(),
        headers=auth(env["a"]) | {"content-type": "application/json"},
    )
    assert r.status_code == 413


def test_atom_limit_422(tmp_path):
    app = create_app(settings_for(tmp_path, max_atoms=10))
    with TestClient(app) as c:
        r = c.post("/v1/systems", json={"pdb": ADP.read_text()}, headers=auth(ADMIN))
    assert r.status_code == 422 and r.json()["type"].endswith("limit-atoms")
    assert "22 atoms" in r.json()["detail"]


def test_auth_required_and_wrong_key(env):
    c = env["client"]
    r = c.get("/v1/jobs")
    assert r.status_code == 401 and r.headers["content-type"] == PROBLEM
    assert r.headers["www-authenticate"] == "Bearer"
    assert c.get("/v1/jobs", headers=auth("bgk_nope")).status_code == 401
    assert c.get("/v1/jobs", headers={"X-API-Key": env["a"]}).status_code == 200
    assert c.post("/v1/keys", json={}, headers=auth(env["a"])).status_code == 403


def test_key_isolation(env):
    c, a, b = env["client"], env["a"], env["b"]
    job = submit(c, a, env["system"]["id"]).json()
    for path in (
        f"/v1/jobs/{job['id']}",
        f"/v1/jobs/{job['id']}/artifacts",
        f"/v1/systems/{env['system']['id']}",
    ):
        assert c.get(path, headers=auth(b)).status_code == 404, path
        assert c.get(path, headers=auth(a)).status_code == 200, path
    assert c.post(f"/v1/jobs/{job['id']}/cancel", headers=auth(b)).status_code == 404
    assert c.delete(f"/v1/systems/{env['system']['id']}", headers=auth(b)).status_code == 404
    # bob cannot run jobs on alice's system either
    r = submit(c, b, env["system"]["id"])
    assert r.status_code == 422 and "system" in r.json()["detail"]
    assert all(j["id"] != job["id"] for j in c.get("/v1/jobs", headers=auth(b)).json()["items"])
    admin_view = c.get(f"/v1/jobs/{job['id']}", headers=auth(ADMIN))
    assert admin_view.status_code == 200
    cancel_all(c, a)


def test_submit_is_202_with_location_and_retry_after(env):
    r = submit(env["client"], env["a"], env["system"]["id"])
    assert r.status_code == 202
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    assert int(r.headers["retry-after"]) >= 1
    assert job["status"] == "queued" and job["attempts"] == 0 and job["progress"] == 0
    assert "system" not in job["params"]  # the server-side spec is not echoed
    g = env["client"].get(r.headers["location"], headers=auth(env["a"]))
    assert g.status_code == 200 and g.json()["id"] == job["id"] and "retry-after" in g.headers
    cancel_all(env["client"], env["a"])


def test_idempotency_key(env):
    c, a, sid = env["client"], env["a"], env["system"]["id"]
    r1 = submit(c, a, sid, idem="k-1")
    r2 = submit(c, a, sid, idem="k-1")
    assert r1.status_code == r2.status_code == 202
    assert r1.json()["id"] == r2.json()["id"]
    assert r2.headers["location"] == r1.headers["location"]
    assert r2.headers.get("idempotent-replayed") == "true"
    r3 = submit(c, a, sid, idem="k-1", platform="Reference")
    assert r3.status_code == 422 and r3.headers["content-type"] == PROBLEM
    assert r3.json()["type"].endswith("idempotency-key-reused")
    # keys are per API key: bob's "k-1" is a different request
    other = c.post(
        "/v1/systems",
        json={"pdb": ADP.read_text()},
        headers=auth(env["b"]) | {"Idempotency-Key": "k-1"},
    )
    assert other.status_code == 201
    # a failed request does not burn the key
    bad = c.post(
        "/v1/jobs",
        json={"kind": "nope"},
        headers=auth(a) | {"Idempotency-Key": "k-2"},
    )
    assert bad.status_code == 422
    ok = submit(c, a, sid, idem="k-2")
    assert ok.status_code == 202
    cancel_all(c, a)


def test_pagination_and_status_filter(env):
    c, a, sid = env["client"], env["a"], env["system"]["id"]
    cancel_all(c, a)
    before = {j["id"] for j in c.get("/v1/jobs?limit=200", headers=auth(a)).json()["items"]}
    ids = [submit(c, a, sid).json()["id"] for _ in range(5)]
    for j in ids[:2]:
        assert c.post(f"/v1/jobs/{j}/cancel", headers=auth(a)).json()["status"] == "cancelled"
    seen, cursor = [], None
    while True:
        q = "/v1/jobs?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = c.get(q, headers=auth(a)).json()
        assert len(page["items"]) <= 2
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == len(before) + 5
    assert [s for s in seen if s in ids] == ids[::-1]  # newest first
    queued = c.get("/v1/jobs?status=queued", headers=auth(a)).json()["items"]
    assert {j["id"] for j in queued} == set(ids[2:])
    both = c.get("/v1/jobs?status=queued,cancelled&limit=200", headers=auth(a)).json()["items"]
    assert set(ids) <= {j["id"] for j in both}
    assert c.get("/v1/jobs?status=bogus", headers=auth(a)).status_code == 422
    assert c.get("/v1/jobs?cursor=!!notacursor", headers=auth(a)).status_code == 422
    cancel_all(c, a)


def test_cancel_and_delete(env):
    c, a = env["client"], env["a"]
    job = submit(c, a, env["system"]["id"]).json()
    assert c.delete(f"/v1/jobs/{job['id']}", headers=auth(a)).status_code == 409
    r = c.post(f"/v1/jobs/{job['id']}/cancel", headers=auth(a))
    assert r.status_code == 202 and r.json()["status"] == "cancelled"
    assert r.json()["finished_at"] is not None
    assert c.delete(f"/v1/jobs/{job['id']}", headers=auth(a)).status_code == 204
    r = c.get(f"/v1/jobs/{job['id']}", headers=auth(a))
    assert r.status_code == 404 and r.headers["content-type"] == PROBLEM


@pytest.mark.parametrize(
    "body, needle",
    [
        ({"kind": "nope"}, "unknown job kind"),
        ({"kind": "simulate", "params": {"n_steps": 100}}, "system_id"),
        ({"kind": "simulate", "system_id": "SYS", "params": {"n_steps": -5}}, "n_steps"),
        (
            {
                "kind": "simulate",
                "system_id": "SYS",
                "params": {"n_steps": 150, "report_interval": 100},
            },
            "multiple",
        ),
        ({"kind": "simulate", "system_id": "SYS", "params": {"n_steps": 10, "bogus": 1}}, "bogus"),
        ({"kind": "simulate", "system_id": "SYS", "params": {"n_steps": 10**9}}, "at most"),
        ({"kind": "energy", "system_id": "SYS", "params": {"n_samples": 10**9}}, "n_samples"),
        (
            {"kind": "energy", "system_id": "SYS", "params": {"system": {}}},
            "filled in by the server",
        ),
    ],
)
def test_job_validation_422(env, body, needle):
    if body.get("system_id") == "SYS":
        body = {**body, "system_id": env["system"]["id"]}
    r = env["client"].post("/v1/jobs", json=body, headers=auth(env["a"]))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == PROBLEM
    assert needle in r.json()["detail"]


def test_active_job_limit_429(env):
    c, a, sid = env["client"], env["a"], env["system"]["id"]
    cancel_all(c, a)
    codes = [submit(c, a, sid).status_code for _ in range(7)]
    assert codes[:6] == [202] * 6
    assert codes[6] == 429
    r = submit(c, a, sid)
    assert r.headers["content-type"] == PROBLEM and int(r.headers["retry-after"]) > 0
    cancel_all(c, a)
    assert submit(c, a, sid).status_code == 202
    cancel_all(c, a)


def test_kinds_ops_and_docs(env):
    c = env["client"]
    kinds = {k["name"]: k for k in c.get("/v1/kinds", headers=auth(env["a"])).json()}
    assert {"simulate", "energy"} <= set(kinds)
    sim = kinds["simulate"]
    assert sim["needs_system"] and "system" not in sim["params_schema"]["properties"]
    assert "n_steps" in sim["params_schema"]["required"]
    assert c.get("/healthz").json()["status"] == "ok"
    assert c.get("/readyz").status_code == 200
    metrics = c.get("/metrics")
    assert metrics.status_code == 200
    assert 'boltzgen_jobs{status="cancelled"}' in metrics.text
    assert 'route="/v1/jobs/{job_id}"' in metrics.text
    spec = c.get("/openapi.json").json()
    assert {"/v1/jobs", "/v1/jobs/{job_id}/events", "/v1/artifacts/{artifact_id}/content"} <= set(
        spec["paths"]
    )
    assert c.get("/docs").status_code == 200


def test_dependency_override_principal(tmp_path):
    """With the principal overridden (no key at all), resources belong to that owner."""
    app = create_app(settings_for(tmp_path))
    app.dependency_overrides[get_principal] = lambda: Principal("tester")
    with TestClient(app) as c:
        assert c.get("/v1/jobs").json() == {"items": [], "next_cursor": None}
        r = c.post("/v1/jobs", json={"kind": "energy"})
        assert r.status_code == 422 and "system_id" in r.json()["detail"]
        assert c.post("/v1/keys", json={}).status_code == 403


def _finish_with_outcome(app, tmp_path, files: dict[str, bytes], outcome: dict) -> dict:
    """Let a worker record a finished attempt whose directory holds ``files`` and ``outcome``
    (the worker's outcome handling without running a job)."""
    import json

    from server.runner.executors import LocalExecutor
    from server.runner.worker import WorkerPool, _Run

    store, settings = app.state.store, app.state.settings
    pool = WorkerPool(settings, store, executor=LocalExecutor(settings), slots=0)
    claimed = pool.queue.claim(pool.worker_id, 30)
    assert claimed is not None
    jobdir = tmp_path / "attempt-1"
    (jobdir / "work").mkdir(parents=True)
    for name, data in files.items():
        (jobdir / "work" / name).write_bytes(data)
    (jobdir / "result.json").write_text(json.dumps(outcome))
    pool._finish(_Run(job=claimed, handle=None, jobdir=jobdir), 0)
    return claimed


def test_result_model_file_registers_a_model(env, tmp_path):
    c, a, b = env["client"], env["a"], env["b"]
    cancel_all(c, a)
    job_id = submit(c, a, env["system"]["id"]).json()["id"]
    outcome = {"status": "succeeded", "result": {"model_file": "model.pt", "best_val_nll": -1.5}}
    files = {"model.pt": b"weights", "history.json": b"{}"}
    assert _finish_with_outcome(env["app"], tmp_path, files, outcome)["id"] == job_id
    job = c.get(f"/v1/jobs/{job_id}", headers=auth(a)).json()
    assert job["status"] == "succeeded" and job["result"]["best_val_nll"] == -1.5
    model_id = job["result"]["model_id"]
    names = {
        x["name"] for x in c.get(f"/v1/jobs/{job_id}/artifacts", headers=auth(a)).json()["items"]
    }
    assert names == {"model.pt", "history.json"}
    models = c.get("/v1/models", headers=auth(a)).json()["items"]
    assert [m["id"] for m in models] == [model_id]
    assert models[0]["system_id"] == env["system"]["id"] and models[0]["job_id"] == job_id
    assert models[0]["summary"] == {"best_val_nll": -1.5}
    assert c.get(f"/v1/models/{model_id}/content", headers=auth(a)).content == b"weights"
    assert c.get(f"/v1/models/{model_id}", headers=auth(b)).status_code == 404
    assert c.get("/v1/models", headers=auth(b)).json()["items"] == []
    # deleting the job keeps the model (its file was copied out of the job directory)
    assert c.delete(f"/v1/jobs/{job_id}", headers=auth(a)).status_code == 204
    assert c.get(f"/v1/models/{model_id}/content", headers=auth(a)).content == b"weights"
    assert c.delete(f"/v1/models/{model_id}", headers=auth(a)).status_code == 204
    assert c.get(f"/v1/models/{model_id}", headers=auth(a)).status_code == 404


def test_model_id_and_artifact_references_are_resolved(env, tmp_path):
    from boltzgen.jobs import ArtifactPath, ModelParams, job_kind

    class ConsumerParams(ModelParams):
        data: ArtifactPath
        other: ArtifactPath | None = None
        n_samples: int = 10

    @job_kind("test-consumer", ConsumerParams)
    def consumer(params, workdir, progress, checkpoint_dir):  # validated here, never run
        raise NotImplementedError

    c, a, b = env["client"], env["a"], env["b"]
    cancel_all(c, a)
    producer = submit(c, a, env["system"]["id"]).json()["id"]
    outcome = {"status": "succeeded", "result": {"model_file": "model.pt"}}
    _finish_with_outcome(env["app"], tmp_path, {"model.pt": b"w", "data.h5": b"d"}, outcome)
    model_id = c.get(f"/v1/jobs/{producer}", headers=auth(a)).json()["result"]["model_id"]
    arts = c.get(f"/v1/jobs/{producer}/artifacts", headers=auth(a)).json()["items"]
    data_id = next(x["id"] for x in arts if x["name"] == "data.h5")

    body = {
        "kind": "test-consumer",
        "model_id": model_id,
        "params": {"data": data_id, "other": data_id},
    }
    r = c.post("/v1/jobs", json=body, headers=auth(a))
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["params"] == {"data": data_id, "other": data_id}  # the client's view
    assert job["system_id"] == env["system"]["id"]  # taken from the model
    row = env["app"].state.store.get_job(job["id"], None)
    assert row["params"]["data"].endswith("data.h5") and row["params"]["model"].endswith("model.pt")
    assert row["params"]["other"] == row["params"]["data"]
    assert row["params"]["system"]["pdb"]
    for bad, needle in (
        ({"kind": "test-consumer", "params": {"data": data_id}}, "model_id"),
        ({**body, "params": {"data": "art_nope"}}, "artifact"),
    ):
        r = c.post("/v1/jobs", json=bad, headers=auth(a))
        assert r.status_code == 422 and needle in r.json()["detail"]
    # another key can use neither the model nor the artifact
    r = c.post("/v1/jobs", json=body, headers=auth(b))
    assert r.status_code == 422
    cancel_all(c, a)


def test_auth_disabled_for_local_use(tmp_path):
    app = create_app(settings_for(tmp_path, auth=False))
    with TestClient(app) as c:
        assert c.get("/v1/jobs").status_code == 200
        assert c.post("/v1/keys", json={"name": "x"}).status_code == 201  # local = admin


def test_event_stream_delivers_a_final_status_committed_between_its_reads(env):
    """The job ends after the stream found no new events but before it read the job's status:
    the final status event must still reach the client."""
    from server.http.deps import get_store

    client, app = env["client"], env["app"]
    job_id = submit(client, env["a"], env["system"]["id"]).json()["id"]
    real = app.state.store

    class EndsBetweenReads:
        def __getattr__(self, name):
            return getattr(real, name)

        def get_job(self, jid, owner, *args, **kwargs):
            if owner is None:  # the stream's own status check
                real.request_cancel(jid, None)
            return real.get_job(jid, owner, *args, **kwargs)

    app.dependency_overrides[get_store] = lambda: EndsBetweenReads()
    try:
        r = client.get(f"/v1/jobs/{job_id}/events", headers=auth(env["a"]))
    finally:
        app.dependency_overrides.pop(get_store)
    statuses = [line for line in r.text.splitlines() if line.startswith("data:")]
    assert '"status": "queued"' in statuses[0] and '"status": "cancelled"' in statuses[-1]


def test_train_balance_is_validated_at_submit(env):
    c, a, sid = env["client"], env["a"], env["system"]["id"]
    balance = {"cv": "phi", "states": [[0.0, 3.14]], "shares": [0.05, 0.1]}
    body = {"kind": "train", "system_id": sid, "params": {"loss": "kl", "balance": balance}}
    r = c.post("/v1/jobs", json=body, headers=auth(a))
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
    assert "1 states but 2 shares" in r.json()["detail"]
    body["params"]["balance"]["shares"] = [0.05]
    r = c.post("/v1/jobs", json=body, headers=auth(a))
    assert r.status_code == 422 and "needs 'data'" in r.json()["detail"]
    cancel_all(c, a)


def test_options_and_405_list_every_method_of_the_path(env):
    c = env["client"]
    cases = {
        "/v1/jobs": {"GET", "POST", "OPTIONS"},
        "/v1/systems": {"GET", "POST", "OPTIONS"},
        "/v1/jobs/job_x": {"GET", "DELETE", "OPTIONS"},
        "/v1/keys": {"GET", "POST", "OPTIONS"},
        "/v1/models/m": {"GET", "DELETE", "OPTIONS"},
        "/openapi.json": {"GET", "HEAD", "OPTIONS"},
    }
    for path, methods in cases.items():
        r = c.options(path)
        assert r.status_code == 204, (path, r.status_code)
        assert {m.strip() for m in r.headers["allow"].split(",")} == methods, path
        r = c.put(path, json={}, headers=auth(env["a"]))
        assert r.status_code == 405 and r.headers["content-type"] == PROBLEM
        assert {m.strip() for m in r.headers["allow"].split(",")} == methods, path
        assert "allowed" in r.json()["detail"]
    assert c.options("/v1/nowhere").status_code == 404


def test_openapi_is_the_real_contract(env):
    spec = env["client"].get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    union = schemas["JobCreate"]
    assert union["discriminator"]["propertyName"] == "kind"
    # built from the registry when the app was made: the built-in kinds (and any new module)
    assert {"simulate", "energy", "train", "sample", "free_energy"} <= set(
        union["discriminator"]["mapping"]
    )
    sim = schemas["JobCreate_simulate"]
    assert sim["properties"]["kind"]["const"] == "simulate"
    assert "system_id" in sim["required"] and "params" in sim["required"]
    assert "n_steps" in schemas[sim["properties"]["params"]["$ref"].split("/")[-1]]["required"]
    assert "HTTPValidationError" not in schemas
    paths = spec["paths"]
    assert {"403", "400", "401", "413", "415", "422"} <= set(paths["/v1/keys"]["post"]["responses"])
    assert "403" in paths["/v1/keys"]["get"]["responses"]
    assert {"409", "404"} <= set(paths["/v1/jobs/{job_id}"]["delete"]["responses"])
    assert {"206", "416", "410"} <= set(
        paths["/v1/artifacts/{artifact_id}/content"]["get"]["responses"]
    )
    for path, item in paths.items():
        for method, op in item.items():
            for code, resp in op["responses"].items():
                if int(code) >= 400:
                    assert resp["content"] == {
                        PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}
                    }, (path, method, code)
    links = paths["/v1/jobs"]["post"]["responses"]["202"]["links"]
    assert links["GetJob"]["operationId"] == paths["/v1/jobs/{job_id}"]["get"]["operationId"]
    assert links["GetJob"]["parameters"] == {"job_id": "$response.body#/id"}
    assert "links" in paths["/v1/systems"]["post"]["responses"]["201"]


def test_oversize_chunked_body_is_413_on_every_route(env):
    def chunks():
        for _ in range(30):
            yield b"x" * 1000

    for path in ("/v1/systems", "/v1/jobs", "/v1/keys", "/v1/jobs/job_x/cancel"):
        r = env["client"].post(
            path, content=chunks(), headers=auth(ADMIN) | {"content-type": "application/json"}
        )
        assert r.status_code == 413 and r.headers["content-type"] == PROBLEM, path


def test_range_errors_are_problem_json(env, tmp_path):
    c, a = env["client"], env["a"]
    cancel_all(c, a)
    job_id = submit(c, a, env["system"]["id"]).json()["id"]
    _finish_with_outcome(env["app"], tmp_path, {"out.txt": b"0123456789"}, {"status": "succeeded"})
    art = c.get(f"/v1/jobs/{job_id}/artifacts", headers=auth(a)).json()["items"][0]
    url = f"/v1/artifacts/{art['id']}/content"
    r = c.get(url, headers=auth(a) | {"Range": "bytes=2-4"})
    assert r.status_code == 206 and r.content == b"234"
    r = c.get(url, headers=auth(a) | {"Range": "bytes=10-20"})
    assert r.status_code == 416 and r.headers["content-type"] == PROBLEM
    assert r.headers["content-range"] == "bytes */10" and r.json()["detail"]
    r = c.get(url, headers=auth(a) | {"Range": "bytes=4-2"})
    assert r.status_code == 400 and r.headers["content-type"] == PROBLEM
    r = c.get(url, headers=auth(a) | {"Range": "pages=1-2"})
    assert r.status_code == 200 and r.content == b"0123456789"  # another unit: ignored
    r = c.get(url, headers=auth(a) | {"Range": "bytes=10-20", "If-Range": '"stale"'})
    assert r.status_code == 200 and r.content == b"0123456789"  # If-Range mismatch: whole file
    r = c.get(url, headers=auth(a) | {"Range": "bytes=-3"})
    assert r.status_code == 206 and r.content == b"789"
    assert r.headers["content-range"] == "bytes 7-9/10" and r.headers["content-length"] == "3"
    etag = r.headers["etag"]
    r = c.get(url, headers=auth(a) | {"Range": "bytes=8-", "If-Range": etag})
    assert r.status_code == 206 and r.content == b"89"
    r = c.get(url, headers=auth(a) | {"Range": "bytes=0-1,5-6"})
    assert r.status_code == 200 and r.content == b"0123456789"  # several ranges: whole file
    r = c.get(url, headers=auth(a) | {"Range": "bytes=20-,30-"})
    assert r.status_code == 416 and r.headers["content-range"] == "bytes */10"


def test_key_isolation_covers_every_resource(env, tmp_path):
    """Key B can neither read, list, download, cancel nor delete anything of key A's: systems,
    jobs, artifacts, models; and cannot use them in a job."""
    c, a, b = env["client"], env["a"], env["b"]
    cancel_all(c, a)
    sid = env["system"]["id"]
    done = submit(c, a, sid).json()["id"]
    outcome = {"status": "succeeded", "result": {"model_file": "model.pt"}}
    _finish_with_outcome(env["app"], tmp_path, {"model.pt": b"w", "e.npz": b"e"}, outcome)
    queued = submit(c, a, sid).json()["id"]
    model_id = c.get(f"/v1/jobs/{done}", headers=auth(a)).json()["result"]["model_id"]
    art = c.get(f"/v1/jobs/{done}/artifacts", headers=auth(a)).json()["items"][0]["id"]
    reads = [
        f"/v1/systems/{sid}",
        f"/v1/jobs/{done}",
        f"/v1/jobs/{queued}",
        f"/v1/jobs/{done}/artifacts",
        f"/v1/jobs/{queued}/events",
        f"/v1/artifacts/{art}",
        f"/v1/artifacts/{art}/content",
        f"/v1/models/{model_id}",
        f"/v1/models/{model_id}/content",
    ]
    for path in reads:
        r = c.get(path, headers=auth(b))
        assert r.status_code == 404 and r.headers["content-type"] == PROBLEM, path
    for path, key in (("/v1/systems", "id"), ("/v1/jobs", "id"), ("/v1/models", "id")):
        seen = {x[key] for x in c.get(path + "?limit=200", headers=auth(b)).json()["items"]}
        assert not seen & {sid, done, queued, model_id}, path
    assert c.post(f"/v1/jobs/{queued}/cancel", headers=auth(b)).status_code == 404
    for path in (f"/v1/jobs/{done}", f"/v1/models/{model_id}", f"/v1/systems/{sid}"):
        assert c.delete(path, headers=auth(b)).status_code == 404, path
    for body in (
        {"kind": "energy", "system_id": sid},
        {"kind": "sample", "model_id": model_id},
    ):
        r = c.post("/v1/jobs", json=body, headers=auth(b))
        assert r.status_code == 422, body
    # all of it is still there for A
    for path in reads[:4] + reads[5:]:
        assert c.get(path, headers=auth(a)).status_code == 200, path
    assert c.get(f"/v1/jobs/{queued}", headers=auth(a)).json()["status"] == "queued"
    cancel_all(c, a)


def test_openapi_carries_what_the_server_accepts(env):
    """Constraints found by an outside schemathesis run (schema-valid requests the server
    refused) are in the document: a PDB has an atom record, force fields are OpenMM XML file
    names, solvents and constraints the library's, a body is required; CG options and
    pipeline CV names as their validators check them; cursors are base64url, status filters
    statuses; model downloads are application/octet-stream."""
    doc = env["client"].get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    upload = doc["paths"]["/v1/systems"]["post"]["requestBody"]
    assert upload["required"] is True  # a bodiless POST is not a valid request
    system = upload["content"]["application/json"]["schema"]["properties"]
    assert "ATOM" in system["pdb"]["pattern"]
    ff = system["forcefield"]["items"]
    assert ff["minLength"] >= 5
    for name in ("amber99sbildn.xml", "amber14/tip3p.xml", "implicit/obc2.xml"):
        assert re.fullmatch(ff["pattern"], name), name
    for name in ("", "../x.xml", "a/../b.xml", "/etc/passwd.xml", "a b.xml", "x.txt"):
        assert not re.fullmatch(ff["pattern"], name), name
    assert system["solvent"]["enum"] == list(SOLVENT_NAMES)
    assert system["constraints"]["anyOf"][0]["enum"] == list(CONSTRAINT_NAMES)
    form = upload["content"]["multipart/form-data"]["schema"]["properties"]
    assert re.fullmatch(form["forcefield"]["pattern"], "amber99sbildn.xml,amber14/tip3p.xml")
    assert not re.fullmatch(form["forcefield"]["pattern"], "amber99sbildn.xml,")
    cg = next(v for k, v in schemas.items() if k.endswith("CGConfig"))["properties"]
    for name in ("hidden", "teacher_hidden"):
        assert cg[name]["minItems"] == 1 and cg[name]["items"]["minimum"] == 1, name
    assert cg["method"]["enum"] == ["flow", "forces"]
    assert cg["n_walkers"]["minimum"] == 1 and cg["timestep"]["exclusiveMinimum"] == 0
    cvs = schemas["JobParams_pipeline"]["properties"]["cvs"]["anyOf"][0]["items"]["pattern"]
    assert re.fullmatch(cvs, "phi:2") and not re.fullmatch(cvs, "")
    train = schemas["JobCreate_train"]
    assert "params" in train["required"]  # its params schema needs 'data' or loss='kl'
    assert train["properties"]["system_id"]["minLength"] == 1
    params = doc["paths"]["/v1/jobs"]["get"]["parameters"]
    cursor = next(p for p in params if p["name"] == "cursor")
    assert any("pattern" in s for s in cursor["schema"].get("anyOf", [cursor["schema"]]))
    status = next(p for p in params if p["name"] == "status")["schema"]["anyOf"][0]["items"]
    assert re.fullmatch(status["pattern"], "queued, running")
    assert not re.fullmatch(status["pattern"], "nope")
    model = doc["paths"]["/v1/models/{model_id}/content"]["get"]["responses"]
    for code in ("200", "206"):
        assert set(model[code]["content"]) == {"application/octet-stream"}, code


def test_schema_names_agree_with_the_library():
    """The schema's solvent and constraint names are the library's (schemas cannot import
    ``boltzgen.systems``: it loads OpenMM)."""
    assert set(SOLVENT_NAMES) == set(SOLVENTS)
    assert set(CONSTRAINT_NAMES) == set(CONSTRAINTS) - {None}


@pytest.mark.parametrize(
    "request_, problem",
    [
        (("GET", "/v1/jobs?cursor=0", {}), "cursor"),
        (("GET", "/v1/systems?cursor=0", {}), "cursor"),
        (("POST", "/v1/jobs", {"json": {"kind": "energy", "system_id": "s"}}), "unknown-system"),
        (("POST", "/v1/jobs", {"json": {"kind": "sample", "model_id": "m"}}), "unknown-model"),
        (("POST", "/v1/jobs", {"json": {"kind": "train", "params": {"data": "a"}}}), "*"),
        (("POST", "/v1/systems", {"files": {"pdb": ("x.pdb", b"not a PDB")}}), "structure"),
    ],
)
def test_semantic_rejections_are_typed(env, request_, problem):
    """Refusals no schema can state carry a problem type (the fuzz test allows these)."""
    method, path, kwargs = request_
    if problem == "*":  # an artifact id this key does not own, for a real system
        kwargs = {"json": {**kwargs["json"], "system_id": env["system"]["id"]}}
        problem = "unknown-artifact"
    r = env["client"].request(method, path, headers=auth(env["a"]), **kwargs)
    assert r.status_code == 422, r.text
    assert r.json()["type"] == f"urn:boltzgen:problem:{problem}"
