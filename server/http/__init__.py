"""The HTTP side of the service: routes (``server.http.routes``, assembled in ``server.http.api``)
and the plumbing around them (auth, dependencies, problem+json, pagination, body limits,
idempotency, allowed methods, OpenAPI, downloads, metrics, row -> wire conversion)."""
