"""The store: SQLAlchemy Core over SQLite (WAL, the embedded default) or PostgreSQL.

``Store`` owns the engine and the write transactions, and does the API side's reads and writes:
API keys, systems, job rows (create, list, cancel, delete), job events, artifacts, models and
idempotency records. The workers' side of the jobs table -- claims, leases, heartbeats,
outcomes, expiry -- is ``server.storage.queue.JobQueue``, built over a store so both share its engine
and its SQLite write lock. Every state change of a job is one transaction that also appends to
``job_events`` (the SSE stream reads that table).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Table,
    and_,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine

from server.storage.tables import (
    ACTIVE,
    STATUSES,
    api_keys,
    artifacts,
    idempotency,
    job_events,
    jobs,
    models,
    systems,
)

# hot-path statements built once; values travel as bound parameters (no per-call compilation)
_INSERT_JOB = insert(jobs)
_INSERT_EVENT = insert(job_events)
_INSERT_IDEM = insert(idempotency)

MIGRATIONS = Path(__file__).with_name("migrations")
PRE_ALEMBIC_REVISION = "0001"  # the schema of stores created before Alembic was added


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


def hash_key(key: str) -> str:
    """sha256 hex of an API key (keys are 256-bit random, so no salt/KDF is needed)."""
    return hashlib.sha256(key.encode()).hexdigest()


def as_dict(r: Any) -> dict[str, Any] | None:
    """A result row as a plain dict (None stays None)."""
    return None if r is None else dict(r._mapping)


def append_event(conn: Connection, job_id: str, type_: str, data: dict[str, Any]) -> None:
    """Append a job event in the caller's transaction (with the state change it reports)."""
    conn.execute(_INSERT_EVENT, {"job_id": job_id, "ts": time.time(), "type": type_, "data": data})


def owned(table: Table, owner: str | None):
    """The owner filter of a query: everything for ``owner=None`` (the admin)."""
    return table.c.owner == owner if owner is not None else True


class Store:
    """All persistent state. Methods taking ``owner`` scope to it; ``owner=None`` is the admin."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.is_postgres = url.startswith("postgresql")
        if self.is_sqlite:
            engine = create_engine(
                url,
                echo=echo,
                connect_args={"check_same_thread": False, "timeout": 30},
                pool_size=10,
                max_overflow=20,
            )
            _sqlite_setup(engine)
        else:
            engine = create_engine(url, echo=echo, pool_pre_ping=True, pool_size=10)
        self.engine: Engine = engine
        self._writer = engine.execution_options(sqlite_immediate=True)
        # SQLite has one writer at a time; queueing our own threads on a lock is far cheaper
        # than SQLite's busy handler (which sleeps up to 100 ms between retries).
        self._write_lock = threading.Lock() if self.is_sqlite else None

    # ------------------------------------------------------------ plumbing
    def create_all(self) -> None:
        """Bring the schema to the newest revision: Alembic ``upgrade head``
        (``server/storage/migrations``), in one transaction. A store made before Alembic was added
        (tables, no ``alembic_version``) is stamped with the initial revision first. Several
        processes may start at once (server + workers): on PostgreSQL an advisory lock
        serialises them, on SQLite BEGIN IMMEDIATE does."""
        from alembic import command

        with self.transaction() as conn:
            if self.is_postgres:
                conn.execute(text("SELECT pg_advisory_xact_lock(7262011)"))
            cfg = _alembic_config(conn)
            names = set(inspect(conn).get_table_names())
            if "alembic_version" not in names and "jobs" in names:
                command.stamp(cfg, PRE_ALEMBIC_REVISION)
            command.upgrade(cfg, "head")

    def schema_revision(self) -> str | None:
        """The Alembic revision the store is at (None: not migrated)."""
        from alembic.runtime.migration import MigrationContext

        with self.read() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def transaction(self, conn: Connection | None = None) -> Iterator[Connection]:
        """A write transaction (BEGIN IMMEDIATE on SQLite: no lock-upgrade deadlocks), for
        callers that combine several steps atomically. Given ``conn``, joins that one."""
        if conn is not None:
            yield conn
        elif self._write_lock is None:
            with self._writer.begin() as c:
                yield c
        else:
            with self._write_lock, self._writer.begin() as c:
                yield c

    @contextmanager
    def read(self, conn: Connection | None = None) -> Iterator[Connection]:
        """A connection for reads. Given ``conn`` (a caller's transaction), reads in that."""
        if conn is not None:
            yield conn
        else:
            with self.engine.connect() as c:
                yield c

    def ping(self) -> bool:
        with self.read() as conn:
            return conn.execute(select(1)).scalar() == 1

    def _one(self, q: Any, conn: Connection | None) -> dict[str, Any] | None:
        with self.read(conn) as c:
            return as_dict(c.execute(q).first())

    def _owned(
        self, table: Table, ident: str, owner: str | None, conn: Connection | None
    ) -> dict[str, Any] | None:
        """The row ``ident`` of ``table`` if ``owner`` may see it (None: any owner)."""
        return self._one(select(table).where(table.c.id == ident, owned(table, owner)), conn)

    def _page(
        self, table: Table, where: Any, cursor: int | None, limit: int
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Newest first, keyset-paginated on ``seq``: (rows, seq of the next page or None)."""
        q = select(table).where(where)
        if cursor is not None:
            q = q.where(table.c.seq < cursor)
        with self.read() as conn:
            rows = conn.execute(q.order_by(table.c.seq.desc()).limit(limit + 1)).all()
        items = [dict(r._mapping) for r in rows[:limit]]
        nxt = items[-1]["seq"] if len(rows) > limit else None
        return items, nxt

    # ------------------------------------------------------------ API keys
    def create_key(self, name: str) -> tuple[str, str]:
        """A new API key: returns (key id, plaintext key). Only the hash is stored."""
        key_id = new_id("key")
        key = "bgk_" + secrets.token_urlsafe(32)
        with self.transaction() as conn:
            conn.execute(
                insert(api_keys).values(
                    id=key_id, key_hash=hash_key(key), name=name, created_at=time.time()
                )
            )
        return key_id, key

    def lookup_key(self, key: str) -> str | None:
        """The key id of a valid (not revoked) plaintext key, else None."""
        digest = hash_key(key)
        with self.read() as conn:
            r = conn.execute(
                select(api_keys.c.id, api_keys.c.key_hash, api_keys.c.revoked).where(
                    api_keys.c.key_hash == digest
                )
            ).first()
        if r is None or r.revoked or not hmac.compare_digest(r.key_hash, digest):
            return None
        return r.id

    def list_keys(self) -> list[dict[str, Any]]:
        with self.read() as conn:
            rows = conn.execute(
                select(api_keys.c.id, api_keys.c.name, api_keys.c.created_at, api_keys.c.revoked)
            ).all()
        return [dict(r._mapping) for r in rows]

    def revoke_key(self, key_id: str) -> bool:
        with self.transaction() as conn:
            n = conn.execute(
                update(api_keys).where(api_keys.c.id == key_id).values(revoked=True)
            ).rowcount
        return n == 1

    # ------------------------------------------------------------ systems
    def add_system(
        self, owner: str, conn: Connection | None = None, **fields: Any
    ) -> dict[str, Any]:
        row = {"id": new_id("sys"), "owner": owner, "created_at": time.time(), **fields}
        with self.transaction(conn) as c:
            c.execute(insert(systems).values(**row))
        return row

    def get_system(
        self, system_id: str, owner: str | None, conn: Connection | None = None
    ) -> dict[str, Any] | None:
        return self._owned(systems, system_id, owner, conn)

    def list_systems(self, owner: str | None, cursor: int | None, limit: int):
        return self._page(systems, owned(systems, owner), cursor, limit)

    def delete_system(self, system_id: str, owner: str | None) -> bool:
        with self.transaction() as conn:
            return (
                conn.execute(
                    delete(systems).where(systems.c.id == system_id, owned(systems, owner))
                ).rowcount
                == 1
            )

    # ------------------------------------------------------------ jobs (API side)
    def create_job(
        self,
        owner: str,
        kind: str,
        params: dict[str, Any],
        *,
        max_attempts: int,
        system_id: str | None = None,
        model_id: str | None = None,
        client_params: dict[str, Any] | None = None,
        conn: Connection | None = None,
    ) -> dict[str, Any]:
        """A queued job. ``params`` is what the job runs with (system spec, file paths filled
        in); ``client_params`` what the client sent (shown back to it)."""
        now = time.time()
        row = {
            "id": new_id("job"),
            "owner": owner,
            "kind": kind,
            "status": "queued",
            "system_id": system_id,
            "model_id": model_id,
            "params": params,
            "client_params": client_params,
            "progress": 0.0,
            "message": "",
            "attempts": 0,
            "max_attempts": max_attempts,
            "created_at": now,
            "updated_at": now,
            "run_after": now,
            "cancel_requested": False,
        }
        with self.transaction(conn) as c:
            c.execute(_INSERT_JOB, row)
            append_event(c, row["id"], "status", {"status": "queued", "attempts": 0})
        return row | dict.fromkeys(
            (
                "result",
                "error",
                "last_error",
                "started_at",
                "finished_at",
                "lease_owner",
                "lease_expires_at",
            )
        )

    def get_job(
        self, job_id: str, owner: str | None, conn: Connection | None = None
    ) -> dict[str, Any] | None:
        return self._owned(jobs, job_id, owner, conn)

    def list_jobs(
        self,
        owner: str | None,
        *,
        statuses: Sequence[str] = (),
        kind: str | None = None,
        cursor: int | None = None,
        limit: int = 50,
    ):
        where = [owned(jobs, owner)]
        if statuses:
            where.append(jobs.c.status.in_(list(statuses)))
        if kind:
            where.append(jobs.c.kind == kind)
        return self._page(jobs, and_(*where), cursor, limit)

    def count_active(
        self, owner: str, conn: Connection | None = None, at_most: int | None = None
    ) -> int:
        """Queued + running jobs of ``owner`` (counting stops at ``at_most``)."""
        inner = select(jobs.c.seq).where(jobs.c.owner == owner, jobs.c.status.in_(ACTIVE))
        if at_most is not None:
            inner = inner.limit(at_most)
        q = select(func.count()).select_from(inner.subquery())
        with self.read(conn) as c:
            return c.execute(q).scalar_one()

    def count_by_status(self) -> dict[str, int]:
        with self.read() as conn:
            rows = conn.execute(select(jobs.c.status, func.count()).group_by(jobs.c.status)).all()
        return {s: 0 for s in STATUSES} | {r[0]: r[1] for r in rows}

    def request_cancel(self, job_id: str, owner: str | None) -> dict[str, Any] | None:
        """Cancel: a queued job is cancelled at once, a running one is flagged for its worker."""
        now = time.time()
        with self.transaction() as conn:
            job = self.get_job(job_id, owner, conn=conn)
            if job is None:
                return None
            if job["status"] == "queued":
                conn.execute(
                    update(jobs)
                    .where(jobs.c.id == job_id)
                    .values(
                        status="cancelled", cancel_requested=True, finished_at=now, updated_at=now
                    )
                )
                append_event(conn, job_id, "status", {"status": "cancelled"})
            elif job["status"] == "running" and not job["cancel_requested"]:
                conn.execute(
                    update(jobs)
                    .where(jobs.c.id == job_id)
                    .values(cancel_requested=True, updated_at=now)
                )
                append_event(conn, job_id, "cancel_requested", {"status": "running"})
            return self.get_job(job_id, owner, conn=conn)

    def delete_job(self, job_id: str, owner: str | None) -> list[str] | None:
        """Delete a terminal job, its events and artifact rows. Returns artifact paths (to
        remove), None if absent; raises ValueError if the job is still active."""
        with self.transaction() as conn:
            job = self.get_job(job_id, owner, conn=conn)
            if job is None:
                return None
            if job["status"] in ACTIVE:
                raise ValueError(f"job {job_id} is {job['status']}; cancel it first")
            paths = [
                r.path
                for r in conn.execute(
                    select(artifacts.c.path).where(artifacts.c.job_id == job_id)
                ).all()
            ]
            conn.execute(delete(artifacts).where(artifacts.c.job_id == job_id))
            conn.execute(delete(job_events).where(job_events.c.job_id == job_id))
            conn.execute(delete(jobs).where(jobs.c.id == job_id))
            return paths

    # ------------------------------------------------------------ events
    def events_after(self, job_id: str, after_id: int, limit: int = 500) -> list[dict[str, Any]]:
        with self.read() as conn:
            rows = conn.execute(
                select(job_events)
                .where(job_events.c.job_id == job_id, job_events.c.id > after_id)
                .order_by(job_events.c.id)
                .limit(limit)
            ).all()
        return [dict(r._mapping) for r in rows]

    # ------------------------------------------------------------ artifacts and models
    def list_artifacts(self, job_id: str, owner: str | None) -> list[dict[str, Any]]:
        with self.read() as conn:
            rows = conn.execute(
                select(artifacts)
                .where(artifacts.c.job_id == job_id, owned(artifacts, owner))
                .order_by(artifacts.c.seq)
            ).all()
        return [dict(r._mapping) for r in rows]

    def get_artifact(
        self, artifact_id: str, owner: str | None, conn: Connection | None = None
    ) -> dict[str, Any] | None:
        return self._owned(artifacts, artifact_id, owner, conn)

    def get_model(
        self, model_id: str, owner: str | None, conn: Connection | None = None
    ) -> dict[str, Any] | None:
        return self._owned(models, model_id, owner, conn)

    def list_models(self, owner: str | None, cursor: int | None, limit: int):
        return self._page(models, owned(models, owner), cursor, limit)

    def delete_model(self, model_id: str, owner: str | None) -> str | None:
        with self.transaction() as conn:
            m = self._owned(models, model_id, owner, conn)
            if m is None:
                return None
            conn.execute(delete(models).where(models.c.id == model_id))
            return m["path"]

    # ------------------------------------------------------------ idempotency
    def idem_get(
        self, owner: str, key: str, conn: Connection | None = None
    ) -> dict[str, Any] | None:
        q = select(idempotency).where(idempotency.c.owner == owner, idempotency.c.key == key)
        return self._one(q, conn)

    def idem_put(
        self,
        conn: Connection,
        owner: str,
        key: str,
        request_hash: str,
        status_code: int,
        body: Any,
        location: str | None,
    ) -> None:
        """Record the response to (owner, key) in the caller's transaction; a concurrent
        request with the same key makes one of the two fail with IntegrityError."""
        conn.execute(
            _INSERT_IDEM,
            {
                "owner": owner,
                "key": key,
                "request_hash": request_hash,
                "status_code": status_code,
                "body": body,
                "location": location,
                "created_at": time.time(),
            },
        )


def _alembic_config(conn: Connection):
    """Alembic settings that run the migrations in ``conn`` (the caller's transaction)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["connection"] = conn
    return cfg


def _sqlite_setup(engine: Engine) -> None:
    """WAL, NORMAL sync, busy timeout; we emit BEGIN ourselves (IMMEDIATE for writers)."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
