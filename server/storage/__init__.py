"""Storage and queue: the SQLAlchemy tables, the store (SQLite or PostgreSQL), the job
queue (claims and leases), and the Alembic migrations."""
