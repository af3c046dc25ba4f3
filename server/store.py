"""The job store: SQLAlchemy Core over SQLite (WAL, the embedded default) or PostgreSQL.

Every state change of a job is one transaction that also appends to ``job_events`` (the SSE
stream reads that table). Workers claim jobs atomically -- ``UPDATE ... WHERE status='queued'``
on SQLite (one writer at a time, ``BEGIN IMMEDIATE``), ``SELECT ... FOR UPDATE SKIP LOCKED`` on
PostgreSQL (several hosts) -- and hold a lease they renew by heartbeat. The claim increments
``attempts``, which doubles as a fencing token: a worker whose lease expired and whose job was
claimed again can no longer complete or fail it.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine

ACTIVE = ("queued", "running")
TERMINAL = ("succeeded", "failed", "cancelled")
STATUSES = ACTIVE + TERMINAL

metadata = MetaData()

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("name", String(200), nullable=False, default=""),
    Column("created_at", Float, nullable=False),
    Column("revoked", Boolean, nullable=False, default=False),
)

systems = Table(
    "systems",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),
    Column("owner", String(40), nullable=False),
    Column("name", String(200), nullable=False),
    Column("n_atoms", Integer, nullable=False),
    Column("solvent", String(40), nullable=False),
    Column("temperature", Float, nullable=False),
    Column("forcefield", JSON, nullable=False),
    Column("spec", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_systems_owner_seq", "owner", "seq"),
)

models = Table(
    "models",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),
    Column("owner", String(40), nullable=False),
    Column("system_id", String(40)),
    Column("job_id", String(40)),
    Column("name", String(200), nullable=False),
    Column("path", Text, nullable=False),
    Column("size", Integer, nullable=False),
    Column("summary", JSON),
    Column("created_at", Float, nullable=False),
    Index("ix_models_owner_seq", "owner", "seq"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),
    Column("owner", String(40), nullable=False),
    Column("kind", String(60), nullable=False),
    Column("status", String(16), nullable=False),
    Column("system_id", String(40)),
    Column("model_id", String(40)),
    Column("params", JSON, nullable=False),
    Column("client_params", JSON),
    Column("progress", Float, nullable=False, default=0.0),
    Column("message", Text, nullable=False, default=""),
    Column("attempts", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("run_after", Float, nullable=False),
    Column("lease_owner", String(80)),
    Column("lease_expires_at", Float),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("result", JSON),
    Column("error", JSON),
    Column("last_error", JSON),
    Index("ix_jobs_queue", "status", "run_after", "seq"),
    Index("ix_jobs_owner_seq", "owner", "seq"),
    Index("ix_jobs_owner_status", "owner", "status"),
    Index("ix_jobs_lease", "status", "lease_expires_at"),
)

job_events = Table(
    "job_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(40), nullable=False),
    Column("ts", Float, nullable=False),
    Column("type", String(20), nullable=False),
    Column("data", JSON, nullable=False),
    Index("ix_job_events_job", "job_id", "id"),
)

artifacts = Table(
    "artifacts",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),
    Column("owner", String(40), nullable=False),
    Column("job_id", String(40), nullable=False),
    Column("name", String(300), nullable=False),
    Column("path", Text, nullable=False),
    Column("size", Integer, nullable=False),
    Column("media_type", String(100), nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_artifacts_job", "job_id", "seq"),
)

idempotency = Table(
    "idempotency_keys",
    metadata,
    Column("owner", String(40), primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("status_code", Integer),
    Column("body", JSON),
    Column("location", Text),
    Column("created_at", Float, nullable=False),
)


# hot-path statements built once; values travel as bound parameters (no per-call compilation)
_INSERT_JOB = insert(jobs)
_INSERT_EVENT = insert(job_events)
_INSERT_IDEM = insert(idempotency)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


def hash_key(key: str) -> str:
    """sha256 hex of an API key (keys are 256-bit random, so no salt/KDF is needed)."""
    return hashlib.sha256(key.encode()).hexdigest()


def _row(r: Any) -> dict[str, Any] | None:
    return None if r is None else dict(r._mapping)


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
        """Create missing tables. Several processes may start at once (server + workers):
        on PostgreSQL an advisory lock serialises them, on SQLite BEGIN IMMEDIATE does."""
        with self._tx() as conn:
            if self.is_postgres:
                conn.execute(text("SELECT pg_advisory_xact_lock(7262011)"))
            metadata.create_all(conn)

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        """A write transaction (BEGIN IMMEDIATE on SQLite: no lock-upgrade deadlocks)."""
        if self._write_lock is None:
            with self._writer.begin() as conn:
                yield conn
            return
        with self._write_lock, self._writer.begin() as conn:
            yield conn

    def transaction(self) -> contextlib.AbstractContextManager[Connection]:
        """A write transaction for callers that combine several steps atomically."""
        return self._tx()

    @contextmanager
    def _ro(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    def ping(self) -> bool:
        with self._ro() as conn:
            return conn.execute(select(1)).scalar() == 1

    @staticmethod
    def _owned(table: Table, owner: str | None):
        return table.c.owner == owner if owner is not None else True

    # ------------------------------------------------------------ API keys
    def create_key(self, name: str) -> tuple[str, str]:
        """A new API key: returns (key id, plaintext key). Only the hash is stored."""
        key_id = new_id("key")
        key = "bgk_" + secrets.token_urlsafe(32)
        with self._tx() as conn:
            conn.execute(
                insert(api_keys).values(
                    id=key_id, key_hash=hash_key(key), name=name, created_at=time.time()
                )
            )
        return key_id, key

    def lookup_key(self, key: str) -> str | None:
        """The key id of a valid (not revoked) plaintext key, else None."""
        digest = hash_key(key)
        with self._ro() as conn:
            r = conn.execute(
                select(api_keys.c.id, api_keys.c.key_hash, api_keys.c.revoked).where(
                    api_keys.c.key_hash == digest
                )
            ).first()
        if r is None or r.revoked or not hmac.compare_digest(r.key_hash, digest):
            return None
        return r.id

    def list_keys(self) -> list[dict[str, Any]]:
        with self._ro() as conn:
            rows = conn.execute(
                select(api_keys.c.id, api_keys.c.name, api_keys.c.created_at, api_keys.c.revoked)
            ).all()
        return [dict(r._mapping) for r in rows]

    def revoke_key(self, key_id: str) -> bool:
        with self._tx() as conn:
            n = conn.execute(
                update(api_keys).where(api_keys.c.id == key_id).values(revoked=True)
            ).rowcount
        return n == 1

    # ------------------------------------------------------------ pagination helper
    def _page(
        self, conn: Connection, table: Table, where: Any, cursor: int | None, limit: int
    ) -> tuple[list[dict[str, Any]], int | None]:
        q = select(table).where(where)
        if cursor is not None:
            q = q.where(table.c.seq < cursor)
        rows = conn.execute(q.order_by(table.c.seq.desc()).limit(limit + 1)).all()
        items = [dict(r._mapping) for r in rows[:limit]]
        nxt = items[-1]["seq"] if len(rows) > limit else None
        return items, nxt

    # ------------------------------------------------------------ systems
    def add_system(
        self, owner: str, conn: Connection | None = None, **fields: Any
    ) -> dict[str, Any]:
        row = {"id": new_id("sys"), "owner": owner, "created_at": time.time(), **fields}
        with self._maybe_tx(conn) as c:
            c.execute(insert(systems).values(**row))
        return row

    def _one(self, q: Any, conn: Connection | None) -> dict[str, Any] | None:
        if conn is not None:
            return _row(conn.execute(q).first())
        with self._ro() as c:
            return _row(c.execute(q).first())

    def get_system(
        self, system_id: str, owner: str | None, conn: Connection | None = None
    ) -> dict[str, Any] | None:
        q = select(systems).where(systems.c.id == system_id, self._owned(systems, owner))
        return self._one(q, conn)

    def list_systems(self, owner: str | None, cursor: int | None, limit: int):
        with self._ro() as conn:
            return self._page(conn, systems, self._owned(systems, owner), cursor, limit)

    def delete_system(self, system_id: str, owner: str | None) -> bool:
        with self._tx() as conn:
            return (
                conn.execute(
                    delete(systems).where(systems.c.id == system_id, self._owned(systems, owner))
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
        with self._maybe_tx(conn) as c:
            c.execute(_INSERT_JOB, row)
            self._event(c, row["id"], "status", {"status": "queued", "attempts": 0})
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

    @contextmanager
    def _maybe_tx(self, conn: Connection | None) -> Iterator[Connection]:
        if conn is not None:
            yield conn
        else:
            with self._tx() as c:
                yield c

    def get_job(
        self, job_id: str, owner: str | None, conn: Connection | None = None
    ) -> dict[str, Any] | None:
        q = select(jobs).where(jobs.c.id == job_id, self._owned(jobs, owner))
        if conn is not None:
            return _row(conn.execute(q).first())
        with self._ro() as c:
            return _row(c.execute(q).first())

    def list_jobs(
        self,
        owner: str | None,
        *,
        statuses: Sequence[str] = (),
        kind: str | None = None,
        cursor: int | None = None,
        limit: int = 50,
    ):
        where = [self._owned(jobs, owner)]
        if statuses:
            where.append(jobs.c.status.in_(list(statuses)))
        if kind:
            where.append(jobs.c.kind == kind)
        with self._ro() as conn:
            return self._page(conn, jobs, and_(*where), cursor, limit)

    def count_active(
        self, owner: str, conn: Connection | None = None, at_most: int | None = None
    ) -> int:
        """Queued + running jobs of ``owner`` (counting stops at ``at_most``)."""
        inner = select(jobs.c.seq).where(jobs.c.owner == owner, jobs.c.status.in_(ACTIVE))
        if at_most is not None:
            inner = inner.limit(at_most)
        q = select(func.count()).select_from(inner.subquery())
        if conn is not None:
            return conn.execute(q).scalar_one()
        with self._ro() as c:
            return c.execute(q).scalar_one()

    def count_by_status(self) -> dict[str, int]:
        with self._ro() as conn:
            rows = conn.execute(select(jobs.c.status, func.count()).group_by(jobs.c.status)).all()
        return {s: 0 for s in STATUSES} | {r[0]: r[1] for r in rows}

    def request_cancel(self, job_id: str, owner: str | None) -> dict[str, Any] | None:
        """Cancel: a queued job is cancelled at once, a running one is flagged for its worker."""
        now = time.time()
        with self._tx() as conn:
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
                self._event(conn, job_id, "status", {"status": "cancelled"})
            elif job["status"] == "running" and not job["cancel_requested"]:
                conn.execute(
                    update(jobs)
                    .where(jobs.c.id == job_id)
                    .values(cancel_requested=True, updated_at=now)
                )
                self._event(conn, job_id, "cancel_requested", {"status": "running"})
            return self.get_job(job_id, owner, conn=conn)

    def delete_job(self, job_id: str, owner: str | None) -> list[str] | None:
        """Delete a terminal job, its events and artifact rows. Returns artifact paths (to
        remove), None if absent; raises ValueError if the job is still active."""
        with self._tx() as conn:
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
    @staticmethod
    def _event(conn: Connection, job_id: str, type_: str, data: dict[str, Any]) -> None:
        conn.execute(
            _INSERT_EVENT, {"job_id": job_id, "ts": time.time(), "type": type_, "data": data}
        )

    def events_after(self, job_id: str, after_id: int, limit: int = 500) -> list[dict[str, Any]]:
        with self._ro() as conn:
            rows = conn.execute(
                select(job_events)
                .where(job_events.c.job_id == job_id, job_events.c.id > after_id)
                .order_by(job_events.c.id)
                .limit(limit)
            ).all()
        return [dict(r._mapping) for r in rows]

    # ------------------------------------------------------------ queue (worker side)
    def claim_statement(self, worker: str, lease_seconds: float, now: float):
        """``UPDATE jobs SET status='running' ... WHERE seq = (oldest runnable queued job)
        AND status='queued' RETURNING *``; the subquery locks ``FOR UPDATE SKIP LOCKED`` on
        PostgreSQL, so concurrent workers on several hosts each take a different job."""
        pick = (
            select(jobs.c.seq)
            .where(jobs.c.status == "queued", jobs.c.run_after <= now)
            .order_by(jobs.c.seq)
            .limit(1)
        )
        if not self.is_sqlite:
            pick = pick.with_for_update(skip_locked=True)
        return (
            update(jobs)
            .where(jobs.c.seq == pick.scalar_subquery(), jobs.c.status == "queued")
            .values(
                status="running",
                lease_owner=worker,
                lease_expires_at=now + lease_seconds,
                attempts=jobs.c.attempts + 1,
                started_at=func.coalesce(jobs.c.started_at, now),
                updated_at=now,
            )
            .returning(*jobs.c)
        )

    def claim(self, worker: str, lease_seconds: float) -> dict[str, Any] | None:
        """Atomically take the oldest runnable queued job, or None."""
        stmt = self.claim_statement(worker, lease_seconds, time.time())
        with self._tx() as conn:
            r = conn.execute(stmt).first()
            if r is None:
                return None
            job = dict(r._mapping)
            self._event(
                conn,
                job["id"],
                "status",
                {"status": "running", "attempts": job["attempts"], "worker": worker},
            )
            return job

    def _fenced(self, job_id: str, worker: str, attempt: int):
        return and_(
            jobs.c.id == job_id,
            jobs.c.status == "running",
            jobs.c.lease_owner == worker,
            jobs.c.attempts == attempt,
        )

    def heartbeat(self, worker: str, job_ids: Sequence[str], lease_seconds: float) -> set[str]:
        """Renew the leases of ``job_ids`` held by ``worker``; returns the ids still held."""
        if not job_ids:
            return set()
        now = time.time()
        with self._tx() as conn:
            conn.execute(
                update(jobs)
                .where(
                    jobs.c.id.in_(list(job_ids)),
                    jobs.c.status == "running",
                    jobs.c.lease_owner == worker,
                )
                .values(lease_expires_at=now + lease_seconds)
            )
            rows = conn.execute(
                select(jobs.c.id).where(
                    jobs.c.id.in_(list(job_ids)),
                    jobs.c.status == "running",
                    jobs.c.lease_owner == worker,
                )
            ).all()
        return {r.id for r in rows}

    def cancel_flags(self, job_ids: Sequence[str]) -> set[str]:
        if not job_ids:
            return set()
        with self._ro() as conn:
            rows = conn.execute(
                select(jobs.c.id).where(jobs.c.id.in_(list(job_ids)), jobs.c.cancel_requested)
            ).all()
        return {r.id for r in rows}

    def record_progress(
        self, job_id: str, worker: str, attempt: int, updates: Sequence[tuple[float, str]]
    ) -> None:
        if not updates:
            return
        now = time.time()
        with self._tx() as conn:
            n = conn.execute(
                update(jobs)
                .where(self._fenced(job_id, worker, attempt))
                .values(progress=updates[-1][0], message=updates[-1][1], updated_at=now)
            ).rowcount
            if n:
                for frac, msg in updates:
                    self._event(conn, job_id, "progress", {"progress": frac, "message": msg})

    def complete(
        self,
        job_id: str,
        worker: str,
        attempt: int,
        result: dict[str, Any],
        files: Sequence[dict[str, Any]],
        model: dict[str, Any] | None = None,
    ) -> bool:
        """Mark succeeded, register artifact rows (``files``) and optionally a model."""
        now = time.time()
        with self._tx() as conn:
            job = _row(
                conn.execute(select(jobs).where(self._fenced(job_id, worker, attempt))).first()
            )
            if job is None:
                return False
            for f in files:
                conn.execute(
                    insert(artifacts).values(
                        id=new_id("art"), owner=job["owner"], job_id=job_id, created_at=now, **f
                    )
                )
            if model is not None:
                model_id = new_id("mdl")
                conn.execute(
                    insert(models).values(
                        id=model_id,
                        owner=job["owner"],
                        system_id=job["system_id"],
                        job_id=job_id,
                        created_at=now,
                        **model,
                    )
                )
                result = {**result, "model_id": model_id}
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .values(
                    status="succeeded",
                    progress=1.0,
                    result=result,
                    error=None,
                    finished_at=now,
                    updated_at=now,
                    lease_owner=None,
                    lease_expires_at=None,
                )
            )
            self._event(conn, job_id, "status", {"status": "succeeded", "result": result})
            return True

    def finish_attempt(
        self,
        job_id: str,
        worker: str | None,
        attempt: int | None,
        error: dict[str, Any],
        *,
        retryable: bool,
        backoff: float,
        conn: Connection | None = None,
    ) -> str | None:
        """End a failed/crashed/cancelled attempt: cancelled if cancel was requested, queued
        again (after ``backoff`` s, resuming from its checkpoint) if retryable and attempts
        remain, else failed. ``worker=None`` (the reaper) only fences on the expired lease."""
        now = time.time()
        with self._maybe_tx(conn) as c:
            if worker is None:
                cond = and_(
                    jobs.c.id == job_id, jobs.c.status == "running", jobs.c.lease_expires_at < now
                )
            else:
                cond = self._fenced(job_id, worker, attempt or 0)
            job = _row(c.execute(select(jobs).where(cond)).first())
            if job is None:
                return None
            if job["cancel_requested"]:
                status, values = "cancelled", {"error": None}
            elif retryable and job["attempts"] < job["max_attempts"]:
                status, values = "queued", {"run_after": now + backoff * job["attempts"]}
            else:
                status, values = "failed", {"error": error}
            if status != "queued":
                values["finished_at"] = now
            c.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .values(
                    status=status,
                    last_error=error,
                    updated_at=now,
                    lease_owner=None,
                    lease_expires_at=None,
                    **values,
                )
            )
            self._event(
                c,
                job_id,
                "status",
                {"status": status, "attempts": job["attempts"], "error": error},
            )
            return status

    def release(self, job_id: str, worker: str, attempt: int) -> bool:
        """Put a running job back in the queue without counting the attempt (its worker is
        shutting down: not the job's fault). It resumes from its checkpoint."""
        now = time.time()
        with self._tx() as conn:
            n = conn.execute(
                update(jobs)
                .where(self._fenced(job_id, worker, attempt), ~jobs.c.cancel_requested)
                .values(
                    status="queued",
                    attempts=jobs.c.attempts - 1,
                    run_after=now,
                    updated_at=now,
                    lease_owner=None,
                    lease_expires_at=None,
                )
            ).rowcount
            if n:
                self._event(conn, job_id, "status", {"status": "queued", "released": True})
            return n == 1

    def reap_expired(self, backoff: float) -> dict[str, str]:
        """Jobs whose lease expired (their worker died): requeue, fail or cancel them."""
        now = time.time()
        with self._ro() as conn:
            ids = [
                r.id
                for r in conn.execute(
                    select(jobs.c.id).where(
                        jobs.c.status == "running", jobs.c.lease_expires_at < now
                    )
                ).all()
            ]
        out = {}
        for job_id in ids:
            err = {"type": "LeaseExpired", "message": "the worker stopped heartbeating"}
            status = self.finish_attempt(job_id, None, None, err, retryable=True, backoff=backoff)
            if status:
                out[job_id] = status
        return out

    # ------------------------------------------------------------ artifacts and models
    def list_artifacts(self, job_id: str, owner: str | None) -> list[dict[str, Any]]:
        with self._ro() as conn:
            rows = conn.execute(
                select(artifacts)
                .where(artifacts.c.job_id == job_id, self._owned(artifacts, owner))
                .order_by(artifacts.c.seq)
            ).all()
        return [dict(r._mapping) for r in rows]

    def get_artifact(
        self, artifact_id: str, owner: str | None, conn: Connection | None = None
    ) -> dict[str, Any] | None:
        q = select(artifacts).where(artifacts.c.id == artifact_id, self._owned(artifacts, owner))
        return self._one(q, conn)

    def get_model(
        self, model_id: str, owner: str | None, conn: Connection | None = None
    ) -> dict[str, Any] | None:
        q = select(models).where(models.c.id == model_id, self._owned(models, owner))
        return self._one(q, conn)

    def list_models(self, owner: str | None, cursor: int | None, limit: int):
        with self._ro() as conn:
            return self._page(conn, models, self._owned(models, owner), cursor, limit)

    def delete_model(self, model_id: str, owner: str | None) -> str | None:
        with self._tx() as conn:
            m = _row(
                conn.execute(
                    select(models).where(models.c.id == model_id, self._owned(models, owner))
                ).first()
            )
            if m is None:
                return None
            conn.execute(delete(models).where(models.c.id == model_id))
            return m["path"]

    # ------------------------------------------------------------ idempotency
    def idem_get(
        self, owner: str, key: str, conn: Connection | None = None
    ) -> dict[str, Any] | None:
        q = select(idempotency).where(idempotency.c.owner == owner, idempotency.c.key == key)
        if conn is not None:
            return _row(conn.execute(q).first())
        with self._ro() as c:
            return _row(c.execute(q).first())

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
