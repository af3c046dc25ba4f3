"""Schema migrations (Alembic, ``server/storage/migrations``): the store runs ``upgrade head`` on open;
the migrated schema equals ``server/storage/tables.py``; a store created before Alembic (by the old
``metadata.create_all``) is stamped and upgraded in place with its rows intact. On SQLite
always, on PostgreSQL when BOLTZGEN_TEST_POSTGRES_URL is set."""

from __future__ import annotations

import os
import time

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, insert, inspect, select, text

from server.storage.queue import JobQueue
from server.storage.store import MIGRATIONS, Store, hash_key
from server.storage.tables import api_keys, job_events, jobs, metadata, systems

PG_URL = os.environ.get("BOLTZGEN_TEST_POSTGRES_URL")


def _head() -> str:
    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def _wipe(url: str) -> None:
    engine = create_engine(url)
    metadata.drop_all(engine)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    if not PG_URL:
        pytest.skip("set BOLTZGEN_TEST_POSTGRES_URL to test the PostgreSQL store")
    pytest.importorskip("psycopg")
    _wipe(PG_URL)
    yield PG_URL
    _wipe(PG_URL)


def test_fresh_store_is_at_head_and_matches_the_tables(url):
    store = Store(url)
    store.create_all()
    assert store.schema_revision() == _head()
    with store.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diffs == [], diffs
    store.create_all()  # idempotent
    assert store.schema_revision() == _head()
    store.dispose()


def test_pre_alembic_store_upgrades_in_place(url):
    # the store as the previous release made it: create_all, no alembic_version
    engine = create_engine(url)
    metadata.create_all(engine)
    now = time.time()
    with engine.begin() as conn:
        conn.execute(
            insert(api_keys).values(
                id="key_old", key_hash=hash_key("bgk_old"), name="old", created_at=now
            )
        )
        conn.execute(
            insert(systems).values(
                id="sys_old",
                owner="key_old",
                name="adp",
                n_atoms=22,
                solvent="vacuum",
                temperature=300.0,
                forcefield=["amber99sbildn.xml"],
                spec={"pdb": "..."},
                created_at=now,
            )
        )
        conn.execute(
            insert(jobs).values(
                id="job_old",
                owner="key_old",
                kind="energy",
                status="queued",
                system_id="sys_old",
                params={"i": 1},
                progress=0.0,
                message="",
                attempts=0,
                max_attempts=3,
                created_at=now,
                updated_at=now,
                run_after=now,
                cancel_requested=False,
            )
        )
        conn.execute(
            insert(job_events).values(
                job_id="job_old", ts=now, type="status", data={"status": "queued"}
            )
        )
    assert "alembic_version" not in inspect(engine).get_table_names()
    engine.dispose()

    store = Store(url)
    store.create_all()
    assert store.schema_revision() == _head()
    assert store.lookup_key("bgk_old") == "key_old"
    assert store.get_system("sys_old", "key_old")["n_atoms"] == 22
    assert store.get_job("job_old", "key_old")["params"] == {"i": 1}
    assert [e["type"] for e in store.events_after("job_old", 0)] == ["status"]
    # the old rows work with the new code: the queued job is claimed and completed
    q = JobQueue(store)
    job = q.claim("w", 30)
    assert job["id"] == "job_old"
    assert q.complete("job_old", "w", 1, {"ok": True}, [])
    with store.read() as conn:
        assert conn.execute(select(jobs.c.status)).scalar_one() == "succeeded"
    store.dispose()
