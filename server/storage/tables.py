"""The database schema (SQLAlchemy Core tables) shared by the store and the job queue.

Storage rows, not API schemas: routes convert rows to ``boltzgen.schemas`` models
(``server.http.convert``), so columns can change without changing the wire format.
"""

from __future__ import annotations

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
)

ACTIVE = ("queued", "running")
TERMINAL = ("succeeded", "failed", "cancelled")
STATUSES = ACTIVE + TERMINAL

metadata = MetaData()


def _owned_resource() -> list[Column]:
    """The first columns of a resource a key owns: ``seq`` (keyset paging, newest first),
    the public ``id`` and the ``owner`` key (``server.storage.store.owned``)."""
    return [
        Column("seq", Integer, primary_key=True, autoincrement=True),
        Column("id", String(40), nullable=False, unique=True),
        Column("owner", String(40), nullable=False),
    ]


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
    *_owned_resource(),
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
    *_owned_resource(),
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
    *_owned_resource(),
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
    *_owned_resource(),
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
