"""The job queue: the workers' side of the jobs table.

Workers claim jobs atomically -- ``UPDATE ... WHERE status='queued'`` on SQLite (one writer at a
time, ``BEGIN IMMEDIATE``), ``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL (several hosts)
-- and hold a lease they renew by heartbeat. The claim increments ``attempts``, which doubles as
a fencing token: a worker whose lease expired and whose job was claimed again can no longer
record progress, complete or fail it. Jobs whose lease expired (their worker died) are requeued
with backoff until ``max_attempts``. Kept apart from ``server.storage.store`` (the API side) because
this is the part whose correctness rests on the locking and fencing above; it shares the store's
engine and write transactions.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.engine import Connection

from server.storage.store import Store, append_event, as_dict, new_id
from server.storage.tables import artifacts, jobs, models


def claim_statement(worker: str, lease_seconds: float, now: float, *, skip_locked: bool):
    """``UPDATE jobs SET status='running' ... WHERE seq = (oldest runnable queued job) AND
    status='queued' RETURNING *``; with ``skip_locked`` (PostgreSQL) the subquery locks ``FOR
    UPDATE SKIP LOCKED``, so concurrent workers on several hosts each take a different job."""
    pick = (
        select(jobs.c.seq)
        .where(jobs.c.status == "queued", jobs.c.run_after <= now)
        .order_by(jobs.c.seq)
        .limit(1)
    )
    if skip_locked:
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


def _fenced(job_id: str, worker: str, attempt: int):
    """The row of ``job_id`` only while ``worker`` still holds attempt ``attempt`` of it."""
    return and_(
        jobs.c.id == job_id,
        jobs.c.status == "running",
        jobs.c.lease_owner == worker,
        jobs.c.attempts == attempt,
    )


class JobQueue:
    """Claims, leases, heartbeats, progress, outcomes and expiry of jobs in ``store``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.skip_locked = not store.is_sqlite

    def claim(self, worker: str, lease_seconds: float) -> dict[str, Any] | None:
        """Atomically take the oldest runnable queued job, or None."""
        stmt = claim_statement(worker, lease_seconds, time.time(), skip_locked=self.skip_locked)
        with self.store.transaction() as conn:
            r = conn.execute(stmt).first()
            if r is None:
                return None
            job = dict(r._mapping)
            append_event(
                conn,
                job["id"],
                "status",
                {"status": "running", "attempts": job["attempts"], "worker": worker},
            )
            return job

    def heartbeat(self, worker: str, job_ids: Sequence[str], lease_seconds: float) -> set[str]:
        """Renew the leases of ``job_ids`` held by ``worker``; returns the ids still held."""
        if not job_ids:
            return set()
        now = time.time()
        with self.store.transaction() as conn:
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
        """Which of ``job_ids`` have a cancel request (their worker kills them)."""
        if not job_ids:
            return set()
        with self.store.read() as conn:
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
        with self.store.transaction() as conn:
            n = conn.execute(
                update(jobs)
                .where(_fenced(job_id, worker, attempt))
                .values(progress=updates[-1][0], message=updates[-1][1], updated_at=now)
            ).rowcount
            if n:
                for frac, msg in updates:
                    append_event(conn, job_id, "progress", {"progress": frac, "message": msg})

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
        with self.store.transaction() as conn:
            job = as_dict(
                conn.execute(select(jobs).where(_fenced(job_id, worker, attempt))).first()
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
            append_event(conn, job_id, "status", {"status": "succeeded", "result": result})
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
        with self.store.transaction(conn) as c:
            if worker is None:
                cond = and_(
                    jobs.c.id == job_id, jobs.c.status == "running", jobs.c.lease_expires_at < now
                )
            else:
                cond = _fenced(job_id, worker, attempt or 0)
            job = as_dict(c.execute(select(jobs).where(cond)).first())
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
            append_event(
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
        with self.store.transaction() as conn:
            n = conn.execute(
                update(jobs)
                .where(_fenced(job_id, worker, attempt), ~jobs.c.cancel_requested)
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
                append_event(conn, job_id, "status", {"status": "queued", "released": True})
            return n == 1

    def reap_expired(self, backoff: float) -> dict[str, str]:
        """Jobs whose lease expired (their worker died): requeue, fail or cancel them."""
        now = time.time()
        with self.store.read() as conn:
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
