"""The store and its job queue: atomic claims, leases, expiry, fencing, bounded attempts. Runs
on SQLite always and on PostgreSQL when BOLTZGEN_TEST_POSTGRES_URL is set (e.g.
postgresql+psycopg://postgres@127.0.0.1:54329/boltzgen_test)."""

from __future__ import annotations

import os
import threading
import time

import pytest
from sqlalchemy import text
from sqlalchemy.dialects import postgresql, sqlite

from server.storage.queue import JobQueue, claim_statement
from server.storage.store import Store
from server.storage.tables import metadata

PG_URL = os.environ.get("BOLTZGEN_TEST_POSTGRES_URL")


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path / 'store.db'}")
    else:
        if not PG_URL:
            pytest.skip("set BOLTZGEN_TEST_POSTGRES_URL to test the PostgreSQL store")
        pytest.importorskip("psycopg")
        s = Store(PG_URL)
        drop_schema(s)
    s.create_all()
    yield s
    if request.param == "postgres":
        drop_schema(s)
    s.dispose()


def drop_schema(store: Store) -> None:
    """Drop every table, the Alembic version table included (else the next create_all,
    which runs ``alembic upgrade head``, would find the store at head and create nothing)."""
    metadata.drop_all(store.engine)
    with store.engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))


@pytest.fixture
def queue(store):
    return JobQueue(store)


def add_jobs(store: Store, n: int, max_attempts: int = 3) -> list[str]:
    return [
        store.create_job("o", "energy", {"i": i}, max_attempts=max_attempts)["id"] for i in range(n)
    ]


def test_claim_statement_locks_with_skip_locked_on_postgres(tmp_path):
    stmt = claim_statement("w", 10, 0.0, skip_locked=True)
    sql = str(stmt.compile(dialect=postgresql.dialect()))
    assert "FOR UPDATE SKIP LOCKED" in sql and "RETURNING" in sql
    lite = JobQueue(Store(f"sqlite:///{tmp_path / 'x.db'}"))
    assert not lite.skip_locked
    stmt = claim_statement("w", 10, 0.0, skip_locked=lite.skip_locked)
    sql = str(stmt.compile(dialect=sqlite.dialect()))
    assert "FOR UPDATE" not in sql and "status = ?" in sql and "RETURNING" in sql


def test_concurrent_claims_take_each_job_once(store, queue):
    ids = add_jobs(store, 40)
    got: list[tuple[str, str]] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while (job := queue.claim(name, 30)) is not None:
            with lock:
                got.append((name, job["id"]))

    threads = [threading.Thread(target=worker, args=(f"w{k}",)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [j for _, j in got]
    assert sorted(claimed) == sorted(ids)  # every job exactly once
    assert store.count_by_status()["running"] == 40
    assert all(store.get_job(j, None)["attempts"] == 1 for j in ids[:5])


def test_expired_lease_requeues_then_fails_after_max_attempts(store, queue):
    (job_id,) = add_jobs(store, 1, max_attempts=2)
    job = queue.claim("w1", lease_seconds=0.2)
    assert job["id"] == job_id and job["attempts"] == 1
    assert queue.reap_expired(backoff=0.0) == {}  # lease still valid
    time.sleep(0.3)
    assert queue.reap_expired(backoff=0.5) == {job_id: "queued"}
    job = store.get_job(job_id, None)
    assert job["status"] == "queued" and job["last_error"]["type"] == "LeaseExpired"
    assert queue.claim("w2", 0.2) is None  # backoff: not runnable yet
    time.sleep(0.55)
    job = queue.claim("w2", 0.2)
    assert job is not None and job["attempts"] == 2
    time.sleep(0.3)
    assert queue.reap_expired(backoff=0.0) == {job_id: "failed"}
    job = store.get_job(job_id, None)
    assert job["status"] == "failed" and job["error"]["type"] == "LeaseExpired"
    assert job["finished_at"] is not None
    statuses = [e["data"]["status"] for e in store.events_after(job_id, 0) if e["type"] == "status"]
    assert statuses == ["queued", "running", "queued", "running", "failed"]


def test_heartbeat_keeps_the_lease(store, queue):
    (job_id,) = add_jobs(store, 1)
    queue.claim("w1", lease_seconds=0.3)
    for _ in range(6):
        time.sleep(0.1)
        assert queue.heartbeat("w1", [job_id], 0.3) == {job_id}
        assert queue.reap_expired(0.0) == {}
    assert store.get_job(job_id, None)["status"] == "running"
    assert queue.heartbeat("someone-else", [job_id], 0.3) == set()


def test_stale_worker_is_fenced_out(store, queue):
    (job_id,) = add_jobs(store, 1)
    old = queue.claim("old", lease_seconds=0.1)
    time.sleep(0.15)
    queue.reap_expired(0.0)
    new = queue.claim("new", lease_seconds=30)
    assert new["attempts"] == 2
    # the old worker wakes up: its progress, completion and failure are all ignored
    queue.record_progress(job_id, "old", old["attempts"], [(0.9, "stale")])
    assert not queue.complete(job_id, "old", old["attempts"], {"x": 1}, [])
    err = {"type": "X", "message": "x"}
    assert queue.finish_attempt(job_id, "old", 1, err, retryable=True, backoff=0) is None
    assert queue.heartbeat("old", [job_id], 30) == set()
    job = store.get_job(job_id, None)
    assert job["status"] == "running" and job["progress"] == 0.0
    files = [{"name": "a.txt", "path": "/x/a.txt", "size": 1, "media_type": "text/plain"}]
    assert queue.complete(job_id, "new", 2, {"ok": True}, files)
    job = store.get_job(job_id, None)
    assert job["status"] == "succeeded" and job["result"] == {"ok": True}
    assert [a["name"] for a in store.list_artifacts(job_id, "o")] == ["a.txt"]
    assert store.list_artifacts(job_id, "intruder") == []


def test_cancel_running_job_and_permanent_failure(store, queue):
    a, b = add_jobs(store, 2)
    ja = queue.claim("w", 30)
    jb = queue.claim("w", 30)
    assert store.request_cancel(a, "o")["cancel_requested"]
    assert store.request_cancel(a, "intruder") is None
    assert queue.cancel_flags([a, b]) == {a}
    err = {"type": "Killed", "message": "killed"}
    assert (
        queue.finish_attempt(a, "w", ja["attempts"], err, retryable=True, backoff=0) == "cancelled"
    )
    bad = {"type": "ShapeError", "message": "bad input"}
    assert queue.finish_attempt(b, "w", jb["attempts"], bad, retryable=False, backoff=0) == "failed"
    assert store.get_job(b, None)["error"] == bad


def test_model_registration_and_idempotency_rows(store, queue):
    (job_id,) = add_jobs(store, 1)
    job = queue.claim("w", 30)
    model = {"name": "m", "path": "/models/m.pt", "size": 10, "summary": {"nll": -1.0}}
    assert queue.complete(job_id, "w", job["attempts"], {"nll": -1.0}, [], model)
    result = store.get_job(job_id, None)["result"]
    m = store.get_model(result["model_id"], "o")
    assert m["job_id"] == job_id and m["summary"] == {"nll": -1.0}
    assert store.get_model(result["model_id"], "intruder") is None
    assert store.idem_get("o", "k") is None
    with store.transaction() as conn:
        store.idem_put(conn, "o", "k", "h1", 202, {"id": "j"}, "/v1/jobs/j")
    row = store.idem_get("o", "k")
    assert row["request_hash"] == "h1" and row["body"] == {"id": "j"} and row["status_code"] == 202
    assert store.idem_get("other", "k") is None
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError), store.transaction() as conn:  # one answer per key
        store.idem_put(conn, "o", "k", "h2", 202, {"id": "j2"}, None)
    assert store.idem_get("o", "k")["body"] == {"id": "j"}


def test_release_on_shutdown_does_not_count_the_attempt(store, queue):
    a, b = add_jobs(store, 2, max_attempts=1)
    ja, jb = queue.claim("w", 30), queue.claim("w", 30)
    assert queue.release(a, "w", ja["attempts"])
    job = store.get_job(a, None)
    assert job["status"] == "queued" and job["attempts"] == 0
    assert queue.claim("w2", 30)["attempts"] == 1  # still runnable with max_attempts=1
    store.request_cancel(b, None)
    assert not queue.release(b, "w", jb["attempts"])  # a cancel wins over a release
    assert not queue.release(a, "w", 1)  # fenced: w2 holds it now


def test_processes_starting_together_create_the_schema_once(store):
    """Server and workers call create_all at the same time on a fresh database."""
    drop_schema(store)
    errors = []

    def start() -> None:
        s = Store(store.url)
        try:
            s.create_all()
        except Exception as exc:  # the bug this guards against: duplicate CREATE TABLE
            errors.append(exc)
        finally:
            s.dispose()

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert add_jobs(store, 1)
