"""HTTP plumbing of the REST API: the routers per resource (``routes/``), authentication,
dependencies, problem+json errors, pagination, idempotency, body limits, OpenAPI, files,
metrics. ``router.api_router`` collects the resource routers."""
