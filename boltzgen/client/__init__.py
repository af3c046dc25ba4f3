"""Python SDK of the boltzgen REST service (httpx; no server code needed).

    from boltzgen.client import Client
    with Client("http://127.0.0.1:8000", api_key="bgk_...") as c:
        system = c.upload_system("data/alanine-dipeptide.pdb", solvent="vacuum")
        job = c.submit("simulate", system_id=system.id, params={"n_steps": 10_000})
        job = c.wait(job.id, progress=True)            # tqdm bar; raises JobFailedError
        traj = c.load_trajectory(job.id, "trajectory.h5")   # mdtraj.Trajectory

Every POST carries an ``Idempotency-Key`` (a fresh UUID unless you pass one), so the client
can retry safely: 429 and 503 are retried after the server's ``Retry-After``, connection
errors with exponential backoff, up to ``max_retries`` times and at most ``max_wait`` seconds
of waiting in all (each 429/503 wait is logged as a warning on the ``boltzgen.client`` logger,
connection retries at INFO); past
that a 429/503 raises ``RateLimitedError``. Errors raise ``ApiError`` with the RFC 9457 problem
document. ``AsyncClient`` has the same methods as coroutines.

Modules: ``errors``, ``retries`` (the retry policy), ``wire`` (bodies, headers, SSE), ``calls``
(every API call as data: request and how its answer is read, shared by both clients), ``sync``
(``Client``), ``aio`` (``AsyncClient``).
"""

from __future__ import annotations

import inspect
from typing import Any

from boltzgen.client.aio import AsyncClient
from boltzgen.client.errors import ApiError, JobFailedError, RateLimitedError
from boltzgen.client.retries import DEFAULT_MAX_WAIT, RETRY_STATUSES
from boltzgen.client.sync import Client
from boltzgen.client.wire import DEFAULT_URL, parse_sse
from boltzgen.schemas import ArtifactInfo, JobInfo, ModelInfo, SystemInfo

__all__ = [
    "DEFAULT_MAX_WAIT",
    "DEFAULT_URL",
    "RETRY_STATUSES",
    "ApiError",
    "ArtifactInfo",
    "AsyncClient",
    "Client",
    "JobFailedError",
    "JobInfo",
    "ModelInfo",
    "RateLimitedError",
    "SystemInfo",
    "parse_sse",
    "public_methods",
]


def public_methods(cls: type) -> dict[str, Any]:
    """The public methods of a client class (name -> function)."""
    return {
        name: fn
        for name in dir(cls)
        if not name.startswith("_") and inspect.isfunction(fn := getattr(cls, name))
    }
