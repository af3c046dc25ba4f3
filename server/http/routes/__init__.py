"""One module per REST resource, each with its own ``router``; ``server.http.api`` assembles them.

Each resource router carries the ``/v1`` prefix itself, rather than getting it at
``include_router``: since FastAPI 0.16x an included route keeps its own path, and the request
metrics label requests by that path (``/v1/jobs/{job_id}``, not ``/jobs/{job_id}``).
"""

V1 = "/v1"
